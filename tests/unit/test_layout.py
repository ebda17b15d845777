"""The package's architecture holds: docstrings, __all__, size, one place for dataset layouts,
and every short name of the lazy map resolves."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import clap_helpers as ch
from clap_helpers.data.registry import RECORDS

PACKAGE = Path(ch.__file__).parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")
MAX_LINES = 650


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_says_what_it_owns_and_exports(path):
    tree = _tree(path)
    doc = ast.get_docstring(tree)
    assert doc and len(doc.split()) >= 8, f"{path}: needs a docstring saying what it owns"
    assert any(
        isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in n.targets)
        for n in tree.body
    ), f"{path}: no __all__"
    module = importlib.import_module(_module_name(path))
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{path}: __all__ names {missing} that do not exist"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_too_long(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path} has {n} lines: split it by concept"


def _string_constants(tree: ast.Module) -> list[str]:
    """String constants of the code, docstrings left out."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    ]


def test_dataset_layouts_are_written_in_the_registry_only():
    names = {"manifest.csv"}  # folder and file names; a folder named like its dataset is a name
    for rec in RECORDS.values():
        names |= {rec.folder, rec.metadata_file, *rec.audio_folders}
        names |= {a.filename for a in rec.archives} | {a.key_file for a in rec.archives}
        names |= {rec.metadata_folder} if rec.metadata_folder else set()
        names |= {rec.metadata_file.rsplit("/", 1)[-1]}
    names -= set(RECORDS)
    offenders = []
    for path in MODULES:
        if path.name == "registry.py":
            continue
        for text in _string_constants(_tree(path)):
            hits = [n for n in names if n in text and len(n) > 4]
            if hits:
                offenders.append(f"{path.relative_to(PACKAGE)}: {text!r} names {hits}")
    assert not offenders, "dataset layout outside the registry:\n" + "\n".join(offenders)


def test_registry_records_agree_with_themselves():
    for rec in RECORDS.values():
        assert all(a.folder in (rec.folder, rec.metadata_folder) for a in rec.archives), rec.name
        assert all(f.split("/")[0] == rec.folder for f in rec.audio_folders), rec.name


def test_every_short_name_resolves_and_is_visible_to_editors():
    for name in ch.MODULES:
        assert getattr(ch, name) is not None, name
    for name in ch.NAMES:
        assert callable(getattr(ch, name)) or isinstance(getattr(ch, name), type)
    tree = _tree(PACKAGE / "__init__.py")
    block = next(n for n in tree.body if isinstance(n, ast.If))  # if TYPE_CHECKING:
    imported = {
        alias.asname or alias.name
        for node in ast.walk(block)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    old_names = {"soundscape", "embedding_sim", "cnn"}  # kept for older code, not advertised
    assert set(ch.MODULES) - old_names - imported == set()
    assert set(ch.NAMES) <= imported
    with pytest.raises(AttributeError, match="no attribute"):
        ch.no_such_module  # noqa: B018


def test_the_subpackages_follow_the_pipeline():
    found = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert found == {"data", "embedding", "evaluation", "supervised", "plots", "apps", "devtools"}
