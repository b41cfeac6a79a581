"""Connection tracking of fragmented datagrams through ferryd (docs/conntrack.md, "Fragments"),
with two workers and source NAT.

Setup: ferryd with workers on lcores 1 and 2; port `in` is polled by lcore 1, port `ret` by
lcore 2. A stateful firewall tracks IPv4 in zone 1 with `nat`, commits new datagrams from `in`
with nat(src=203.0.113.5) and lets established ones back. Datagrams of many source ports, so
that both workers own some: the worker a datagram arrives on reassembles it, and hands its
fragments to the owner when that is the other one, which reassembles them again.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scapy.layers.inet import IP, UDP, fragment  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

from pcap_util import PcapBridge, frame, mac, read_pcap, rule  # noqa: E402

CLIENT, SERVER = mac(1), mac(2)
PUBLIC = "203.0.113.5"
N = 32  # datagrams: enough that both workers own some


def fragments(src, dst, sport, dport, ident, smac, dmac, size=100):
    """The IPv4 fragments (24 bytes of UDP message each) of one UDP datagram, as frames."""
    whole = IP(src=src, dst=dst, id=ident) / UDP(sport=sport, dport=dport) / (b"d" * size)
    return [frame(Ether(src=smac, dst=dmac) / f) for f in fragment(whole, fragsize=24)]


def pinned(bridge, name, rx, lcore):
    """A pcap port whose only rx queue the worker on `lcore` polls; each worker's tx queue
    writes a file of its own (<name>-tx.pcap, <name>-tx1.pcap)."""
    spec = bridge._spec(name, rx)
    spec["devargs"] += ",tx_pcap=" + bridge.ferryd.path(f"{name}-tx1.pcap")
    spec["rx_pin"] = [lcore]
    return spec


def reassemble(frames):
    """The UDP datagrams the IPv4 fragments among frames make, keyed by (src, dst, id), as
    scapy reassembles them (raw bytes of the IP packet)."""
    parts = {}
    for f in frames:
        ip = Ether(f)[IP]
        parts.setdefault((ip.src, ip.dst, ip.id), []).append(ip)
    out = {}
    for key, ips in parts.items():
        ips.sort(key=lambda p: p.frag)
        payload = b"".join(bytes(p.payload)[: p.len - p.ihl * 4] for p in ips)
        first = ips[0].copy()
        first.flags = 0
        first.frag = 0
        first.len = None
        first.chksum = None
        del first.payload
        out[key] = IP(bytes(first / payload))
    return out


def udp_checksum_ok(ip):
    """Whether the UDP checksum of a reassembled datagram is right for its addresses."""
    got = ip[UDP].chksum
    fresh = ip.copy()
    fresh[UDP].chksum = None
    return IP(bytes(fresh))[UDP].chksum == got


def test_fragmented_udp_is_tracked_whole_translated_and_its_reply_let_back():
    """`in` (worker 0) sends 32 UDP datagrams 10.0.0.1:(40000+i) -> 198.51.100.7:53, five
    fragments each; `ret` (worker 1) sends each reply, fragmented, to 203.0.113.5.

    Expects: every fragment out on `out` with source 203.0.113.5, each datagram's fragments
    with one translated source port and a UDP checksum right over the reassembled datagram;
    every reply fragment back on `in` addressed to 10.0.0.1 and its port (replies that reach
    the worker not owning their connection are reassembled, handed or redirected to the owner,
    and reassembled again); both workers reassembling; nothing dropped.
    """
    b = PcapBridge(workers=(1, 2))
    out_frags = []
    for i in range(N):
        out_frags += fragments("10.0.0.1", "198.51.100.7", 40000 + i, 53, 100 + i, CLIENT, SERVER)
    b.ferryd.config["ports"].append(pinned(b, "in", out_frags, 1))
    b.ferryd.config["ports"].append(pinned(b, "out", [], 2))
    b.ferryd.config["rules"] = [
        rule(1, ["ct(zone=1,nat,table=1)"], {"eth_type": "ipv4"}, priority=10),
        rule(2, ["normal"], priority=0),
        rule(10, [f"ct(zone=1,commit,nat(src={PUBLIC}))", "output:out"],
             {"in_port": "in", "ct_state": "+trk+new-inv"}, table=1, priority=10),
        rule(11, ["output:in"], {"eth_src": SERVER, "ct_state": "+trk+est-inv"}, table=1,
             priority=10),
        rule(19, ["drop"], table=1, priority=0)]
    try:
        b.start()
        b.wait_counts(rx={"in": len(out_frags)}, tx={"out": len(out_frags)})
        stats = b.call("ct.stats")
        assert {w["worker"] for w in stats["workers"] if w["created"] > 0} == {0, 1}
        sent_out = read_pcap(b.ferryd.path("out-tx.pcap")) + \
            read_pcap(b.ferryd.path("out-tx1.pcap"))
        assert len(sent_out) == len(out_frags)
        assert all(Ether(f)[IP].src == PUBLIC for f in sent_out)
        datagrams = reassemble(sent_out)
        assert len(datagrams) == N
        ports = {}
        for (_, _, ident), ip in datagrams.items():
            assert udp_checksum_ok(ip), f"datagram {ident}: UDP checksum wrong after NAT"
            ports[ident] = ip[UDP].sport

        replies = []
        for i in range(N):
            replies += fragments("198.51.100.7", PUBLIC, 53, ports[100 + i], 500 + i, SERVER,
                                 CLIENT, size=150)
        b.call("port.add", pinned(b, "ret", replies, 2))
        b.wait_counts(rx={"ret": len(replies)}, tx={"in": len(replies)})
        workers = b.call("ct.stats")["workers"]
        out = b.finish()
        back = out["in"] + read_pcap(b.ferryd.path("in-tx1.pcap"))
        assert len(back) == len(replies)
        assert all(Ether(f)[IP].dst == "10.0.0.1" for f in back)
        for (_, _, ident), ip in reassemble(back).items():
            assert ip[UDP].dport == 40000 + ident - 500
            assert udp_checksum_ok(ip), f"reply {ident}: UDP checksum wrong after NAT"
        # Each datagram is run where it is owned (2N in all), and a reply whose translated tuple
        # hashes to the other worker is run there first, then redirected and run again.
        assert sum(w["reassembled"] for w in workers) >= 2 * N
        assert all(w["reassembled"] > 0 for w in workers)
        drops = {k: v for st in b.final_stats.values() for k, v in st["drops"].items() if v}
        assert not drops, drops
    finally:
        b.close()


def test_incomplete_and_overlapping_datagrams_are_dropped_with_their_reasons():
    """`in` sends the first fragment of datagram A alone, datagram B whose second fragment
    overlaps its first (a rewrite of the first's bytes), then datagram C whole; one worker, the
    firewall of the test above without NAT.

    Expects: only C's fragments on `out`; B's two fragments dropped as ct_frag_overlap at once;
    A's fragment held, then dropped as ct_frag_timeout once the 1 s reassembly timeout passed.
    """
    b = PcapBridge()
    a = fragments("10.0.0.1", "198.51.100.7", 41000, 53, 1, CLIENT, SERVER)[:1]
    b_whole = IP(src="10.0.0.1", dst="198.51.100.7", id=2) / UDP(sport=41001, dport=53) / \
        (b"o" * 100)
    b_first = fragment(b_whole, fragsize=48)[0]
    b_over = IP(bytes(b_first))
    b_over.frag = 2  # bytes 16.. again: overlaps the first fragment's 0..48
    b_over.flags = 0
    b_over.chksum = None
    b_frags = [frame(Ether(src=CLIENT, dst=SERVER) / b_first),
               frame(Ether(src=CLIENT, dst=SERVER) / IP(bytes(b_over)))]
    c = fragments("10.0.0.1", "198.51.100.7", 41002, 53, 3, CLIENT, SERVER)
    b.port("in", a + b_frags + c)
    b.port("out")
    b.ferryd.config["rules"] = [
        rule(1, ["ct(zone=1,table=1)"], {"eth_type": "ipv4"}, priority=10),
        rule(2, ["normal"], priority=0),
        rule(10, ["ct(zone=1,commit)", "output:out"],
             {"in_port": "in", "ct_state": "+trk+new-inv"}, table=1, priority=10),
        rule(19, ["drop"], table=1, priority=0)]
    try:
        b.start()
        b.wait_counts(rx={"in": len(a + b_frags + c)}, tx={"out": len(c)},
                      drops={("in", "ct_frag_overlap"): 2})
        b.wait_counts(drops={("in", "ct_frag_timeout"): 1}, timeout=5)
        out = b.finish()
        assert sorted(out["out"]) == sorted(c)
    finally:
        b.close()
