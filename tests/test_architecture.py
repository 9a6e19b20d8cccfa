"""The layers import one way (docs/architecture.md): data/ is plain torch, the model, loss and
metric libraries never need Lightning, and nothing below a layer imports it. Checked on the
source (every ``import``, also inside functions), so a lazy import cannot hide a wrong arrow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "videolang"
LIGHTNING = ("lightning", "pytorch_lightning")
ABOVE_DATA = tuple(f"videolang.{p}" for p in ("models", "losses", "engine", "recipes", "pipelines", "search",
                                               "cli", "synth"))
FORBIDDEN = {
    "data": (*ABOVE_DATA, *LIGHTNING),
    "models": ("videolang.engine", "videolang.recipes", "videolang.pipelines", "videolang.search", "videolang.cli",
               "videolang.synth", *LIGHTNING),
    "losses": ("videolang.data", "videolang.engine", "videolang.recipes", "videolang.pipelines", "videolang.cli",
               *LIGHTNING),
    "metrics": ("videolang.data", "videolang.models", "videolang.engine", "videolang.recipes",
                "videolang.pipelines", "videolang.cli", *LIGHTNING),
    "pipelines": ("videolang.engine", "videolang.recipes", "videolang.search", "videolang.cli", *LIGHTNING),
    "search": ("videolang.recipes", "videolang.cli", *LIGHTNING),
    "synth": ("videolang.models", "videolang.engine", "videolang.recipes", "videolang.pipelines", "videolang.cli",
              *LIGHTNING),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute import in a file, ``from a import b`` as ``a.b``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_run_one_way(layer):
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, f"no package videolang.{layer}"
    wrong = {f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
             for path in files for line, module in imported_modules(path)
             for prefix in FORBIDDEN[layer] if _matches(module, prefix)}
    assert not wrong, "\n".join(sorted(wrong))


def test_the_checker_sees_lazy_and_from_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from videolang.models import registry\n    import lightning.pytorch as pl\n")
    modules = [m for _, m in imported_modules(source)]
    assert "videolang.models.registry" in modules and "lightning.pytorch" in modules


def test_recipes_are_thin():
    """A recipe file is the LightningModules of one method (model, loss, metrics): data code lives
    in data/, and no recipe file grows past 300 lines."""
    lengths = {path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
               for path in (PACKAGE / "recipes").rglob("*.py")}
    assert lengths and not {path: n for path, n in lengths.items() if n >= 300}


def test_every_recipe_is_served_by_the_engines_one_datamodule():
    from tests.packaged import packaged_recipes

    from videolang.data.splits import DataSplits
    from videolang.engine import get_recipe

    packaged = [get_recipe(name) for name in packaged_recipes()]
    assert len(packaged) >= 20
    own = [r.name for r in packaged if not issubclass(r.datamodule_cls, DataSplits)]
    assert not own, f"recipes with a DataModule of their own: {own}"
