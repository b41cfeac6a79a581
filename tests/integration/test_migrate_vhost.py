"""A VM's connection state moves with it, end to end over vhost-user: two ferryd on one host run a
stateful firewall (only established return traffic comes in); dpdk-testpmd virtio-user peers
stand in for the VM (inside, port vm1) and the world (outside, port vm2).

The inside peer opens a UDP connection through ferryd A and the outside peer answers it. Then
either the port's state moves to ferryd B (migrate.receive / migrate.send port=vm1) and the
peers reconnect to B, or A is replaced in place by a successor started with --takeover and the
peers reconnect to the same sockets. Either way the new ferryd forwards the established return
traffic with no new handshake (the connection it got goes on: no connection is created, its
packet counters continue), and an unsolicited packet from outside is still dropped. The control:
the same return traffic sent to A after the move is dropped, since A no longer has the state.

Traffic is testpmd's tx-only packet generator, one tuple per testpmd process (--tx-ip/--tx-udp
are global), fired as a fixed number of bursts with "start tx_first N" from rxonly mode, so every
count is exact. A peer only polls while an exchange runs, so the two cores are not kept busy.

A one-port stream names the moved port first and then the others its connections use, so on B
the connection keeps both of its ports (ct.list "ports": ["vm1", "vm2"]).
"""
import os
import shutil

from ferry_harness import RUNTIME, Ferryd, wait_for
from vhost_util import start_peer, vhost_port, wait_links

INSIDE = ("10.0.0.1", 1000)          # the VM behind vm1
OUTSIDE = ("198.51.100.7", 2000)     # the server it talks to, behind vm2
STRANGER = ("198.51.100.7", 2001)    # the same host from a port the VM never talked to
BURST, BURSTS = 32, 2
N = BURST * BURSTS                   # packets per exchange

# Rule ids, so that hit counters can be checked.
R_CT, R_INV, R_NEW, R_EST_ORIG, R_EST_REPLY, R_DEFAULT = 1, 10, 11, 12, 13, 19
RULES = [
    {"id": R_CT, "priority": 10, "match": {"eth_type": "ipv4"}, "actions": ["ct(zone=1,table=1)"]},
    {"id": R_INV, "table": 1, "priority": 30, "match": {"ct_state": "+trk+inv"},
     "actions": ["drop"]},
    {"id": R_NEW, "table": 1, "priority": 20, "match": {"in_port": "vm1", "ct_state": "+trk+new"},
     "actions": ["ct(zone=1,commit)", "output:vm2"]},
    {"id": R_EST_ORIG, "table": 1, "priority": 10,
     "match": {"in_port": "vm1", "ct_state": "+trk+est-rpl"}, "actions": ["output:vm2"]},
    {"id": R_EST_REPLY, "table": 1, "priority": 10,
     "match": {"in_port": "vm2", "ct_state": "+trk+est+rpl"}, "actions": ["output:vm1"]},
    {"id": R_DEFAULT, "table": 1, "priority": 0, "actions": ["drop"]},
]


# ---------------------------------------------------------------------------------------------
# ferryd and peers


def firewall(procs, ports_of=None):
    """A ferryd (not started) with ports vm1 (inside) and vm2 (outside) and the firewall; the
    vhost-user sockets are in its own directory, or those of ports_of (a live upgrade reuses
    them)."""
    d = Ferryd(extra={"conntrack": {"capacity": 4096}, "rules": RULES})
    d.config["ports"] = [vhost_port(ports_of or d, n) for n in ("vm1", "vm2")]
    return procs.add(d)


def sock(d, name):
    return next(p["path"] for p in d.config["ports"] if p["name"] == name)


def udp_peer(procs, d, port, src, dst):
    """A testpmd attached to port of d whose generator sends UDP src -> dst (addr, port)."""
    peer = start_peer(procs, [sock(d, port)], fwd_args=[
        "--forward-mode=rxonly", f"--burst={BURST}", "--eth-peer=0,02:00:00:00:00:99",
        f"--tx-ip={src[0]},{dst[0]}", f"--tx-udp={src[1]},{dst[1]}"])
    wait_links(d, "up", [port])
    return peer


def drop_counts(d):
    """{(port, reason): n} of every port, zeros left out."""
    return {(s["name"], r): n for s in d.call("port.stats") for r, n in s["drops"].items() if n}


def exchange(d, sender, receiver, in_port, out_port):
    """The sender fires N packets into in_port while the receiver (attached to out_port, or
    None) listens. Waits until ferryd accounted for every one (received on in_port, then sent
    out of out_port or dropped) and the receiver got every one ferryd sent.
    @return (packets forwarded out of out_port, {(port, reason): drops})"""
    before = {p: d.port_stats(p) for p in (in_port, out_port)}
    drops_before = drop_counts(d)
    peer_before = receiver.port_stats(0)["rx_packets"] if receiver else 0
    sent_before = sender.port_stats(0)["tx_packets"]
    if receiver:
        receiver.cmd("start")
    sender.cmd(f"start tx_first {BURSTS}")  # the bursts are out when the prompt returns
    sender.cmd("stop")
    sent = sender.port_stats(0)["tx_packets"] - sent_before
    assert sent == N, f"the peer sent {sent} packets, not {N}"

    def accounted():
        rx = d.port_stats(in_port)["rx_packets"] - before[in_port]["rx_packets"]
        fwd = d.port_stats(out_port)["tx_packets"] - before[out_port]["tx_packets"]
        now = drop_counts(d)
        drops = {k: v - drops_before.get(k, 0) for k, v in now.items()
                 if v != drops_before.get(k, 0)}
        return rx == N and fwd + sum(drops.values()) == N and (fwd, drops)

    fwd, drops = wait_for(accounted, 10, interval=0.1,
                          what=f"ferryd to handle the {N} packets sent into {in_port}")
    if receiver:
        wait_for(lambda: receiver.port_stats(0)["rx_packets"] - peer_before == fwd, 10,
                 interval=0.1, what=f"the peer on {out_port} to receive {fwd} packets")
        receiver.cmd("stop")
    return fwd, drops


def conns(d):
    return d.call("ct.list")["connections"]


def the_connection(d):
    """ct.list's only entry, checked to be the VM's connection; returns (state, packets, ports:
    the ports its first packet of each direction came in on)."""
    cs = conns(d)
    assert len(cs) == 1, cs
    c = cs[0]
    assert c["zone"] == 1 and c["orig"] == {"src": INSIDE[0], "dst": OUTSIDE[0],
                                            "sport": INSIDE[1], "dport": OUTSIDE[1]}, c
    assert not c["dormant"] and not c["blocked"], c
    return c["state"], c["packets"], c["ports"]


def created(d):
    """Connections created by the workers' commits (not installed from a stream)."""
    return sum(w["created"] for w in d.call("ct.stats")["workers"])


def installed(d):
    """Connections installed from a migration stream."""
    return sum(w["installed"] for w in d.call("ct.stats")["workers"])


def hits(d):
    return {r["id"]: r["packets"] for r in d.call("rule.list") if r["packets"]}


def open_connection(procs, d):
    """The inside peer sends N packets (committed, forwarded out), the outside peer answers with
    N (forwarded in). @return (inside peer, outside peer), both attached to d and stopped."""
    vm = udp_peer(procs, d, "vm1", INSIDE, OUTSIDE)
    server = udp_peer(procs, d, "vm2", OUTSIDE, INSIDE)
    assert exchange(d, vm, server, "vm1", "vm2") == (N, {})
    assert the_connection(d) == ("UDP_UNREPLIED", [N, 0], ["vm1", None])
    assert exchange(d, server, vm, "vm2", "vm1") == (N, {})
    assert the_connection(d) == ("UDP_REPLIED", [N, N], ["vm1", "vm2"])
    assert created(d) == 1
    assert hits(d) == {R_CT: 2 * N, R_NEW: N, R_EST_REPLY: N}
    return vm, server


def check_continues(procs, d, orig_packets, reply_packets):
    """New peers on d's sockets (the VM reconnected): return traffic of the connection passes
    with no drop, the VM's packets pass as established, an unsolicited tuple is dropped; the
    connection d got goes on (no connection is created, its counters continue)."""
    assert created(d) == 0 and installed(d) == 1
    vm = udp_peer(procs, d, "vm1", INSIDE, OUTSIDE)
    server = udp_peer(procs, d, "vm2", OUTSIDE, INSIDE)
    assert exchange(d, server, vm, "vm2", "vm1") == (N, {}), "return traffic was not forwarded"
    assert exchange(d, vm, server, "vm1", "vm2") == (N, {})
    state, packets, ports = the_connection(d)
    assert (state, packets, ports) == ("UDP_REPLIED", [orig_packets + N, reply_packets + N],
                                       ["vm1", "vm2"])
    server.stop()  # one vhost-user frontend per socket: the stranger takes vm2's place
    stranger = udp_peer(procs, d, "vm2", STRANGER, INSIDE)
    assert exchange(d, stranger, vm, "vm2", "vm1") == (0, {("vm2", "rule_drop"): N}), \
        "an unsolicited packet from outside was forwarded"
    assert created(d) == 0 and installed(d) == 1 and d.call("ct.stats")["connections"] == 1
    assert hits(d) == {R_CT: 3 * N, R_EST_REPLY: N, R_EST_ORIG: N, R_DEFAULT: N}
    assert vm.port_stats(0)["rx_packets"] == N  # the return traffic, nothing else


def wait_phase(d):
    return wait_for(lambda: (s := d.call("migrate.status"))["phase"] in
                    ("committed", "refused", "failed") and s, 20, interval=0.1,
                    what="the migration to end")


class RuntimeDirOf:
    """Removes the EAL runtime directory of a --takeover ferryd (its file prefix gets "-<pid>"
    appended, which Ferryd.stop does not know); register before the ferryd itself."""

    def __init__(self, d):
        self.d = d

    def stop(self):
        if self.d.proc is not None:
            shutil.rmtree(os.path.join(RUNTIME, f"{self.d.prefix}-{self.d.proc.pid}"),
                          ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Tests


def test_vm_port_state_moves_to_another_ferryd(procs):
    """Sends: a UDP exchange through A; vm1's state moves to B (pre-copy); return traffic
    again into A, then on B (peers reconnected there) return traffic, the VM's traffic and an
    unsolicited tuple. Expects: both sides committed, the connection gone from A and on B with
    its counters; the return traffic dropped by A (the control) and forwarded by B with no drop
    and no new connection; the unsolicited packets all dropped by B's rules."""
    a = firewall(procs).start()
    vm, server = open_connection(procs, a)

    b = firewall(procs).start()
    address = b.call("migrate.receive", {"listen": f"unix:{b.path('migrate.sock')}",
                                         "timeout_s": 20})["address"]
    sent = a.call("migrate.send", {"to": address, "port": "vm1", "precopy": True})
    assert sent["connections"] == 1, sent
    src, dst = wait_phase(a), wait_phase(b)
    assert src["phase"] == "committed" and dst["phase"] == "committed", (src, dst)
    assert dst["connections"] == 1, dst
    assert conns(a) == [] and a.call("ct.stats")["connections"] == 0
    assert the_connection(b) == ("UDP_REPLIED", [N, N], ["vm1", "vm2"])
    assert [c["orig"]["sport"] for c in b.call("ct.list", {"port": "vm2"})["connections"]] == [
        INSIDE[1]]

    # The control: A has no state any more, so the same return traffic is dropped there.
    assert exchange(a, server, vm, "vm2", "vm1") == (0, {("vm2", "rule_drop"): N})
    vm.stop()
    server.stop()

    check_continues(procs, b, N, N)


def test_live_upgrade_keeps_the_connection(procs):
    """Sends: a UDP exchange through A; a successor with the same configuration and sockets
    takes A over (--takeover) while the peers stay attached; the peers reconnect, then return
    traffic, the VM's traffic and an unsolicited tuple. Expects: A exits with 0 having handed
    the connection over; the successor serves the same control socket, forwards the return
    traffic with no drop and no new connection, and drops all unsolicited packets."""
    a = firewall(procs).start()
    vm, server = open_connection(procs, a)

    b = firewall(procs, ports_of=a)
    procs.items.remove(b)
    procs.add(RuntimeDirOf(b))  # runs after b stopped (teardown goes in reverse)
    procs.add(b)
    b.config["control"]["socket"] = b.socket = a.socket
    b.args = ["--takeover", a.socket + ".takeover"]
    b.start()
    wait_for(lambda: a.proc.poll() is not None, 30, what="the old ferryd to exit")
    assert a.proc.returncode == 0, a.read_log()
    assert "took over 1 connections" in b.read_log()
    assert b.call("ct.stats")["connections"] == 1
    assert the_connection(b) == ("UDP_REPLIED", [N, N], ["vm1", "vm2"])

    # The peers lost their vhost-user connection with A's ports; the VM restarts them.
    vm.stop()
    server.stop()
    check_continues(procs, b, N, N)
