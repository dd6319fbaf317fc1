"""Model families, registered by name; `build_model` is the one place a recipe becomes a network.

A family is one module with a `FAMILY` entry (audiovae.models.base.Family: config dataclass, builder,
recipe checks, input representation) and one line below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from audiovae.models import conv, dense, mel
from audiovae.models.base import VAE, Family, Posterior, VAEOutput

if TYPE_CHECKING:
    from audiovae.config import Recipe

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


__all__ = ["FAMILIES", "VAE", "Family", "Posterior", "VAEOutput", "build_model", "get_family", "register"]
