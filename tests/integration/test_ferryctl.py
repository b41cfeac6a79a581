"""ferryctl against a running ferryd: human tables, --json, and exit codes.

Each test runs the ferryctl binary as a user would and checks its output and exit status
(0 done, 1 refused by ferryd, 2 unreachable, 64 usage).
"""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from ferry_harness import FERRYCTL, Ferryd  # noqa: E402


@pytest.fixture(scope="module")
def ferryd():
    d = Ferryd()
    d.config["ports"] = [{"name": "vm1", "type": "vhost-user", "path": d.path("vm1.sock")}]
    with d:
        yield d


def ctl(d, *args):
    return subprocess.run([FERRYCTL, "-s", d.socket, *args], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)


def test_port_list_table_and_json(ferryd):
    r = ctl(ferryd, "port", "list")
    assert r.returncode == 0, r.stderr
    header, row = r.stdout.splitlines()[:2]
    assert header.split()[:3] == ["NAME", "TYPE", "STATE"]
    assert row.split()[0] == "vm1"
    r = ctl(ferryd, "--json", "port", "list")
    ports = json.loads(r.stdout)
    assert [p["name"] for p in ports] == ["vm1"]
    assert ports[0]["path"] == ferryd.path("vm1.sock")


def test_port_add_and_del_by_key_values(ferryd):
    path = ferryd.path("vm2.sock")
    r = ctl(ferryd, "port", "add", "vm2", "type=vhost-user", f"path={path}", "queues=2")
    assert r.returncode == 0, r.stderr
    ports = {p["name"]: p for p in json.loads(ctl(ferryd, "--json", "port", "list").stdout)}
    assert ports["vm2"]["queues"] == 2
    assert ctl(ferryd, "port", "del", "vm2").returncode == 0
    ports = json.loads(ctl(ferryd, "--json", "port", "list").stdout)
    assert [p["name"] for p in ports] == ["vm1"]
    assert not os.path.exists(path)


def test_refusal_is_exit_1_with_the_error(ferryd):
    r = ctl(ferryd, "port", "del", "nosuch")
    assert r.returncode == 1
    assert "error -32002" in r.stderr and "nosuch" in r.stderr
    r = ctl(ferryd, "port", "add", "vm3", "type=vhost-user", "path=relative.sock")
    assert r.returncode == 1
    assert "path" in r.stderr and "-32602" in r.stderr


def test_rules_round_trip(ferryd):
    rule = {"id": 7, "priority": 5, "match": {"in_port": "vm1", "eth_type": "arp"},
            "actions": ["drop"]}
    assert ctl(ferryd, "rule", "add", json.dumps(rule)).returncode == 0
    listed = json.loads(ctl(ferryd, "--json", "rule", "list").stdout)
    assert [(r["id"], r["actions"], r["packets"]) for r in listed] == [(7, ["drop"], 0)]
    table = ctl(ferryd, "rule", "list").stdout
    assert "drop" in table and "software" in table
    assert ctl(ferryd, "rule", "del", "7").returncode == 0
    assert json.loads(ctl(ferryd, "--json", "rule", "list").stdout) == []
    assert ctl(ferryd, "rule", "del", "7").returncode == 1


def test_stats_version_and_mac_list(ferryd):
    stats = json.loads(ctl(ferryd, "--json", "stats").stdout)
    assert stats["ports"] == 1 and [w["lcore"] for w in stats["workers"]] == [1]
    version = json.loads(ctl(ferryd, "--json", "version").stdout)
    assert version["dpdk"].startswith("DPDK 22.11")
    assert json.loads(ctl(ferryd, "--json", "mac", "list").stdout) == []


def test_unreachable_and_usage_errors(ferryd):
    r = subprocess.run([FERRYCTL, "-s", "/nonexistent/ferryd.sock", "port", "list"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "/nonexistent/ferryd.sock" in r.stderr
    assert ctl(ferryd, "frobnicate").returncode == 64
    assert ctl(ferryd, "rule", "add", "not json").returncode == 64


def test_ct_verbs(ferryd):
    """ct limit sets and shows a zone's settings; ct stats reports the zone; ct list and ct flush
    answer (no traffic here, so no connections); bad values are refused with exit 1."""
    r = ctl(ferryd, "ct", "limit", "zone=7", "limit=50", "liberal=true")
    assert r.returncode == 0, r.stderr
    assert json.loads(ctl(ferryd, "--json", "ct", "limit", "zone=7").stdout) == {
        "zone": 7, "limit": 50, "liberal": True, "connections": 0}
    stats = json.loads(ctl(ferryd, "--json", "ct", "stats").stdout)
    assert stats["connections"] == 0
    assert {"zone": 7, "connections": 0, "limit": 50, "limit_drops": 0,
            "liberal": True} in stats["zones"]
    r = ctl(ferryd, "ct", "stats")
    assert r.returncode == 0 and "connections" in r.stdout
    assert json.loads(ctl(ferryd, "--json", "ct", "list", "zone=7").stdout) == {
        "connections": [], "next": None}
    assert json.loads(ctl(ferryd, "--json", "ct", "flush").stdout) == {"flushed": 0}
    r = ctl(ferryd, "ct", "limit", "zone=70000")
    assert r.returncode == 1 and "zone" in r.stderr
    r = ctl(ferryd, "ct", "list", "port=nosuch")
    assert r.returncode == 1 and "nosuch" in r.stderr
    assert ctl(ferryd, "ct", "limit", "zone=7", "limit=0", "liberal=false").returncode == 0


def test_dpi_verbs(ferryd, tmp_path):
    """dpi load takes an array, an object with patterns, or a config file (@FILE); dpi list and
    dpi stats show what is loaded; a broken pattern is exit 1 naming its id and the set stays;
    dpi clear removes one id, then all."""
    r = ctl(ferryd, "--json", "dpi", "load", '[{"id":1,"regex":"evil","action":"drop"}]')
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["patterns"] == 1
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"workers": [1], "dpi": {"patterns": [
        {"id": 2, "regex": "sqlmap", "flags": ["caseless"], "direction": "to_server"},
        {"id": 3, "regex": "bt", "action": "mark", "mark": 5}]}}))
    r = ctl(ferryd, "--json", "dpi", "load", f"@{cfg}")
    assert r.returncode == 0, r.stderr
    loaded = json.loads(r.stdout)
    assert loaded["patterns"] == 3 and loaded["generation"] == first["generation"] + 1
    listed = json.loads(ctl(ferryd, "--json", "dpi", "list").stdout)["patterns"]
    assert [(p["id"], p["action"], p["direction"]) for p in listed] == [
        (1, "drop", "both"), (2, "alert", "to_server"), (3, "mark", "both")]
    table = ctl(ferryd, "dpi", "list").stdout
    assert "sqlmap" in table and "caseless" in table
    r = ctl(ferryd, "dpi", "load", '[{"id":9,"regex":"a("}]')
    assert r.returncode == 1 and "pattern 9" in r.stderr, r.stderr
    stats = json.loads(ctl(ferryd, "--json", "dpi", "stats").stdout)
    assert stats["pattern_count"] == 3 and stats["hash"] == loaded["hash"]
    r = ctl(ferryd, "dpi", "load", "replace")
    assert r.returncode == 64
    assert json.loads(ctl(ferryd, "--json", "dpi", "clear", "2").stdout)["patterns"] == 2
    assert ctl(ferryd, "dpi", "clear", "2").returncode == 1
    assert json.loads(ctl(ferryd, "--json", "dpi", "clear").stdout)["patterns"] == 0


def offline(*args):
    """ferryctl with a socket nobody listens on: what it prints must not need ferryd."""
    return subprocess.run([FERRYCTL, "-s", "/nonexistent/ferryd.sock", *args],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_help_and_version_need_no_ferryd():
    """--version, help, --help and COMMAND --help answer with exit 0 and no socket; the command's
    help shows its synopsis and method; an unknown command's help is a usage error."""
    r = offline("--version")
    assert r.returncode == 0 and r.stdout.startswith("ferryctl "), r.stderr
    assert json.loads(offline("--json", "--version").stdout)["ferryctl"] == r.stdout.split()[1]
    for args in (["help"], ["--help"], ["-h"]):
        r = offline(*args)
        assert r.returncode == 0, (args, r.stderr)
        assert "port add NAME key=value" in r.stdout and "log level" in r.stdout
    for args in (["port", "add", "--help"], ["help", "port", "add"], ["--help", "port", "add"],
                 ["port", "add", "vm9", "--help"]):
        r = offline(*args)
        assert r.returncode == 0, (args, r.stderr)
        assert "ferryctl [-s SOCKET] [--json] [--timeout SEC] port add NAME key=value" in r.stdout
        assert "JSON-RPC method: port.add" in r.stdout
        assert "migrate send" not in r.stdout  # that verb's text only
    r = offline("log", "level", "--help")
    assert r.returncode == 0 and "log level [SUBSYSTEM] [LEVEL]" in r.stdout
    r = offline("frobnicate", "--help")
    assert r.returncode == 64 and "frobnicate" in r.stderr


def test_json_errors(ferryd):
    """With --json every failure is an {"error": {code, message}} object on stdout and the exit
    status is the same as without: ferryd's refusal carries its JSON-RPC code (exit 1); an
    unreachable ferryd is code 2 and a usage error code 64 (their exit statuses)."""
    r = ctl(ferryd, "--json", "port", "del", "nosuch")
    assert r.returncode == 1
    err = json.loads(r.stdout)["error"]
    assert err["code"] == -32002 and "nosuch" in err["message"]
    r = offline("--json", "port", "list")
    assert r.returncode == 2
    err = json.loads(r.stdout)["error"]
    assert err["code"] == 2 and "/nonexistent/ferryd.sock" in err["message"]
    for args in (["frobnicate"], ["rule", "add", "not json"], ["port"], ["--bogus"],
                 ["--timeout", "x"]):
        r = ctl(ferryd, "--json", *args)
        assert r.returncode == 64, (args, r.stdout, r.stderr)
        err = json.loads(r.stdout)["error"]
        assert err["code"] == 64 and err["message"], args
    # Options after the command words count too; without --json the text stays on stderr.
    r = ctl(ferryd, "port", "del", "nosuch", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["code"] == -32002
    r = ctl(ferryd, "port", "del", "nosuch")
    assert r.stdout == "" and "error -32002" in r.stderr


def test_methods_lists_ferryd_methods(ferryd):
    """`ferryctl methods` shows ferryd's own method list (the help method)."""
    r = ctl(ferryd, "methods")
    assert r.returncode == 0, r.stderr
    assert "port.add" in r.stdout and "rule.add" in r.stdout
