"""The docs name the code as it is: docs/architecture.md's module tables list every module
of theory/, simulate/, validate/ and every script of tools/, and name no module that does
not exist; its theory.__all__ paragraph, and docs/validation.md's validate.__all__
paragraph and module table, name exactly the public names and modules there are."""

import re
from pathlib import Path

import pytest

import icl_kinetics.theory as theory
import icl_kinetics.validate as validate

ROOT = Path(__file__).resolve().parents[1]
ARCH = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
VALID = (ROOT / "docs" / "validation.md").read_text(encoding="utf-8")
LAYERS = ("theory", "simulate", "validate", "tools")


def _section(text: str, start: str, end: str) -> str:
    i = text.index(start)
    return text[i:text.index(end, i + len(start))]


def _first_cells(section: str) -> list:
    """The first cell of every table row of a section, header and rule rows left out."""
    rows = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [ln.strip("|").split("|")[0] for ln in rows[2:] if not set(ln) <= set("|- ")] if rows else []


def _layer_section(layer: str) -> str:
    return _section(ARCH, f"### `{layer}/`", "\n## " if layer == "tools" else "\n### ")


def _files(layer: str) -> set:
    folder = ROOT / layer
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*.py") if p.name != "__init__.py"}


@pytest.mark.parametrize("layer", LAYERS)
def test_architecture_lists_every_module_and_only_modules_that_exist(layer):
    named = {m for cell in _first_cells(_layer_section(layer)) for m in re.findall(r"`([\w/]+\.py)`", cell)}
    files = _files(layer)
    assert files - named == set(), f"docs/architecture.md, {layer}/: modules not listed"
    assert named - files == set(), f"docs/architecture.md, {layer}/: listed modules that do not exist"


def _names(paragraph: str) -> set:
    return {n for n in re.findall(r"`([A-Za-z_][A-Za-z0-9_.]*)`", paragraph) if "." not in n}


def test_architecture_theory_all_paragraph_matches_the_package():
    par = _section(ARCH, "`icl_kinetics.theory.__all__` is what users call", "\n\n")
    assert _names(par) == set(theory.__all__)


def test_validation_validate_all_paragraph_and_module_table_match_the_package():
    par = _section(VALID, "`icl_kinetics.validate.__all__` names what scripts call", "\n\n")
    assert _names(par) == set(validate.__all__)
    table = _section(VALID, "| module | what it holds |", "\n\n")
    named = {m for cell in _first_cells(table) for m in re.findall(r"`(\w+)`", cell)}
    assert named == {Path(f).stem for f in _files("validate")}


def test_the_first_cells_parser_reads_a_table():
    text = "| module | what |\n|---|---|\n| `a.py`, `b.py` | x `c.py` |\n"
    assert _first_cells(text) == [" `a.py`, `b.py` "]
