"""The documented counter lists against ferryd's tables.

Reads `ferryd --print-counters` (the drop reasons of dataplane/drop_reason.h, the per-worker
conntrack and worker counters, the payload inspection, port and device counters, generated from
one table each, and the migration phases) and the lists of docs/control-api.md
("Counters by name", "Migration phases"). Expects the same names, in the same order, with the same descriptions and
kinds, so that a reason added to a table and not to the document (or the reverse) fails here.
"""
import os
import re

from ferry_harness import ROOT, counter_catalog

DOC = os.path.join(ROOT, "docs", "control-api.md")
LISTS = ("drop_reasons", "ct_counters", "worker_counters", "dpi_counters", "port_counters",
         "device_counters")


def documented_lists():
    """The bullet lists of the "Counters by name" section, in order: [[(name, kind, text)]]."""
    with open(DOC) as f:
        text = f.read()
    section = text.split("## Counters by name", 1)[1].split("\n## ", 1)[0]
    lists, current = [], None
    for line in section.splitlines():
        m = re.match(r"^- `([a-z0-9_]+)`(?: \((counter|gauge)\))?: (.*)$", line)
        if m:
            if current is None:
                current = []
                lists.append(current)
            current.append((m.group(1), m.group(2), m.group(3)))
        elif current is not None and line.startswith("  "):
            name, kind, desc = current[-1]  # a wrapped item
            current[-1] = (name, kind, desc + " " + line.strip())
        else:
            current = None
    return lists


def test_documented_lists_match_ferryds_tables():
    cat = counter_catalog()
    lists = documented_lists()
    assert len(lists) == 6, \
        "docs/control-api.md: want the drop reason, conntrack, worker, dpi, port and device lists"
    drops, *described = lists
    assert drops == [(r["name"], None, r["description"]) for r in cat["drop_reasons"]]
    for got, key in zip(described, LISTS[1:]):
        assert got == [(c["name"], c["kind"], c["description"]) for c in cat[key]], key


def test_documented_phases_match_ferryds_table():
    with open(DOC) as f:
        section = f.read().split("## Migration phases", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1].strip() for line in section.splitlines()
            if line.startswith("| ") and not line.startswith(("| phase", "| ---"))]
    assert rows == counter_catalog()["migration_phases"]


def test_names_are_unique_and_prometheus_safe():
    cat = counter_catalog()
    for key in LISTS:
        names = [r["name"] for r in cat[key]]
        assert len(names) == len(set(names)), key
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", n) for n in names), key
        assert all(r["description"] for r in cat[key]), key
