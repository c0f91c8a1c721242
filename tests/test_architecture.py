"""The architecture as written down (docs/architecture.md) is the one import-linter enforces, and the
tree keeps the shape the contract promises a newcomer."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPORTER = ROOT / "exporter"
MAX_TOP_LEVEL_MODULES = 12
MAX_MODULE_LINES = 600


def contracts() -> list[dict[str, object]]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return list(tomllib.load(file)["tool"]["importlinter"]["contracts"])


def layer_contracts() -> list[dict[str, object]]:
    return [contract for contract in contracts() if contract["type"] == "layers"]


def contract_layers(contract: dict[str, object]) -> list[list[str]]:
    """The contract's layers, each as its sibling packages (``a : b`` independent, ``a | b`` not)."""
    layers = contract["layers"]
    assert isinstance(layers, list)
    return [[name.strip() for name in re.split(r"[:|]", layer)] for layer in layers]


def documented_layers(root_package: str) -> list[list[str]]:
    """The package column of the table between ``<!-- layers: ROOT -->`` and ``<!-- /layers -->``."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    match = re.search(rf"<!-- layers: {re.escape(root_package)} -->\n(.*?)<!-- /layers -->", text, re.S)
    assert match, f"docs/architecture.md has no layer table for {root_package}"
    rows = [line for line in match.group(1).splitlines() if line.startswith("| ") and "---" not in line]
    layers = []
    for row in rows[1:]:  # the first row is the header
        package_cell = row.split("|")[2]
        layers.append(re.findall(r"`([\w.]+)`", package_cell))
    return layers


def common_root(contract: dict[str, object]) -> str:
    names = [name for layer in contract_layers(contract) for name in layer]
    return names[0] if len(names) == 1 else ".".join(names[0].split(".")[:-1])


@pytest.mark.parametrize("contract", layer_contracts(), ids=lambda contract: common_root(contract))
def test_the_documented_layers_are_the_contract(contract):
    assert documented_layers(common_root(contract)) == contract_layers(contract)


def test_every_package_is_in_a_layer():
    layered = {name for contract in layer_contracts() for layer in contract_layers(contract) for name in layer}
    for contract in layer_contracts():
        root = common_root(contract)
        directory = ROOT.joinpath(*root.split("."))
        children = {
            f"{root}.{path.stem if path.suffix == '.py' else path.name}"
            for path in directory.iterdir()
            if (path.suffix == ".py" and path.stem != "__init__" and path.stem != "__main__")
            or (path.is_dir() and (path / "__init__.py").exists())
        }
        assert children <= layered, f"not in any layer of the contract: {sorted(children - layered)}"


def test_the_contracts_hold():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    if not lint_imports.exists():
        pytest.skip(f"lint-imports is not installed beside {sys.executable} (pip install -e '.[test]')")
    done = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and " 0 broken" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]


def test_the_tree_keeps_its_shape():
    top_level = sorted(path.name for path in EXPORTER.glob("*.py"))
    assert len(top_level) <= MAX_TOP_LEVEL_MODULES, top_level
    too_long = {
        str(path.relative_to(ROOT)): lines
        for path in EXPORTER.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"
