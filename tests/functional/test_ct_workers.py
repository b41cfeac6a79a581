"""Connection tracking with two workers: the two directions of each connection arrive on
different workers (each port's queue is pinned to one), so a connection's packets meet at its
owner only through the hand-off rings.

Setup: ferryd with workers on lcores 1 and 2; port `in` is polled by lcore 1, ports `ret*` by
lcore 2. A stateful firewall admits new TCP connections from `in` and established traffic back.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scapy.layers.inet import IP, TCP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

from pcap_util import PcapBridge, frame, mac, read_pcap, rule  # noqa: E402

CLIENT, SERVER = mac(1), mac(2)
N = 64  # connections: enough that both workers own some


def seg(src, dst, sport, dport, flags, seq, ack=0, smac=CLIENT, dmac=SERVER):
    return frame(Ether(src=smac, dst=dmac) / IP(src=src, dst=dst) /
                 TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=8192))


def pinned(bridge, name, rx, lcore):
    """A pcap port spec whose only rx queue is polled by the worker on `lcore`. Each worker
    has a tx queue of its own, written to its own file: <name>-tx.pcap and <name>-tx1.pcap."""
    spec = bridge._spec(name, rx)
    spec["devargs"] += ",tx_pcap=" + bridge.ferryd.path(f"{name}-tx1.pcap")
    spec["rx_pin"] = [lcore]
    return spec


def sent(bridge, outputs, name):
    """Frames a port sent through either worker's tx queue, in no particular order: a
    connection's packets leave through its owner's queue."""
    return sorted(outputs[name] + read_pcap(bridge.ferryd.path(f"{name}-tx1.pcap")))


def firewall(out_port, back_rules):  # noqa: D401
    """Table 0 tracks IPv4 in zone 1; table 1 commits new connections from `in` and lets
    established packets through; anything else is dropped."""
    return [rule(1, ["ct(zone=1,table=1)"], {"eth_type": "ipv4"}, priority=10),
            rule(2, ["normal"], priority=0),
            rule(10, ["ct(zone=1,commit)", f"output:{out_port}"],
                 {"in_port": "in", "ct_state": "+trk+new-inv"}, table=1, priority=10),
            rule(11, [f"output:{out_port}"], {"in_port": "in", "ct_state": "+trk+est-inv"},
                 table=1, priority=10),
            rule(19, ["drop"], table=1, priority=0)] + back_rules


def handoffs(bridge):
    return {w["worker"]: (w["handoff_out"], w["handoff_in"])
            for w in bridge.call("ct.stats")["workers"]}


def test_directions_on_different_workers_meet_at_the_owner():
    """`in` (worker 0) sends 64 SYNs 10.0.0.1:(20000+i) -> 10.0.0.2:80; then `ret` (worker 1)
    sends the 64 SYN-ACKs and 8 SYN-ACKs of connections that never existed (port 81).

    Expects: the 64 SYNs on `out`; the 64 SYN-ACKs on `in`, in order, and none of the 8; every
    connection in SYN_RECV (a reply seen) with its owner the worker its symmetric hash names,
    which for both sets of packets means hand-offs in both directions.
    """
    b = PcapBridge(workers=(1, 2))
    syns = [seg("10.0.0.1", "10.0.0.2", 20000 + i, 80, "S", 1000 + i) for i in range(N)]
    b.ferryd.config["ports"].append(pinned(b, "in", syns, 1))
    b.ferryd.config["ports"].append(pinned(b, "out", [], 2))
    b.ferryd.config["rules"] = firewall("out", [])
    try:
        b.start()
        b.wait_counts(rx={"in": N}, tx={"out": N})
        conns = b.call("ct.list", {"limit": 1000})["connections"]
        assert len(conns) == N and all(c["state"] == "SYN_SENT" for c in conns)
        owners = {c["worker"] for c in conns}
        assert owners == {0, 1}, f"64 connections should spread over both workers: {owners}"
        after_syn = handoffs(b)
        assert after_syn[0][0] > 0, "worker 0 handed no SYN to worker 1"
        assert after_syn[1][1] == after_syn[0][0]

        synacks = [seg("10.0.0.2", "10.0.0.1", 80, 20000 + i, "SA", 5000 + i, 1001 + i,
                       smac=SERVER, dmac=CLIENT) for i in range(N)]
        bogus = [seg("10.0.0.2", "10.0.0.1", 81, 20000 + i, "SA", 7000 + i, 1001 + i,
                     smac=SERVER, dmac=CLIENT) for i in range(8)]
        # `ret` does not exist before port.add: the rule for the way back names the server.
        b.call("rule.add", {"rule": rule(12, ["output:in"],
                                         {"eth_src": SERVER, "ct_state": "+trk+est-inv"},
                                         table=1, priority=10)})
        b.call("port.add", pinned(b, "ret", synacks + bogus, 2))
        b.wait_counts(rx={"ret": N + 8}, tx={"in": N})
        conns = b.call("ct.list", {"limit": 1000})["connections"]
        assert len(conns) == N
        assert all(c["state"] == "SYN_RECV" and c["packets"] == [1, 1] for c in conns), conns[:3]
        after = handoffs(b)
        assert after[1][0] > 0, "worker 1 handed no SYN-ACK to worker 0"
        out = b.finish()
        assert sent(b, out, "in") == sorted(synacks)
        assert sent(b, out, "out") == sorted(syns)
        assert sum(st["drops"]["rule_drop"] for st in b.final_stats.values()) == 8
    finally:
        b.close()


def test_dnat_reply_reaching_another_worker_is_redirected_to_the_owner():
    """`in` (worker 0) sends 64 SYNs to the virtual address 10.0.0.100:80, translated by
    ct(commit,nat(dst=10.0.0.2:8080)); `ret` (worker 1) sends the server's SYN-ACKs from
    10.0.0.2:8080.

    A DNAT to one address and port leaves no choice of reply tuple, so about half of the replies
    hash to the worker that does not own their connection; that worker holds a redirect the
    owner sent it. Expects: every SYN on `out` addressed to 10.0.0.2:8080, every SYN-ACK on `in`
    translated back to come from 10.0.0.100:80, with valid checksums.
    """
    b = PcapBridge(workers=(1, 2))
    syns = [seg("10.0.0.1", "10.0.0.100", 30000 + i, 80, "S", 1000 + i) for i in range(N)]
    b.ferryd.config["ports"].append(pinned(b, "in", syns, 1))
    b.ferryd.config["ports"].append(pinned(b, "out", [], 2))
    b.ferryd.config["rules"] = [
        rule(1, ["ct(zone=1,nat,table=1)"], {"eth_type": "ipv4"}, priority=10),
        rule(2, ["normal"], priority=0),
        rule(10, ["ct(zone=1,commit,nat(dst=10.0.0.2:8080))", "output:out"],
             {"in_port": "in", "ct_state": "+trk+new-inv"}, table=1, priority=10),
        rule(19, ["drop"], table=1, priority=0)]
    try:
        b.start()
        b.wait_counts(rx={"in": N}, tx={"out": N})
        stats = b.call("ct.stats")
        foreign = sum(w["foreign_reply"] for w in stats["workers"])
        redirects = sum(w["redirects"] for w in stats["workers"])
        assert 0 < foreign < N, f"expected some replies to hash to the other worker: {foreign}"
        assert redirects == foreign

        synacks = [seg("10.0.0.2", "10.0.0.1", 8080, 30000 + i, "SA", 5000 + i, 1001 + i,
                       smac=SERVER, dmac=CLIENT) for i in range(N)]
        b.call("rule.add", {"rule": rule(12, ["output:in"],
                                         {"eth_src": SERVER, "ct_state": "+trk+est-inv"},
                                         table=1, priority=10)})
        b.call("port.add", pinned(b, "ret", synacks, 2))
        b.wait_counts(rx={"ret": N}, tx={"in": N})
        out = b.finish()
        forward = [Ether(f) for f in sent(b, out, "out")]
        assert sorted(p[TCP].sport for p in forward) == [30000 + i for i in range(N)]
        for p in forward:
            assert (p[IP].dst, p[TCP].dport) == ("10.0.0.2", 8080)
        back = [Ether(f) for f in sent(b, out, "in")]
        assert sorted(p[TCP].dport for p in back) == [30000 + i for i in range(N)]
        for p in back:
            assert (p[IP].src, p[TCP].sport) == ("10.0.0.100", 80), p.summary()
            ip_sum, tcp_sum = p[IP].chksum, p[TCP].chksum
            del p[IP].chksum
            del p[TCP].chksum
            q = Ether(bytes(p))
            assert (q[IP].chksum, q[TCP].chksum) == (ip_sum, tcp_sum), p.summary()
    finally:
        b.close()
