"""The recipes the package ships (tests register toy recipes of their own in the same registry)."""

from __future__ import annotations

from videolang.engine import get_recipe, list_recipes


def packaged_recipes() -> list[str]:
    """Names of the recipes of ``videolang.recipes``, sorted."""
    return sorted(name for name in list_recipes()
                  if get_recipe(name).module_cls.__module__.startswith("videolang.recipes."))
