"""Live upgrade: a second ferryd started with --takeover takes the running one's state, control
socket and ports over. The established connection goes on through the new ferryd with no new
handshake, unsolicited segments are still dropped, the old ferryd exits cleanly, and clients
keep the same control socket path throughout.
"""
import os

import pytest

from ferry_harness import RpcClient, wait_for
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
