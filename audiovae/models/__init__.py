"""Model families, registered by name; `build_model` is the one place a recipe becomes a network."""

from __future__ import annotations

from collections.abc import Callable

from audiovae.config import Recipe
from audiovae.models.base import VAE, Posterior, VAEOutput
from audiovae.models.conv import build_conv, build_mel
from audiovae.models.dense import build_dense

# family name -> builder(recipe) -> VAE
FAMILIES: dict[str, Callable[[Recipe], VAE]] = {
    "conv": lambda recipe: build_conv(recipe.model),
    "mel": lambda recipe: build_mel(recipe.model, recipe.data.mel.n_mels),
    "dense": lambda recipe: build_dense(recipe.model, recipe.data.segment_samples),
}


def build_model(recipe: Recipe) -> VAE:
    """The network a recipe describes, freshly initialized."""
    return FAMILIES[recipe.model.family](recipe)


__all__ = ["FAMILIES", "VAE", "Posterior", "VAEOutput", "build_model"]
