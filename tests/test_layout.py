"""The package's shape: small modules, folders instead of filename prefixes, one door to LLaMA-Factory."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "arpo_train_sft"
MODULES = sorted(PACKAGE.rglob("*.py"))
SUBPACKAGES = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
MAX_LINES = 300
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
