"""DPDK telemetry of ferryd's state: /ferry/ct, /ferry/ct_zones, /ferry/dpi, /ferry/migration.

These endpoints run the control methods' handlers (ct.stats, dpi.stats, migrate.status) on the
control thread, so their values must be those of the control socket, flattened as telemetry
flattens them (nested objects joined by "_", booleans 0/1, milliseconds as strings, arrays left
out). No traffic: zones get limits, patterns are loaded, and a migration target listens and is
cancelled, and an empty switch moves here from a second ferryd, which changes what each
endpoint reports.
"""
import pytest

from ferry_harness import Ferryd, wait_for
from test_telemetry_pdump import Telemetry, flatten


def telemetry_form(obj):
    """A control-socket result as the telemetry endpoint shows it."""
    out = {}
    for k, v in flatten({k: v for k, v in obj.items() if not isinstance(v, list)}).items():
        if isinstance(v, bool):
            v = int(v)
        elif isinstance(v, float):
            v = f"{v:.3f}"
        out[k] = v
    return out


@pytest.fixture(scope="module")
def ferryd():
    with Ferryd() as d:
        yield d


@pytest.fixture
def tel(ferryd):
    t = Telemetry(ferryd.prefix)
    yield t
    t.close()


def test_endpoints_are_listed(tel):
    listed = tel.query("/")
    for name in ("/ferry/ct", "/ferry/ct_zones", "/ferry/dpi", "/ferry/migration"):
        assert name in listed


def test_ct(ferryd, tel):
    """Sets limits on zones 7 and 300 (liberal). Expects /ferry/ct's totals and states as
    ct.stats has them with the workers' counters summed, and /ferry/ct_zones the two zones."""
    ferryd.call("ct.limit", {"zone": 7, "limit": 50})
    ferryd.call("ct.limit", {"zone": 300, "limit": 0, "liberal": True})
    try:
        stats = ferryd.call("ct.stats")
        ct = tel.query("/ferry/ct")
        assert ct["connections"] == stats["connections"] == 0
        for state, n in stats["by_state"].items():
            assert ct[f"by_state_{state}"] == n
        assert "by_state_tcp_ESTABLISHED" in ct
        assert ct["capacity"] == sum(w["capacity"] for w in stats["workers"])
        assert ct["lookups"] == sum(w["lookups"] for w in stats["workers"])
        zones = tel.query("/ferry/ct_zones")
        assert zones == {"zone7_connections": 0, "zone7_limit": 50, "zone7_limit_drops": 0,
                         "zone7_liberal": 0, "zone300_connections": 0, "zone300_limit": 0,
                         "zone300_limit_drops": 0, "zone300_liberal": 1}
        assert zones == {k: v for z in stats["zones"] for k, v in
                         telemetry_form({f"zone{z['zone']}": {
                             k2: v2 for k2, v2 in z.items() if k2 != "zone"}}).items()}
    finally:
        ferryd.call("ct.limit", {"zone": 7, "limit": 0})
        ferryd.call("ct.limit", {"zone": 300, "limit": 0, "liberal": False})
    assert tel.query("/ferry/ct_zones") == {}


def test_dpi(ferryd, tel):
    """Loads two patterns. Expects /ferry/dpi to be dpi.stats without its arrays."""
    before = tel.query("/ferry/dpi")
    ferryd.call("dpi.load", {"patterns": [{"id": 1, "regex": "evil"},
                                          {"id": 2, "regex": "worse", "action": "drop"}]})
    try:
        after = tel.query("/ferry/dpi")
        assert after["pattern_count"] == 2 and after["generation"] == before["generation"] + 1
        assert after == telemetry_form(ferryd.call("dpi.stats"))
    finally:
        ferryd.call("dpi.clear")


def test_migration(ferryd, tel):
    """Before any migration /ferry/migration is {"phase": "idle"}; a target listening shows its
    role, phase and address; after migrate.cancel the last migration's result, error and
    durations, as migrate.status reports them."""
    assert tel.query("/ferry/migration") == {"phase": "idle"}
    ferryd.call("migrate.receive", {"listen": "unix:" + ferryd.path("mig.sock"), "timeout_s": 30})
    listening = tel.query("/ferry/migration")
    assert (listening["role"], listening["phase"]) == ("target", "listening")
    assert listening["address"].endswith("mig.sock")
    assert isinstance(listening["elapsed_ms"], str) and float(listening["elapsed_ms"]) >= 0
    ferryd.call("migrate.cancel")

    def ended():
        s = ferryd.call("migrate.status")
        return s if s["phase"] not in ("listening", "cancelling") else None

    status = wait_for(ended, 10, what="the cancelled receive to end")
    t = tel.query("/ferry/migration")
    assert t["phase"] == status["phase"] and t.get("error") == status.get("error")
    assert t == telemetry_form(status)


def test_migration_committed(ferryd):
    """Moves an empty switch from a second ferryd to this one over a unix socket. Expects
    /ferry/migration on both sides to show the committed migration as migrate.status reports
    it: role, phase, bytes, and the durations (pause_ms, elapsed_ms, steps_ms_<step>) as
    strings."""
    address = ferryd.call("migrate.receive", {"listen": "unix:" + ferryd.path("mig2.sock"),
                                              "timeout_s": 30})["address"]
    with Ferryd() as source:
        source.call("migrate.send", {"to": address})

        def committed(d):
            s = d.call("migrate.status")
            return s if s["phase"] in ("committed", "refused", "failed") else None

        for d, role in ((source, "source"), (ferryd, "target")):
            status = wait_for(lambda: committed(d), 20, what=f"the {role} to finish")
            assert (status["role"], status["phase"]) == (role, "committed"), status
            t = Telemetry(d.prefix)
            try:
                shown = t.query("/ferry/migration")
            finally:
                t.close()
            assert shown == telemetry_form(status)
            assert any(k.startswith("steps_ms_") for k in shown), shown
            assert float(shown["pause_ms"]) > 0 and shown["stream_bytes"] > 0
