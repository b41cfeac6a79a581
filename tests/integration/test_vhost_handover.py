"""Live upgrade with vhost-user ports: the running ferryd hands each port's connection to its
successor (control/vhost_handover.h), so the front-end (here testpmd's virtio-user ports,
standing for QEMU) never sees its back-end go away, whichever side made the socket.
"""
import copy
import os

import pytest

from ferry_harness import Ferryd, wait_for
from vhost_util import (aim_unicast, assert_counters_match, links, run_traffic, snapshot,
                        start_ferryd, start_peer, wait_links)

PAIRS = [("vm1", 0), ("vm2", 1)]


def sockets(d, names=("vm1", "vm2")):
    return [d.path(f"{n}.sock") for n in names]


def successor(procs, d):
    """A ferryd with d's configuration and control socket, taking over from d."""
    s = Ferryd()
    s.config = copy.deepcopy(d.config)
    s.socket = d.socket
    s.args = ["--takeover", d.socket + ".takeover"]
    procs.add(s)
    return s


def forwarded(d):
    return sum(d.port_stats(n)["tx_packets"] for n, _ in PAIRS)


@pytest.mark.parametrize("mode", ["client", "server"])
def test_live_upgrade_keeps_vhost_connections_up(procs, mode):
    """ferryd's ports in client mode (the peer's virtio-user ports are servers, as QEMU with
    `server=on`) or in server mode (the peer connects, and a virtio-user client never
    reconnects by itself). Sends: unicast both ways between the peer's two ports, without pause,
    while a successor
    ferryd takes over. Expects: the old ferryd hands both connections over and exits 0; the
    successor adopts both; the peer's ports never go down (virtio-user logs "is down" when its
    back-end closes) and it never negotiates again; the traffic the peer started before the
    upgrade goes on through the successor, which forwards it and drops nothing."""
    d = start_ferryd(procs, mode=mode)
    pmd = start_peer(procs, sockets(d), server=mode == "client")
    wait_links(d, "up")
    aim_unicast(pmd)
    pmd.cmd("start tx_first 8")
    wait_for(lambda: forwarded(d) > 10000, 10, what="traffic through the first ferryd")
    pmd_log_before = len(pmd.output)

    new = successor(procs, d).start()
    wait_for(lambda: d.proc.poll() is not None, 30, what="the old ferryd to exit")
    assert d.proc.returncode == 0, d.read_log()[-3000:]
    old_log, new_log = d.read_log(), new.read_log()
    for name, _ in PAIRS:
        assert f"port {name}: vhost-user connection handed to the successor" in old_log, old_log
        assert f"port {name}: adopted the predecessor's vhost-user connection" in new_log, new_log
    assert links(new) == {"vm1": "up", "vm2": "up"}

    # The traffic started before the upgrade goes on through the successor, untouched.
    first = forwarded(new)
    wait_for(lambda: forwarded(new) > first + 10000, 10, what="traffic through the successor")
    pmd.cmd("stop")
    out = pmd.output[pmd_log_before:].decode(errors="replace")
    assert "is down" not in out and "link state change" not in out.lower(), out[-3000:]
    assert pmd.link_up(0) and pmd.link_up(1)
    for name, _ in PAIRS:
        stats = new.port_stats(name)
        assert stats["rx_packets"] > 0 and stats["tx_packets"] > 0, stats
        assert not any(stats["drops"].values()), stats


def test_successor_dying_with_the_connections_lets_the_old_one_reconnect(procs):
    """The successor dies right after RELEASE (FERRY_TEST_TAKEOVER_DIE_AFTER_RELEASE, test
    only), the handed connections with it. Expects: the peer sees its back-end go away once,
    the old ferryd reopens its ports, the peer reconnects to it, and traffic started anew
    flows through the old ferryd with exact counters: one owner of every port, forwarding."""
    d = start_ferryd(procs, mode="client")
    pmd = start_peer(procs, sockets(d), server=True)
    wait_links(d, "up")
    aim_unicast(pmd)
    run_traffic(pmd, 0.3)

    s = successor(procs, d)
    s.env = dict(os.environ, FERRY_TEST_TAKEOVER_DIE_AFTER_RELEASE="1")
    try:
        s.start(timeout=15)
    except RuntimeError:
        pass  # it died, as asked
    wait_for(lambda: "ports reopened, going on" in d.read_log(), 30,
             what="the old ferryd to reopen its ports")
    assert "vhost-user connection handed to the successor" in d.read_log()
    assert d.proc.poll() is None
    wait_links(d, "up")  # the peer's server took the old ferryd's new connection
    before = snapshot(d, pmd, PAIRS)
    run_traffic(pmd, 1.0)
    assert_counters_match(before, snapshot(d, pmd, PAIRS))
