"""Live migration between two ferryd over a unix or TCP socket (migrate.receive on the target,
migrate.send on the source, migrate.status on both). The source pauses its workers, sends the
state and waits for the target's commit; the connection then continues on the target with no
new handshake while the source has retired it. Every failure (a target that refuses, dies
mid-stream, or never answers) leaves the source exactly as it was, its workers running.
"""
import socket
import threading
import time

import pytest

from ferry_harness import wait_for
from ct_util import bridges, stateful_rules
from test_migrate_file import cli, continue_on, source_with_connection, srv, target
from tls_util import make_pki


@pytest.fixture
def ctb():
    yield from bridges()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def wait_phase(b, phases=("committed", "refused", "failed"), timeout=20):
    return wait_for(lambda: (s := b.call("migrate.status"))["phase"] in phases and s,
                    timeout, what=f"migration to end ({phases})")


def comparable(conns):
    """ct.list entries without the fields that move with time."""
    return sorted(({k: v for k, v in c.items() if k != "timeout_s"} for c in conns),
                  key=lambda c: (c["orig"]["sport"], c["zone"]))


@pytest.mark.parametrize("transport,precopy", [("unix", False), ("tls", False), ("tls", True),
                                               ("tcp-insecure", False), ("unix", True)])
def test_connection_moves_and_continues(ctb, pki, transport, precopy):
    """tls: TCP with TLS 1.3, each side's certificate checked (docs/migration.md); tcp-insecure:
    clear TCP, the operator's explicit choice."""
    a = source_with_connection(ctb)
    b = target(ctb)
    b.start()
    recv = {"unix": {"listen": f"unix:{b.ferryd.path('migrate.sock')}"},
            "tls": {"listen": "tcp:127.0.0.1:0", "tls_creds": pki["b"], "tls_peer": "ferry-a"},
            "tcp-insecure": {"listen": "tcp-insecure:127.0.0.1:0"}}[transport]
    address = b.call("migrate.receive", dict(recv, timeout_s=20))["address"]
    if transport != "unix":
        scheme = "tcp-insecure:" if transport == "tcp-insecure" else "tcp:"
        assert address.startswith(scheme + "127.0.0.1:") and not address.endswith(":0"), address
    creds = {"tls_creds": pki["a"]} if transport == "tls" else {}
    sent = a.call("migrate.send", dict({"to": address, "precopy": precopy}, **creds))
    assert sent["connections"] == 1, sent
    assert sent["phase"] == ("precopy" if precopy else "sending"), sent
    src = wait_phase(a)
    dst = wait_phase(b)
    assert src["phase"] == "committed" and dst["phase"] == "committed", (src, dst)
    assert src["role"] == "source" and dst["role"] == "target"
    assert src["pause_ms"] > 0 and dst["pause_ms"] > 0
    assert 0 < src["steps_ms"]["connect"] <= src["steps_ms"]["send"], src  # TLS: the handshake
    assert dst["connections"] == 1 and dst["bytes_done"] == src["stream_bytes"]
    if precopy:  # nothing changed between the pre-copy and the pause
        assert src["delta_connections"] == 0 and src["gone"] == 0, src
    assert a.conns() == []  # retired on the source, quietly
    a.finish()
    a.check_outputs()  # nothing was sent by the source when it retired the connection
    continue_on(b)


def test_refused_stream_leaves_the_source_as_it_was(ctb):
    a = source_with_connection(ctb)
    before = comparable(a.conns())
    b = ctb(rules=stateful_rules())  # without A's ports: the stream cannot be installed
    b.start()
    address = b.call("migrate.receive", {"listen": f"unix:{b.ferryd.path('m.sock')}"})["address"]
    a.call("migrate.send", {"to": address})
    src = wait_phase(a)
    assert src["phase"] == "refused" and "lan1" in src["error"], src
    assert wait_phase(b)["phase"] == "refused"
    assert b.conns() == []
    assert comparable(a.conns()) == before
    # A's workers run again: the connection goes on there.
    data = cli(40001, "PA", 1011, 5011, b"still A")
    a.phase([data], out={"outside": [data]})


def fake_target(path, behaviour):
    """A unix socket that takes one connection and then: "close_early" reads 100 bytes and
    closes; "silent" reads the whole stream and never answers."""
    srv_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv_sock.bind(path)
    srv_sock.listen(1)

    def run():
        conn, _ = srv_sock.accept()
        if behaviour == "close_early":
            conn.recv(100)
            conn.close()
        else:
            conn.settimeout(5)
            try:
                while conn.recv(65536):
                    pass
            except socket.timeout:
                pass
            time.sleep(5)
            conn.close()
        srv_sock.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("behaviour", ["close_early", "silent"])
def test_target_dying_or_silent_leaves_the_source_as_it_was(ctb, behaviour, tmp_path):
    a = source_with_connection(ctb)
    before = comparable(a.conns())
    stats_before = a.call("ct.stats")["connections"]
    path = str(tmp_path / "fake.sock")
    fake_target(path, behaviour)
    a.call("migrate.send", {"to": f"unix:{path}", "timeout_s": 2})
    src = wait_phase(a)
    assert src["phase"] == "failed", src
    assert comparable(a.conns()) == before
    assert a.call("ct.stats")["connections"] == stats_before
    reply = srv(40001, "PA", 5011, 1011, b"A goes on")
    a.phase([reply], out={"inside": [reply]})


def test_a_to_b_to_a(ctb):
    a = source_with_connection(ctb)
    b = target(ctb)
    b.start()
    address = b.call("migrate.receive", {"listen": f"unix:{b.ferryd.path('b.sock')}"})["address"]
    a.call("migrate.send", {"to": address})
    assert wait_phase(a)["phase"] == "committed"
    assert wait_phase(b)["phase"] == "committed"
    reply = srv(40001, "PA", 5011, 1011, b"on B")
    b.phase([reply], out={"inside": [reply]})
    # Back to A, which listens now: the client's port's state (B has a port A lacks, wan3, so
    # the whole switch's stream would be refused).
    back = a.call("migrate.receive", {"listen": f"unix:{a.ferryd.path('a.sock')}"})["address"]
    b.call("migrate.send", {"to": back, "port": "lan1"})
    assert wait_phase(b)["phase"] == "committed"
    assert wait_phase(a)["phase"] == "committed"
    assert b.conns() == []
    c = a.conn(sport=40001)
    assert c["state"] == "ESTABLISHED" and c["packets"][1] == 3, c  # B's reply counted
    more = cli(40001, "PA", 1011, 5015, b"back on A")
    a.phase([more], out={"outside": [more]})


def test_one_migration_at_a_time(ctb):
    b = target(ctb)
    b.start()
    b.call("migrate.receive", {"listen": f"unix:{b.ferryd.path('x.sock')}", "timeout_s": 30})
    from ferry_harness import RpcError
    with pytest.raises(RpcError) as e:
        b.call("migrate.receive", {"listen": f"unix:{b.ferryd.path('y.sock')}"})
    assert e.value.code == -32001
    with pytest.raises(RpcError) as e:
        b.call("migrate.send", {"to": "tcp-insecure:nosuchhost.invalid:1"})
    assert e.value.code == -32001


def test_ferryctl_migrate_verbs(ctb, tmp_path):
    """ferryctl migrate receive / send (progress until committed, exit 0) / status, and
    migrate save / load; a send that fails is exit 1 with the reason."""
    import subprocess
    from ferry_harness import FERRYCTL

    def ctl(b, *args):
        return subprocess.run([FERRYCTL, "-s", b.ferryd.socket, *args], capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)

    a = source_with_connection(ctb)
    b = target(ctb)
    b.start()
    r = ctl(b, "migrate", "receive", f"unix:{b.ferryd.path('c.sock')}", "timeout_s=20")
    assert r.returncode == 0 and "listening" in r.stdout, r.stderr
    r = ctl(a, "migrate", "send", f"unix:{b.ferryd.path('c.sock')}")
    assert r.returncode == 0, r.stderr
    assert "migrate: committed" in r.stderr and "committed" in r.stdout, (r.stdout, r.stderr)
    wait_phase(b)
    r = ctl(b, "--json", "migrate", "status")
    assert '"phase": "committed"' in r.stdout and '"role": "target"' in r.stdout, r.stdout
    r = ctl(b, "migrate", "save", str(tmp_path / "b.bin"))
    assert r.returncode == 0 and "connections" in r.stdout, r.stderr
    r = ctl(a, "migrate", "load", str(tmp_path / "b.bin"))  # back to A through a file
    assert r.returncode == 0 and "connections:      1" in r.stdout, (r.stdout, r.stderr)
    r = ctl(a, "migrate", "load", str(tmp_path / "b.bin"))
    assert r.returncode == 1 and "clashes" in r.stderr, r.stderr
    r = ctl(a, "migrate", "send", f"unix:{tmp_path / 'nobody.sock'}", "timeout_s=1")
    assert r.returncode == 1 and "failed" in r.stdout, (r.stdout, r.stderr)
    r = ctl(a, "migrate", "send")
    assert r.returncode == 64
    # A held pre-copy: send returns once held, continue follows it to the commit (B -> A, the
    # connection is on A since the load above: flush A's copy, move B's).
    assert ctl(a, "migrate", "continue").returncode == 1  # nothing held
    a.call("ct.flush")
    r = ctl(a, "migrate", "receive", f"unix:{a.ferryd.path('h.sock')}", "timeout_s=20")
    assert r.returncode == 0, r.stderr
    r = ctl(b, "migrate", "send", f"unix:{a.ferryd.path('h.sock')}", "precopy=true", "hold=true")
    assert r.returncode == 0 and "held after the pre-copy" in r.stderr, (r.stdout, r.stderr)
    assert b.call("migrate.status")["phase"] == "ready"
    r = ctl(b, "migrate", "continue")
    assert r.returncode == 0 and "migrate: committed" in r.stderr, (r.stdout, r.stderr)
    assert b.conns() == [] and [c["orig"]["sport"] for c in a.conns()] == [40001]


def test_precopy_sends_what_changed_meanwhile(ctb):
    """With pre-copy the target places the connections ahead, dormant: their packets are dropped
    there (ct_migrating) until the commit. What changes on the source between the pre-copy and
    the pause (held open 2 s by settle_ms) is sent with the workers paused: a connection that
    carried more data (its new counters), one opened meanwhile, one that ended (flushed)."""
    a = source_with_connection(ctb)  # 40001 ESTABLISHED; ports lan1, wan1, lan2, wan2
    a.phase([cli(40002, "S", 3000)], out={"outside": [cli(40002, "S", 3000)]})  # on lan3
    b = target(ctb)
    b.port("lan3")
    b.seq = {"lan": 3, "wan": 2}
    b.start()
    address = b.call("migrate.receive", {"listen": f"unix:{b.ferryd.path('p.sock')}"})["address"]
    a.call("migrate.send", {"to": address, "precopy": True, "settle_ms": 2000})
    wait_for(lambda: a.call("migrate.status")["phase"] == "precopy_sent", 10,
             what="the pre-copy to be taken")
    more = cli(40001, "PA", 1011, 5011, b"meanwhile")
    a.phase([more], out={"outside": [more]})                                  # lan4
    a.phase([cli(40003, "S", 9000)], out={"outside": [cli(40003, "S", 9000)]})  # lan5
    assert a.call("ct.flush", {"port": "lan3"}) == {"flushed": 1}
    early = srv(40001, "PA", 5011, 1020, b"too early")
    b.phase([early], drops={"ct_migrating": 1})  # wan3: dormant on B until the commit
    src, dst = wait_phase(a), wait_phase(b)
    assert src["phase"] == "committed" and dst["phase"] == "committed", (src, dst)
    assert (src["delta_connections"], src["gone"]) == (2, 1), src
    assert a.conns() == []
    moved = {c["orig"]["sport"]: c for c in b.conns()}
    assert sorted(moved) == [40001, 40003], moved
    assert moved[40001]["packets"] == [4, 2] and moved[40001]["state"] == "ESTABLISHED"
    assert moved[40003]["state"] == "SYN_SENT"
    reply = srv(40001, "PA", 5011, 1020, b"after the commit")
    b.phase([reply], out={"inside": [reply]})


def held_migration(ctb, timeout_s=30):
    """A (40001 ESTABLISHED) sends its pre-copy to B with hold=true. @return (a, b)"""
    a = source_with_connection(ctb)
    b = target(ctb)
    b.start()
    address = b.call("migrate.receive", {"listen": f"unix:{b.ferryd.path('h.sock')}"})["address"]
    with pytest.raises(Exception, match="hold needs precopy"):
        a.call("migrate.send", {"to": address, "hold": True})
    a.call("migrate.send", {"to": address, "precopy": True, "hold": True, "timeout_s": timeout_s})
    return a, b


def test_held_precopy_waits_for_continue(ctb):
    """hold=true: after the target took the pre-copy the source waits in phase ready, its
    workers forwarding, for as long as an orchestrator needs (a VM's RAM copy); what changed
    meanwhile goes with the workers paused after migrate.continue."""
    a, b = held_migration(ctb)
    wait_phase(a, ("ready",))
    time.sleep(0.5)  # held: nothing is paused or committed meanwhile
    assert a.call("migrate.status")["phase"] == "ready"
    assert b.call("migrate.status")["phase"] not in ("committed", "failed")
    more = cli(40001, "PA", 1011, 5011, b"while held")
    a.phase([more], out={"outside": [more]})  # A forwards while held
    assert [c["dormant"] for c in b.conns()] == [True]
    assert a.call("migrate.continue") == {"phase": "continuing"}
    src, dst = wait_phase(a), wait_phase(b)
    assert src["phase"] == "committed" and dst["phase"] == "committed", (src, dst)
    assert src["delta_connections"] == 1 and src["steps_ms"]["held"] >= 500, src
    assert a.conns() == []
    moved = b.conns()
    assert len(moved) == 1 and not moved[0]["dormant"] and moved[0]["packets"][0] == 4, moved


def test_held_precopy_cancelled_changes_nothing(ctb):
    a, b = held_migration(ctb)
    before = comparable(a.conns())
    wait_phase(a, ("ready",))
    assert [c["dormant"] for c in b.conns()] == [True]
    assert a.call("migrate.cancel") == {"phase": "cancelling"}
    src, dst = wait_phase(a), wait_phase(b)
    assert src["phase"] == "failed" and "cancelled" in src["error"], src
    assert dst["phase"] == "failed", dst
    assert comparable(a.conns()) == before  # the source as it was
    assert b.conns() == []  # what the target placed ahead is gone
    with pytest.raises(Exception, match="no migration is held"):
        a.call("migrate.cancel")
    # Both free for the next migration, which goes through.
    address = b.call("migrate.receive", {"listen": f"unix:{b.ferryd.path('d.sock')}"})["address"]
    a.call("migrate.send", {"to": address})
    assert wait_phase(a)["phase"] == "committed"
    assert [c["orig"]["sport"] for c in b.conns()] == [40001]


def test_held_precopy_gives_up_at_its_time_limit(ctb):
    a, b = held_migration(ctb, timeout_s=2)
    before = comparable(a.conns())
    src = wait_phase(a, timeout=10)
    assert src["phase"] == "failed" and "no migrate.continue" in src["error"], src
    assert wait_phase(b)["phase"] == "failed"
    assert comparable(a.conns()) == before and b.conns() == []


def test_cancel_stops_a_listening_target(ctb):
    b = target(ctb)
    b.start()
    b.call("migrate.receive", {"listen": f"unix:{b.ferryd.path('l.sock')}", "timeout_s": 60})
    assert b.call("migrate.cancel") == {"phase": "cancelling"}
    st = wait_phase(b, timeout=5)
    assert st["phase"] == "failed" and st["error"] == "cancelled by migrate.cancel", st
    # Free again: the next migration is received.
    a = source_with_connection(ctb)
    address = b.call("migrate.receive", {"listen": f"unix:{b.ferryd.path('m.sock')}"})["address"]
    a.call("migrate.send", {"to": address})
    assert wait_phase(b)["phase"] == "committed"
    with pytest.raises(Exception, match="no migration is held"):
        b.call("migrate.cancel")
