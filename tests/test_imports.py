"""The package import graph goes one way (read from every module's source with ast):

    bundle_contract  <-  model_registry  <-  packager (only the CLI, serve, demo and site)
    bundle_contract  <-  packager  ->  quantization  ->  bundle_contract (its UserError)

bundle_contract imports no package of ours; model_registry imports bundle_contract only;
packager reaches model_registry only where it must (mounting `llmpack registry`, listing
a registry's models in serve and demo, pulling registry ids into a site); quantization
imports bundle_contract's error base only, and neither packager nor the registry. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("bundle_contract", "model_registry", "packager", "quantization")
ALLOWED = {
    "bundle_contract": set(),
    "model_registry": {"bundle_contract"},
    "packager": {"bundle_contract", "quantization", "model_registry"},
    "quantization": {"bundle_contract"},
}
PACKAGER_MODULES_USING_THE_REGISTRY = {"packager.cli", "packager.serve", "packager.demo", "packager.site"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_packages(path: Path, package: str) -> set[str]:
    """The top-level packages of ours that the module at `path`, in `package`, imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(package if node.level else (node.module or "").split(".")[0])
    return found & set(OURS)


MODULES = sorted(p for package in OURS for p in (ROOT / package).rglob("*.py"))


def test_every_package_is_scanned():
    assert {module_name(p).split(".")[0] for p in MODULES} == set(OURS)


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_imports_go_one_way(path):
    name = module_name(path)
    package = name.split(".")[0]
    others = imported_packages(path, package) - {package}
    assert others <= ALLOWED[package], f"{name} imports {sorted(others - ALLOWED[package])}"
    if package == "packager" and name not in PACKAGER_MODULES_USING_THE_REGISTRY:
        assert "model_registry" not in others, f"{name} imports model_registry"


def test_the_checker_sees_relative_and_nested_imports(tmp_path):
    module = tmp_path / "x.py"
    module.write_text("from . import y\n\ndef f():\n    import packager.cli\n    from quantization import formats\n")
    assert imported_packages(module, "model_registry") == {"model_registry", "packager", "quantization"}
