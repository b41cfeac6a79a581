"""docs/control-api.md against the command table of a running ferryd.

Asks ferryd for its methods (`help`: every row of the command table with its params) and reads
the document's method table (rows "| `name` | params | result |"). Expects every method
documented, no documented method that ferryd lacks, each of a method's params named in its
row, and the keys of what the read-only methods return named in their result, so a new row,
param or result key that the document misses fails here.
"""
import os
import re

import pytest

from ferry_harness import ROOT, Ferryd

DOC = os.path.join(ROOT, "docs", "control-api.md")
ROW = re.compile(r"^\| `([a-z_]+(?:\.[a-z_]+)?)` \|(.*)$")
# Rows whose params are described by reference instead of by name, and why.
BY_REFERENCE = {"port.add": "a port object, as in the config's ports (its keys: config/schema.json)"}


def documented():
    rows = {}
    with open(DOC) as f:
        for line in f:
            m = ROW.match(line)
            if m:
                assert m.group(1) not in rows, f"{m.group(1)} documented twice"
                rows[m.group(1)] = m.group(2)
    return rows


# Read-only methods with the params that make them answer; their result keys are checked: an
# object's own keys, or those of an array's elements (mac.list is empty without traffic).
READ_ONLY = [("version", None), ("stats", None), ("stats.describe", None), ("port.list", None),
             ("rule.list", None), ("flow.dump", None), ("ct.stats", None), ("ct.limit", {"zone": 1}),
             ("dpi.stats", None), ("dpi.list", None), ("migrate.status", None), ("log.level", None)]


@pytest.fixture(scope="module")
def ferryd():
    d = Ferryd()
    d.config["ports"] = [{"name": "vm1", "type": "vhost-user", "path": d.path("vm1.sock")}]
    d.config["rules"] = [{"id": 1, "priority": 1, "match": {"in_port": "vm1"}, "actions": ["drop"]}]
    with d:
        yield d


@pytest.fixture(scope="module")
def methods(ferryd):
    return {m["name"]: m for m in ferryd.call("help")}


def test_every_method_is_documented(methods):
    rows = documented()
    assert sorted(set(methods) - set(rows)) == [], "methods missing from docs/control-api.md"
    assert sorted(set(rows) - set(methods)) == [], "docs/control-api.md lists unknown methods"


def test_every_param_is_named(methods):
    rows = documented()
    missing = []
    for name, m in methods.items():
        if name in BY_REFERENCE:
            continue
        params_cell = re.split(r"(?<!\\)\|", rows[name])[0]  # a cell may hold "\\|"
        for p in m["params"]:
            if not re.search(r"\b%s\b" % re.escape(p["name"]), params_cell):
                missing.append(f"{name}: {p['name']}")
    assert missing == [], "params missing from their rows in docs/control-api.md"


def test_result_keys_are_named(ferryd):
    rows = documented()
    missing = []
    for name, params in READ_ONLY:
        result = ferryd.call(name, params)
        if isinstance(result, list):
            assert result, f"{name} returned nothing to check"
            result = result[0]
        result_cell = re.split(r"(?<!\\)\|", rows[name])[1]
        for key in result:
            if not re.search(r"\b%s\b" % re.escape(key), result_cell):
                missing.append(f"{name}: {key}")
    assert missing == [], "result keys missing from their rows in docs/control-api.md"
