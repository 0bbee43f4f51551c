"""The package's shape: small modules, folders instead of filename prefixes, one door to LLaMA-Factory, and
imports that run one way, from each part to the parts below it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "arpo_train_sft"
MODULES = sorted(PACKAGE.rglob("*.py"))
SUBPACKAGES = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
MAX_LINES = 300
# The package's parts (a top-level module or subpackage; `__init__` is the package's own), lowest first. A
# part imports only from itself and the parts before it. README.md's "### Layout" states the same order.
LAYERS = (
    "errors",
    "secrets",
    "console",
    "progress",
    "atomic",
    "config",
    "arpo",
    "family",
    "lf",
    "data",
    "demo",
    "handoff",
    "checkpoint",
    "train",
    "rank",
    "verify",
    "presets",
    "entry",
    "cli",
    "__init__",
)
LLAMAFACTORY_IMPORT = re.compile(r"^\s*(from|import)\s+llamafactory\b", re.MULTILINE)


def test_the_package_has_modules_to_check():
    assert len(MODULES) > 20 and {"data", "lf", "train", "checkpoint", "verify", "demo", "arpo"} <= set(
        SUBPACKAGES
    )


def test_no_module_is_over_the_size_one_can_read_in_a_sitting():
    long = {
        str(m.relative_to(REPO)): n for m in MODULES if (n := len(m.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_filename_prefix_stands_in_for_a_subpackage():
    """`data_check.py` + `data_prepare.py`, or `estimate.py` + `estimate_terms.py`: make it a folder."""
    groups: dict[tuple[Path, str], list[str]] = {}
    for module in MODULES:
        groups.setdefault((module.parent, module.stem.split("_")[0]), []).append(module.stem)
    prefixed = {
        f"{folder.relative_to(REPO)}/{prefix}_*": stems
        for (folder, prefix), stems in groups.items()
        if len(stems) > 1 and any("_" in stem for stem in stems) and prefix not in ("", "__init__")
    }
    prefixed |= {
        str(m.relative_to(REPO)): [m.stem]
        for m in MODULES
        if m.stem.split("_")[0] in SUBPACKAGES and "_" in m.stem
    }
    assert not prefixed, f"move these into a subpackage of their own: {prefixed}"


def test_llamafactory_is_imported_only_in_lf():
    outside = [
        str(m.relative_to(REPO))
        for m in MODULES
        if m.parent.name != "lf" and LLAMAFACTORY_IMPORT.search(m.read_text())
    ]
    assert not outside, f"import llamafactory only inside arpo_train_sft/lf/: {outside}"


def test_tests_mirror_the_package():
    for sub in SUBPACKAGES:
        if sub != "arpo":
            assert (REPO / "tests" / sub).is_dir(), f"tests/{sub}/ is missing"


def _part(module: str) -> str:
    """`arpo_train_sft.train.shapes` -> `train`; a name of the package itself (`__version__`) -> `__init__`."""
    bits = module.split(".")
    if len(bits) < 2:
        return "__init__"
    return bits[1] if (PACKAGE / bits[1]).is_dir() or (PACKAGE / f"{bits[1]}.py").is_file() else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of our package in `path`, lazy and TYPE_CHECKING ones included,
    relative ones resolved; `from .x import name` counts as `.x.name`, since `name` may be a module."""
    dotted = ".".join(path.relative_to(REPO).with_suffix("").parts)
    package = dotted.removesuffix(".__init__") if path.name == "__init__.py" else dotted.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return [(line, module) for line, module in found if module.startswith("arpo_train_sft.")]


def test_the_layers_name_every_part_once():
    parts = {m.stem for m in PACKAGE.glob("*.py")} | set(SUBPACKAGES)
    assert len(set(LAYERS)) == len(LAYERS)
    assert parts == set(LAYERS), f"add each part to LAYERS, lowest first: {sorted(parts ^ set(LAYERS))}"


def test_imports_run_from_higher_layers_to_lower_ones():
    upward = []
    for path in MODULES:
        mine = _part(".".join(path.relative_to(REPO).with_suffix("").parts))
        for line, module in _imports(path):
            theirs = _part(module)
            if LAYERS.index(theirs) > LAYERS.index(mine):
                upward.append(
                    f"{path.relative_to(REPO)}:{line}: {mine} imports {module} ({theirs} is above it)"
                )
    assert not upward, "move the name down to a lower part, or the importer up:\n" + "\n".join(upward)
