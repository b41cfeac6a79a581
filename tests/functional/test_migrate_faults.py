"""A live migration broken at every point of its exchange (migrate_faults.FaultProxy between the
source A and the target B, or a ferryd killed with SIGKILL while the target's answer is held).
Before each fault A holds one ESTABLISHED connection (test_migrate_file.source_with_connection);
after it, the ct.list of the two ferryd (less timeout_s, which moves with time) is compared, as
JSON text, with A's before: exactly one of them has it, byte for byte, the other has nothing,
and the one that has it forwards the connection's next packet.

Faults before the target has the whole stream leave it with A, and so does a target killed
before it could answer (A asks B for the outcome, hears nothing, and keeps it); a lost or late
COMMIT, or a source killed after the target answered, leave it with B.
"""
import json
import os
import signal

import pytest

from ferry_harness import wait_for
from ct_util import bridges
from migrate_faults import FaultProxy
from test_migrate_file import source_with_connection, srv, target
from tls_util import make_pki

ENDS = ("committed", "refused", "failed")


@pytest.fixture
def ctb():
    yield from bridges()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def dump(bridge):
    """ct.list as JSON text, without timeout_s; "" for a ferryd that is not running."""
    if bridge.ferryd.proc is None or bridge.ferryd.proc.poll() is not None:
        return ""
    conns = [{k: v for k, v in c.items() if k != "timeout_s"} for c in bridge.conns()]
    return json.dumps(sorted(conns, key=json.dumps), sort_keys=True)


def end_of(bridge, timeout=30):
    if bridge.ferryd.proc.poll() is not None:
        return None
    return wait_for(lambda: (s := bridge.call("migrate.status"))["phase"] in ENDS and s,
                    timeout, what="the migration's end")


def kill(bridge):
    bridge.ferryd.proc.send_signal(signal.SIGKILL)
    bridge.ferryd.proc.wait(10)


# (fault, pre-copy, who has the connection afterwards)
CASES = [
    ("connect", False, "A"),
    ("handshake", False, "A"),
    ("section:PORT", False, "A"),
    ("section:CONNECTIONS_IPV4", False, "A"),  # the connection is IPv4
    ("section:CONNECTIONS_IPV4", True, "A"),  # the pre-copy's: B had placed nothing yet
    ("section:TRAILER", False, "A"),
    ("precopy_end", True, "A"),
    ("ready", True, "A"),
    ("delta", True, "A"),
    ("commit_lost", False, "B"),
    ("commit_late", False, "B"),
    ("target_killed", False, "A"),
    ("source_killed", False, "B"),
]


@pytest.mark.parametrize("fault,precopy,owner", CASES,
                         ids=[c[0] + ("+precopy" if c[1] else "") for c in CASES])
def test_one_owner_after_a_fault(ctb, pki, tmp_path, fault, precopy, owner):
    """Sends A's connection to B through the proxy with the fault (handshake: over TCP with
    TLS, the rest over unix sockets). Expects A's and B's connections, afterwards, to be
    A's before on exactly one of them and nothing on the other, and that one to forward."""
    a = source_with_connection(ctb)
    before = dump(a)
    assert before.count('"sport": 40001') == 1, before
    b = target(ctb)
    b.start()
    tls = fault == "handshake"
    recv = ({"listen": "tcp:127.0.0.1:0", "tls_creds": pki["b"], "tls_peer": "ferry-a"} if tls
            else {"listen": f"unix:{b.ferryd.path('b.sock')}"})
    upstream = b.call("migrate.receive", dict(recv, timeout_s=10))["address"]
    proxy_fault = {"target_killed": "hold_trailer",
                   "source_killed": "hold_answer"}.get(fault, fault)
    proxy = FaultProxy("tcp" if tls else f"unix:{tmp_path / 'proxy.sock'}", upstream,
                       proxy_fault)
    try:
        send = {"to": proxy.address, "timeout_s": 3, "precopy": precopy}
        if tls:
            send["tls_creds"] = pki["a"]
        a.call("migrate.send", send)
        if fault.endswith("_killed"):
            held = proxy.trailer_held if fault == "target_killed" else proxy.answer_held
            assert held.wait(20), "the stream or its answer never came"
            kill(b if fault == "target_killed" else a)
            proxy.release()
        src, dst = end_of(a), end_of(b)
    finally:
        proxy.close()
    after = {"A": dump(a), "B": dump(b)}
    other = "B" if owner == "A" else "A"
    how = "A %s, B %s, proxy saw %s; after: %s" % (
        src and (src["phase"], src.get("error")), dst and (dst["phase"], dst.get("error")),
        proxy.seen, after)
    assert proxy.fired, how
    assert after[owner] == before, how
    assert after[other] in ("", "[]"), how
    # The phases agree: committed on the side that has it, refused or failed on the other.
    for st, has_it in ((src, owner == "A"), (dst, owner == "B")):
        if st is not None:
            assert (st["phase"] == "committed") == (has_it == (st is dst)), how
    # The owner forwards the connection's next packet (the server's, to the inside).
    has = a if owner == "A" else b
    reply = srv(40001, "PA", 5011, 1011, b"after " + fault.encode())
    has.phase([reply], out={"inside": [reply]})
    assert os.path.exists(has.ferryd.socket)
