"""ferryd's log: levels per subsystem changed at run time, the config's initial levels, and
syslog priority prefixes when stderr is the journal.

Each test starts ferryd, adds and removes a vhost-user port (server mode, no peer needed) to make
the port subsystem log a debug line ("port pN: device ... is DPDK port ..."), and reads ferryd's
stderr (the harness writes it to ferryd.log).
"""
import json
import os
import re
import subprocess

import pytest

from ferry_harness import FERRYCTL, Ferryd, RpcError

DEBUG_LINE = re.compile(r"port (p\d+): device \S+ is DPDK port \d+")


def add_and_remove_port(d, name):
    d.call("port.add", {"name": name, "type": "vhost-user", "path": d.path(name + ".sock")})
    d.call("port.del", {"name": name})


def debug_ports(d):
    return set(DEBUG_LINE.findall(d.read_log()))


def levels(d):
    return {e["subsystem"]: e["level"] for e in d.call("log.level")}


def test_levels_change_at_run_time():
    """Sends log.level changes between port additions. Expects the port subsystem's debug line
    only for the ports added while port (or every subsystem) was at debug, every subsystem listed
    with its level, and unknown names refused with -32602 naming the field."""
    with Ferryd() as d:
        assert set(levels(d).values()) == {"info"}
        assert {"main", "control", "port", "rule", "ct", "dpi", "migrate", "eal"} <= set(levels(d))
        add_and_remove_port(d, "p1")
        assert d.call("log.level", {"subsystem": "port", "level": "debug"}) == [
            {"subsystem": "port", "level": "debug"}]
        assert levels(d)["port"] == "debug" and levels(d)["dpi"] == "info"
        add_and_remove_port(d, "p2")
        d.call("log.level", {"subsystem": "port", "level": "info"})
        add_and_remove_port(d, "p3")
        d.call("log.level", {"level": "debug"})
        assert set(levels(d).values()) == {"debug"}
        add_and_remove_port(d, "p4")
        d.call("log.level", {"level": "warn"})
        add_and_remove_port(d, "p5")
        assert debug_ports(d) == {"p2", "p4"}
        # A change is logged (control, info) unless the level hides it.
        assert re.search(r"ferryd info control: log level of port: debug", d.read_log())
        for params, field in (({"subsystem": "nosuch"}, "params.subsystem"),
                              ({"level": "loud"}, "params.level")):
            with pytest.raises(RpcError) as e:
                d.call("log.level", params)
            assert e.value.code == -32602 and e.value.message.startswith(field)


def test_ferryctl_log_level():
    """ferryctl log level shows the table, sets every subsystem or one, and shows one."""
    with Ferryd() as d:
        def ctl(*args):
            r = subprocess.run([FERRYCTL, "-s", d.socket, "--json", "log", "level", *args],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stdout + r.stderr
            return {e["subsystem"]: e["level"] for e in json.loads(r.stdout)}

        assert ctl()["migrate"] == "info"
        assert set(ctl("debug").values()) == {"debug"}
        assert ctl("migrate", "error") == {"migrate": "error"}
        assert ctl("migrate") == {"migrate": "error"}
        assert ctl()["port"] == "debug"
        r = subprocess.run([FERRYCTL, "-s", d.socket, "log", "level"], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0 and re.search(r"migrate\s+error", r.stdout), r.stdout


def test_config_sets_initial_levels():
    """Starts ferryd with log.level info and log.subsystems {port: debug, ct: warn}. Expects
    those levels from log.level and the port's debug line without any run-time change."""
    with Ferryd(extra={"log": {"level": "info", "subsystems": {"port": "debug", "ct": "warn"}}}) as d:
        lv = levels(d)
        assert (lv["port"], lv["ct"], lv["main"], lv["migrate"]) == ("debug", "warn", "info", "info")
        add_and_remove_port(d, "p1")
        assert debug_ports(d) == {"p1"}


@pytest.mark.parametrize("matching", [True, False])
def test_journal_priority_prefixes(matching):
    """Starts ferryd with $JOURNAL_STREAM naming its stderr (the log file). Expects ferryd's own
    lines as "<N>subsystem: message" (<6> info, <7> debug; every priority's prefix is checked in
    tests/unit/test_log.cc) and none in the human form; with a $JOURNAL_STREAM naming another
    file (inherited while stderr was redirected) the human form and no prefix."""
    d = Ferryd()
    open(d.log_path, "w").close()  # start() reopens it with "w": same inode
    st = os.stat(d.log_path if matching else d.dir)
    d.env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    with d:
        d.call("log.level", {"subsystem": "port", "level": "debug"})
        add_and_remove_port(d, "p1")
        log = d.read_log()
    if matching:
        assert re.search(r"^<6>main: ready:", log, re.M), log
        assert re.search(r"^<7>port: port p1: device ", log, re.M), log
        assert re.search(r"^<6>control: log level of port: debug$", log, re.M), log
        ours = [l for l in log.splitlines() if re.match(r"<\d>[a-z]+: ", l)]
        assert ours and not re.search(r"^\d{4}-\d\d-\d\dT.* ferryd ", log, re.M), log
    else:
        assert re.search(r"ferryd info main: ready:", log), log
        assert not re.search(r"^<\d>", log, re.M), log


def test_rule_and_ct_subsystems():
    """Adds a rule with rule at debug, then at info; sets a zone limit and flushes. Expects the
    rule subsystem's debug line for the first publication only, and ct's info lines."""
    with Ferryd() as d:
        rule = {"id": 1, "priority": 1, "match": {}, "actions": ["normal"]}
        d.call("log.level", {"subsystem": "rule", "level": "debug"})
        d.call("rule.add", {"rule": rule})
        d.call("log.level", {"subsystem": "rule", "level": "info"})
        d.call("rule.del", {"id": 1})
        d.call("ct.limit", {"zone": 3, "limit": 10})
        d.call("ct.flush")
        log = d.read_log()
    # One publication at start (no rules), one per change: only the rule.add one is at debug.
    published = re.findall(r"ferryd debug rule: generation \d+ published: (\d+) rules", log)
    assert published == ["1"], log
    assert "ferryd info ct: zone 3: limit 10, liberal no" in log
    assert "ferryd info ct: flushed 0 connections" in log


def test_migrate_subsystem():
    """Saves a checkpoint and loads it twice, the second time with migrate at warn. Expects the
    load's info line under migrate for the first load only, and none of them under main."""
    with Ferryd() as d:
        path = d.path("checkpoint.bin")
        d.call("migrate.save", {"file": path})
        d.call("migrate.load", {"file": path})
        d.call("log.level", {"subsystem": "migrate", "level": "warn"})
        d.call("migrate.load", {"file": path})
        log = d.read_log()
    assert len(re.findall(r"ferryd info migrate: restored " + re.escape(path), log)) == 1, log
    assert not re.search(r"ferryd \w+ main: restored", log), log
