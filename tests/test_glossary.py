"""One name per quantity: the glossary in docs/theory.md, the
engine's metrics columns, the validation schema's columns, the sweep tables' columns,
the config fields and the theory API's parameters use the same names, and no
deprecated alias is a public name."""

import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import pytest

import icl_kinetics.simulate as simulate
import icl_kinetics.theory as theory
import icl_kinetics.validate as validate
from icl_kinetics.simulate.engine import METRIC_COLUMNS, TrainConfig
from icl_kinetics.simulate.sweeps import COLLECT_COLUMNS, GRID_COLUMNS
from icl_kinetics.validate.schema import COLUMNS

DOC = Path(__file__).resolve().parents[1] / "docs" / "theory.md"
TAGS = {"metrics", "schema", "grid", "collected", "config"}
UNITS = {"iterations", "learning-rate time", "reduced time", "dimensionless", "items", "tokens", "sequences",
         "1/overlap", "nats", "per learning-rate time", "learning-rate time per iteration", "–"}
#: names that must not be public anywhere (the quantity's canonical name in brackets)
DEPRECATED = {"integrated_error": "i_k", "wd_icl": "wd_attn", "lam": "wd_attn", "beta_at_0": "beta0",
              "b0": "beta0", "max_iterations": "iterations", "mlp_width": "width", "equalize": "contexts",
              "acc_threshold": "t_icl_threshold"}
#: parameters of the public theory API that are options of a computation, not quantities
OPTIONS = {"self", "accuracy", "alpha", "axis", "beta_escape", "beta_init", "c0", "extrapolate", "method",
           "n_points", "p", "regime", "s0", "s_max", "samples", "stage", "t", "t_max", "value", "values",
           "w_init", "w_sign", "weights"}


def _cells(line: str) -> list:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_glossary(text: str) -> dict:
    """{name: {"symbol", "unit", "tables" (a set), "meaning", "where"}} from the table
    between the glossary markers; fails on a malformed row."""
    m = re.search(r"<!-- glossary:begin -->\n(.*?)<!-- glossary:end -->", text, re.S)
    assert m, "docs/theory.md has no glossary markers"
    lines = [ln for ln in m.group(1).splitlines() if ln.strip()]
    assert _cells(lines[0]) == ["name", "symbol", "unit", "tables", "meaning", "where"], lines[0]
    assert set(lines[1]) <= set("|-"), lines[1]
    out = {}
    for ln in lines[2:]:
        cells = _cells(ln)
        assert len(cells) == 6, f"a glossary row needs 6 cells: {ln}"
        name, symbol, unit, tables, meaning, where = cells
        mn = re.fullmatch(r"`([A-Za-z_][A-Za-z0-9_]*)`", name)
        assert mn, f"the first cell must be one name in backticks: {name!r}"
        name = mn.group(1)
        assert name not in out, f"{name} appears twice in the glossary"
        assert symbol and meaning and where, f"{name}: empty cell"
        assert unit in UNITS, f"{name}: unit {unit!r} not one of {sorted(UNITS)}"
        tags = set() if tables == "–" else {t.strip() for t in tables.split(",")}
        assert tags <= TAGS, f"{name}: unknown tables {tags - TAGS}"
        out[name] = {"symbol": symbol, "unit": unit, "tables": tags, "meaning": meaning, "where": where}
    return out


@pytest.fixture(scope="module")
def glossary():
    return parse_glossary(DOC.read_text(encoding="utf-8"))


def _tagged(glossary, tag):
    return {n for n, e in glossary.items() if tag in e["tables"]}


def test_the_parser_refuses_malformed_tables():
    head = "<!-- glossary:begin -->\n| name | symbol | unit | tables | meaning | where |\n|---|---|---|---|---|---|\n"
    good = "| `w` | w | dimensionless | metrics | readout | `theory.w_tr` |\n"
    assert set(parse_glossary(head + good + "<!-- glossary:end -->")) == {"w"}
    for bad in ("| w | w | dimensionless | metrics | readout | x |\n",             # name not in backticks
                "| `w` | w | furlongs | metrics | readout | x |\n",               # unknown unit
                "| `w` | w | dimensionless | tables | readout | x |\n",           # unknown tag
                "| `w` | w | dimensionless | metrics | readout |\n",              # a cell missing
                good):                                                             # a duplicate
        with pytest.raises(AssertionError):
            parse_glossary(head + good + bad + "<!-- glossary:end -->")


def test_every_engine_column_is_a_glossary_entry_and_back(glossary):
    assert _tagged(glossary, "metrics") == set(METRIC_COLUMNS)


def test_every_schema_column_is_a_glossary_entry_and_back(glossary):
    assert _tagged(glossary, "schema") == set(COLUMNS)


def test_every_sweep_table_column_is_a_glossary_entry_and_back(glossary):
    assert _tagged(glossary, "grid") == set(GRID_COLUMNS)
    tabled = _tagged(glossary, "collected") | _tagged(glossary, "grid") | _tagged(glossary, "metrics")
    assert tabled == set(COLLECT_COLUMNS)


def test_every_config_field_is_a_glossary_entry_and_back(glossary):
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert _tagged(glossary, "config") == fields
    assert _tagged(glossary, "grid") <= fields  # a grid column is a config field


#: schema units that still differ from the glossary, waiting for validate/schema.py (owned by
#: the validation layer): the schema says '-' for wd_attn, a rate per learning-rate time.
#: The test fails once the schema is fixed, so that this entry is removed.
SCHEMA_UNITS_PENDING = {"wd_attn": "-"}


def test_schema_units_agree_with_the_glossary(glossary):
    # the schema writes '-' for dimensionless and for labels, '1/iteration' for lr; every
    # other unit is the glossary's
    for name, col in COLUMNS.items():
        unit = glossary[name]["unit"]
        if name in SCHEMA_UNITS_PENDING:
            assert col.unit == SCHEMA_UNITS_PENDING[name], f"{name}: fixed in the schema, drop it from PENDING"
        elif col.unit == "-":
            assert unit in ("dimensionless", "–"), (name, unit)
        elif (name, col.unit) != ("lr", "1/iteration"):
            assert col.unit == unit, (name, col.unit, unit)


def _resolve(ref: str):
    """The object that ``theory.x.y`` names (as ``icl_kinetics.theory.x.y``)."""
    parts = ref.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module("icl_kinetics." + ".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ModuleNotFoundError(ref)


def test_every_where_reference_resolves(glossary):
    refs = set()
    for name, e in glossary.items():
        found = re.findall(r"`((?:theory|simulate|validate)\.[A-Za-z0-9_.]+)`", e["where"])
        assert found, f"{name}: 'where' names no theory/simulate/validate object"
        refs.update(found)
    for ref in sorted(refs):
        try:
            _resolve(ref)
        except (ImportError, AttributeError) as exc:
            pytest.fail(f"glossary reference {ref} does not resolve: {exc}")


def _public_names():
    names = {}
    for mod in (theory, simulate, validate, importlib.import_module("icl_kinetics.simulate.engine"),
                importlib.import_module("icl_kinetics.simulate.sweeps"),
                importlib.import_module("icl_kinetics.validate.schema")):
        for n in getattr(mod, "__all__", ()):
            names.setdefault(n, mod.__name__)
    return names


def test_no_deprecated_alias_is_a_public_name(glossary):
    public = {"__all__": _public_names(), "METRIC_COLUMNS": METRIC_COLUMNS, "schema COLUMNS": COLUMNS,
              "COLLECT_COLUMNS": COLLECT_COLUMNS, "TrainConfig": [f.name for f in dataclasses.fields(TrainConfig)],
              "glossary": glossary}
    for where, names in public.items():
        bad = sorted(set(names) & set(DEPRECATED))
        assert not bad, f"deprecated name(s) in {where}: " + ", ".join(f"{b} (use {DEPRECATED[b]})" for b in bad)


def _theory_parameters():
    """{parameter: [where]} over the public theory API (functions, classes and methods)."""
    out = {}
    for name in theory.__all__:
        obj = getattr(theory, name)
        members = [(name, obj)]
        if inspect.isclass(obj):
            members += [(f"{name}.{m}", f) for m, f in inspect.getmembers(obj, inspect.isfunction)
                        if not m.startswith("_")]
            if dataclasses.is_dataclass(obj):
                for f in dataclasses.fields(obj):
                    if not f.name.startswith("_"):
                        out.setdefault(f.name, []).append(f"{name} field")
        for label, fn in members:
            if not callable(fn):
                continue
            for p in inspect.signature(fn).parameters:
                out.setdefault(p, []).append(label)
    return out


def test_theory_api_speaks_the_glossary(glossary):
    # every parameter and field of the public theory API is a glossary name or an option
    # of the computation (OPTIONS); a new quantity needs a glossary row first
    params = _theory_parameters()
    assert "wd_attn" in params and "lam" not in params  # the rename took, the alias is hidden
    unknown = {p: w for p, w in params.items() if p not in glossary and p not in OPTIONS}
    assert not unknown, f"theory parameters missing from the glossary: {unknown}"
    assert not OPTIONS & set(glossary), "a name is both an option and a glossary quantity"


def test_theory_names_the_glossary_points_to_are_public(glossary):
    # a glossary 'where' of the form theory.X (one level) is in theory.__all__
    for name, e in glossary.items():
        for ref in re.findall(r"`theory\.([A-Za-z0-9_]+)`", e["where"]):
            assert ref in theory.__all__, f"{name}: theory.{ref} is not public"
