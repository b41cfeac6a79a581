"""Live upgrade: a second ferryd started with --takeover takes the running one's state, control
socket and ports over. The established connection goes on through the new ferryd with no new
handshake, unsolicited segments are still dropped, the old ferryd exits cleanly, and clients
keep the same control socket path throughout.
"""
import os
import re
import time

import pytest

from ferry_harness import RpcClient, wait_for
from takeover_peer import HELLO, TakeoverPeer
from ct_util import bridges
from test_migrate_file import cli, continue_on, source_with_connection, target


@pytest.fixture
def ctb():
    yield from bridges()


def successor_of(ctb, a):
    """A ferryd with A's rules, ports (by name) and control socket, taking over from A."""
    b = target(ctb)
    b.ferryd.config["control"]["socket"] = a.ferryd.socket
    b.ferryd.socket = a.ferryd.socket
    b.ferryd.args = ["--takeover", a.ferryd.socket + ".takeover"]
    return b


def test_live_upgrade_keeps_established_connections(ctb):
    a = source_with_connection(ctb)
    b = successor_of(ctb, a)
    b.start()
    wait_for(lambda: a.ferryd.proc.poll() is not None, 30, what="the old ferryd to exit")
    assert a.ferryd.proc.returncode == 0, a.ferryd.read_log()
    assert "took over 1 connections" in b.ferryd.read_log()
    assert "the successor runs; 1 connections handed over, exiting" in a.ferryd.read_log()
    # A new client on the same path reaches the new ferryd, which has the connection.
    client = RpcClient(a.ferryd.socket)
    assert client.call("ct.stats")["connections"] == 1
    client.close()
    assert b.conn(sport=40001)["state"] == "ESTABLISHED"
    continue_on(b)


def test_successor_that_cannot_take_the_state_leaves_the_old_one_running(ctb):
    """Checked before the point of no return: a successor whose configuration lacks one of the
    running switch's ports aborts, and the old ferryd goes on as it was."""
    a = source_with_connection(ctb)
    b = ctb()  # without A's phase ports
    b.ferryd.config["control"]["socket"] = a.ferryd.socket
    b.ferryd.socket = a.ferryd.socket
    b.ferryd.args = ["--takeover", a.ferryd.socket + ".takeover"]
    with pytest.raises(RuntimeError) as e:
        b.start()
    assert "is not in this configuration" in str(e.value)
    assert a.ferryd.proc.poll() is None
    assert "the successor gave up" in a.ferryd.read_log()
    assert a.state(sport=40001) == "ESTABLISHED"
    data = cli(40001, "PA", 1011, 5011, b"still A")
    a.phase([data], out={"outside": [data]})


def forwards_then_hands_over(ctb, a):
    """A still forwards its tracked connection (lan3 -> outside), then a real successor takes
    over: A exits 0 and the connection is ESTABLISHED on the successor."""
    data = cli(40001, "PA", 1011, 5011, b"still A")
    a.phase([data], out={"outside": [data]})  # lan3
    assert a.state(sport=40001) == "ESTABLISHED"
    b = successor_of(ctb, a)
    b.port("lan3")
    b.start()
    wait_for(lambda: a.ferryd.proc.poll() is not None, 30, what="the old ferryd to exit")
    assert a.ferryd.proc.returncode == 0, a.ferryd.read_log()
    assert b.conn(sport=40001)["state"] == "ESTABLISHED"


def wait_going_on(a):
    """The old ferryd took its ports back by itself and still serves its control socket."""
    wait_for(lambda: "ports reopened, going on" in a.ferryd.read_log(), 30,
             what="the old ferryd to reopen its ports")
    assert a.ferryd.proc.poll() is None, a.ferryd.read_log()


def forwards_again(a, cport=40001, seq=1011, ack=5011):
    """A new segment of the connection, in on a fresh port, goes out on A's "outside" port
    (its reopened devices count from zero; the pcap ports' rx files replay first)."""
    def tx_outside():
        return a.stats("outside")["tx_packets"]
    settled = []

    def steady():
        settled.append(tx_outside())
        return len(settled) >= 3 and settled[-1] == settled[-3]
    wait_for(steady, 10, what="the reopened ports' rx files to be replayed")
    base = settled[-1]
    data = cli(cport, "PA", seq, ack, b"after the successor died")
    a.add_port("lan9", [data])
    wait_for(lambda: tx_outside() == base + 1, 10, what="the segment to be forwarded")
    c = a.conn(sport=cport)
    assert c["state"] == "ESTABLISHED", c


def test_successor_dying_after_the_release_lets_the_old_one_go_on(ctb):
    """The successor dies right after RELEASE (FERRY_TEST_TAKEOVER_DIE_AFTER_RELEASE, test
    only), before it opened anything. Expects the old ferryd, with no one running --restore,
    to reopen its ports and forward the same connection again, on the same control socket."""
    a = source_with_connection(ctb)
    b = successor_of(ctb, a)
    b.ferryd.env = dict(os.environ, FERRY_TEST_TAKEOVER_DIE_AFTER_RELEASE="1")
    with pytest.raises(RuntimeError):
        b.start()
    wait_going_on(a)
    client = RpcClient(a.ferryd.socket)
    assert client.call("ct.stats")["connections"] == 1
    client.close()
    forwards_again(a)
    # And the next upgrade goes through.
    c = successor_of(ctb, a)
    c.port("lan9")
    c.start()
    wait_for(lambda: a.ferryd.proc.poll() is not None, 30, what="the old ferryd to exit")
    assert c.conn(sport=40001)["state"] == "ESTABLISHED"


def test_successor_failing_after_the_release_lets_the_old_one_go_on(ctb):
    """Past the point of no return (the old ferryd released its ports), a successor that cannot
    install the state (zone 1 limited to one connection, A has two) fails; once it exited the
    old one reopens its ports and goes on with both connections."""
    a = source_with_connection(ctb)
    a.phase([cli(40002, "S", 3000)], out={"outside": [cli(40002, "S", 3000)]})  # lan3
    b = successor_of(ctb, a)
    b.port("lan3")
    b.ferryd.config["conntrack"]["zones"] = [{"zone": 1, "limit": 1}]
    with pytest.raises(RuntimeError) as e:
        b.start()
    assert "its limit is 1" in str(e.value)
    wait_going_on(a)
    assert sorted(x["orig"]["sport"] for x in a.conns()) == [40001, 40002]
    forwards_again(a)


def answer_seconds(a):
    """How long a control request (ct.stats) takes to be answered."""
    t0 = time.monotonic()
    a.call("ct.stats")
    return time.monotonic() - t0


def test_clients_that_say_nothing_do_not_hold_the_control_thread(ctb):
    """Same-uid clients connect to the takeover socket and stay: four send nothing, one half a
    hello, then two more (more than wait for their hello at once). Expects every control request
    meanwhile answered within 0.5 s, the switch to forward a new segment, and a real successor
    started while they sit there to take over; the silent ones are closed, saying so."""
    a = source_with_connection(ctb)
    path = a.ferryd.socket + ".takeover"
    peers = [TakeoverPeer(path) for _ in range(5)]
    peers[1].send(HELLO[:7])
    took = []
    until = time.monotonic() + 2.0
    while time.monotonic() < until:
        took.append(answer_seconds(a))
        time.sleep(0.1)
    peers += [TakeoverPeer(path) for _ in range(2)]
    took.append(answer_seconds(a))
    assert max(took) < 0.5, took
    forwards_then_hands_over(ctb, a)
    log = a.ferryd.read_log()
    assert "takeover: closed pid" in log, log
    for p in peers:
        assert p.answer() == b""
        p.close()


def test_successor_that_stalls_before_release_lets_the_old_one_go_on(ctb):
    """A successor reads the state and the control socket, then says nothing. Expects a second
    one refused meanwhile (one hand-over at a time), the old ferryd to resume its workers once
    the bound for RELEASE passed (logged) and to forward again, a late RELEASE refused (the
    connection is closed, no RELEASED, the ports stay), and a real successor to take over."""
    a = source_with_connection(ctb)
    path = a.ferryd.socket + ".takeover"
    stalled = TakeoverPeer(path)
    assert stalled.read_state() > 0
    t0 = time.monotonic()
    second = TakeoverPeer(path)
    second.send(HELLO)
    assert second.answer() == b""
    wait_for(lambda: "is in progress" in a.ferryd.read_log(), 5, what="the refusal's log line")
    wait_for(lambda: "did not say RELEASE" in a.ferryd.read_log(), 30,
             what="the old ferryd to give the successor up")
    waited = time.monotonic() - t0
    m = re.search(r"did not say RELEASE within ([0-9.]+) s", a.ferryd.read_log())
    assert m and waited < float(m.group(1)) + 2.0, (waited, a.ferryd.read_log())
    try:
        stalled.send(b"RELEASE\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused as well: the connection is closed
    assert stalled.answer() == b""
    stalled.close()
    assert "ports released" not in a.ferryd.read_log()
    assert a.ferryd.proc.poll() is None
    forwards_then_hands_over(ctb, a)
