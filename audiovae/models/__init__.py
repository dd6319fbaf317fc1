"""Model families, registered by name; `build_model` is the one place a recipe becomes a network.

A family is one module with a `FAMILY` entry (audiovae.models.base.Family: config dataclass, builder,
recipe checks, input representation) and one line below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from audiovae.models import conv, dense, mel
from audiovae.models.base import VAE, Family, LabelledVAE, Posterior, VAEOutput

if TYPE_CHECKING:
    from audiovae.config.recipe import Recipe

# family name -> registry entry
FAMILIES: dict[str, Family] = {family.name: family for family in (conv.FAMILY, mel.FAMILY, dense.FAMILY)}


def register(family: Family) -> Family:
    """Add a family (e.g. from a plug-in or a test); recipes can name it from then on."""
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    """The registry entry of a family name (recipes check the name when they are read)."""
    return FAMILIES[name]


def build_model(recipe: Recipe) -> VAE:
    """The network a recipe describes, freshly initialized."""
    return FAMILIES[recipe.model.family].build(recipe)




def fold_weight_norm(net: VAE) -> VAE:
    """Replace weight-norm parametrizations by the plain weights they compute: same outputs, less work."""
    from torch.nn.utils import parametrize

    for module in net.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return net


def trained_vae(recipe: Recipe, weights: dict) -> VAE:
    """The network `recipe` describes with trained `weights` (a checkpoint's `ema`, else `model`), ready for
    inference: weight norm folded, eval mode, on the CPU. Raises what load_state_dict raises on a misfit."""
    net = build_model(recipe)
    net.load_state_dict(weights)
    return fold_weight_norm(net).eval()


__all__ = ["FAMILIES", "VAE", "Family", "LabelledVAE", "Posterior", "VAEOutput", "build_model", "fold_weight_norm", "get_family",
           "register", "trained_vae"]
