"""Functional tests of ferryd's flow-rule match fields (docs/rules.md) through net_pcap ports.

Per field, port `in` sends frames some of which the field selects; a rule sends what matches to
port `hit` above a catch-all sending everything else to port `miss`. The tx pcaps are compared
with the expected frames byte for byte, and the rules' hit counters with the frames they sent.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))

from scapy.layers.inet import ICMP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6ExtHdrHopByHop  # noqa: E402
from scapy.layers.sctp import SCTP  # noqa: E402

from pcap_util import BROADCAST, mac, rule, volume  # noqa: E402
from pcap_util import drops  # noqa: E402
from pcap_util import arp_frame as arp  # noqa: E402
from pcap_util import ipv4_frame as v4  # noqa: E402
from pcap_util import ipv6_frame as v6  # noqa: E402
from pcap_util import rule_hits as hits  # noqa: E402
from pcap_util import tcp4_frame as tcp  # noqa: E402
from pcap_util import udp4_frame as udp  # noqa: E402
from pcap_util import vlan_frame as tagged  # noqa: E402

S, D, C = mac(1), mac(2), mac(3)  # default source and destination of the frames; a 3rd


# ---------------------------------------------------------------------------------------------
# Match fields: one rule to `hit` over a catch-all to `miss`

TCP4 = {"eth_type": "ipv4", "ip_proto": "tcp"}
UDP4 = {"eth_type": "ipv4", "ip_proto": "udp"}

# name -> (match of the `hit` rule, [(frame, matches)])
MATCH_CASES = {
    "eth_src_exact": ({"eth_src": S}, [
        (v4(smac=S, payload=b"1"), True), (v4(smac=C, payload=b"2"), False),
        (arp(smac=S), True), (v4(smac=D, dmac=S, payload=b"3"), False)]),
    "eth_src_masked": ({"eth_src": "02:00:00:aa:00:00/ff:ff:ff:ff:00:00"}, [
        (v4(smac="02:00:00:aa:12:34"), True), (v4(smac="02:00:00:ab:12:34"), False),
        (v4(smac="02:00:00:aa:ff:ff"), True), (v4(smac="06:00:00:aa:00:00"), False),
        (v4(smac="02:00:00:aa:00:00"), True)]),
    "eth_dst_exact": ({"eth_dst": D}, [
        (v4(dmac=D, payload=b"1"), True), (v4(dmac=BROADCAST, payload=b"2"), False),
        (v4(dmac=C, payload=b"3"), False), (v4(dmac=D, vid=7, payload=b"4"), True)]),
    "eth_dst_masked_multicast": ({"eth_dst": "01:00:00:00:00:00/01:00:00:00:00:00"}, [
        (v4(dmac=BROADCAST), True), (v4(dmac="01:00:5e:00:00:01"), True),
        (v4(dmac=D), False), (v4(dmac="33:33:00:00:00:01"), True), (v4(dmac=C), False)]),
    "vlan_10": ({"vlan": 10}, [
        (v4(payload=b"untagged"), False), (tagged(10), True), (tagged(11), False),
        (tagged(10, pcp=5, payload=b"pcp 5"), True), (tagged(0, payload=b"prio tag"), False),
        (tagged(10, inner=20, payload=b"10 over 20"), True),
        (tagged(20, inner=10, payload=b"20 over 10"), False)]),
    "vlan_none": ({"vlan": "none"}, [
        (v4(payload=b"untagged"), True), (tagged(0, payload=b"prio tag"), False),
        (tagged(10), False), (arp(), True), (tagged(4095, payload=b"4095"), False)]),
    "vlan_0_priority_tag": ({"vlan": 0}, [
        (v4(payload=b"untagged"), False), (tagged(0, pcp=3, payload=b"prio tag"), True),
        (tagged(1), False)]),
    "eth_type_arp": ({"eth_type": "arp"}, [
        (arp(), True), (v4(), False), (arp(vid=5), True), (v6(), False)]),
    "eth_type_hex_ipv6": ({"eth_type": "0x86dd"}, [
        (v6(), True), (v4(), False), (arp(), False),
        (v6(src="2001:db8::99", payload=b"2"), True)]),
    "eth_type_number_ipv4": ({"eth_type": 2048}, [
        (v4(), True), (arp(), False), (v4(vid=3, payload=b"tagged"), True), (v6(), False)]),
    "ip_src_prefix": ({"ip_src": "10.1.0.0/16"}, [
        (v4(src="10.1.2.3"), True), (v4(src="10.2.0.1"), False),
        (v4(src="10.1.255.255"), True), (v4(src="10.0.255.255"), False),
        (v4(src="10.0.0.1", dst="10.1.0.1"), False), (arp(psrc="10.1.0.1"), False),
        (v6(), False)]),
    "ip_dst_prefix": ({"eth_type": "ipv4", "ip_dst": "192.168.1.0/24"}, [
        (v4(dst="192.168.1.7"), True), (v4(dst="192.168.2.7"), False),
        (v4(src="192.168.1.7", dst="10.0.0.1"), False), (v4(dst="192.168.1.255"), True),
        (v4(dst="192.168.1.0", vid=9), True)]),
    "ip_dst_exact": ({"ip_dst": "10.9.9.9"}, [
        (v4(dst="10.9.9.9"), True), (v4(dst="10.9.9.8"), False), (v4(dst="10.9.9.10"), False)]),
    "ipv6_src_prefix": ({"ipv6_src": "2001:db8::/32"}, [
        (v6(src="2001:db8:ffff::1"), True), (v6(src="2001:db9::1"), False),
        (v4(), False), (v6(src="2001:db8::1"), True), (v6(src="2001:db7:ffff::1"), False)]),
    "ipv6_dst_prefix": ({"eth_type": "ipv6", "ipv6_dst": "2001:db8:1::/48"}, [
        (v6(dst="2001:db8:1:ffff::2"), True), (v6(dst="2001:db8:2::2"), False),
        (v6(src="2001:db8:1::5", dst="2001:db8::5"), False), (v6(dst="2001:db8:1::"), True)]),
    "ip_proto_udp": ({"eth_type": "ipv4", "ip_proto": "udp"}, [
        (udp(), True), (tcp(), False), (v4(ICMP()), False), (v6(), False), (arp(), False)]),
    "ip_proto_tcp_ipv6_ext": ({"eth_type": "ipv6", "ip_proto": "tcp"}, [
        (v6(TCP(dport=80)), True), (v6(TCP(dport=80), ext=IPv6ExtHdrHopByHop()), True),
        (v6(UDP(dport=80)), False), (tcp(), False)]),
    "ip_proto_number": ({"eth_type": "ipv4", "ip_proto": 47}, [
        (v4(b"", proto=47, payload=b"gre-ish"), True), (udp(), False),
        (v4(b"", proto=48, payload=b"48"), False)]),
    "l4_dst_exact": (dict(TCP4, l4_dst=80), [
        (tcp(80), True), (tcp(81), False), (tcp(1234, sport=80), False),
        (udp(80), False), (v6(TCP(dport=80)), False), (tcp(80, flags="S", payload=b"2"), True)]),
    "l4_src_exact_hex": (dict(UDP4, l4_src="0x50"), [
        (udp(sport=80), True), (udp(sport=81), False), (udp(dport=80, sport=1), False)]),
    "l4_src_masked": (dict(UDP4, l4_src="0x1000/0xf000"), [
        (udp(sport=0x1000), True), (udp(sport=0x1fff), True), (udp(sport=0x0fff), False),
        (udp(sport=0x2000), False), (udp(sport=0x9000), False), (udp(sport=0x1234), True)]),
    "l4_dst_range": (dict(UDP4, l4_dst="1000-2000"), [
        (udp(999), False), (udp(1000), True), (udp(1001), True), (udp(1536), True),
        (udp(1999), True), (udp(2000), True), (udp(2001), False), (udp(0), False),
        (udp(65535), False), (tcp(1500), False)]),
    "l4_src_range_to_top": (dict(TCP4, l4_src="1024-65535"), [
        (tcp(sport=1023), False), (tcp(sport=1024), True), (tcp(sport=65535), True),
        (tcp(sport=0), False), (tcp(sport=40000), True)]),
    "l4_both_ranges": (dict(UDP4, l4_src="1000-2000", l4_dst="5000-5010"), [
        (udp(5000, 1000), True), (udp(5010, 2000), True), (udp(5005, 999), False),
        (udp(5011, 1500), False), (udp(4999, 1500), False), (udp(5003, 1777), True)]),
    "l4_dst_sctp": ({"eth_type": "ipv4", "ip_proto": "sctp", "l4_dst": 5000}, [
        (v4(SCTP(sport=1, dport=5000)), True), (v4(SCTP(sport=1, dport=5001)), False),
        (udp(5000), False)]),
    "tcp_flags_named": (dict(TCP4, tcp_flags="+syn-ack"), [
        (tcp(flags="S"), True), (tcp(flags="SA"), False), (tcp(flags="A"), False),
        (tcp(flags="SE"), True), (tcp(flags="F"), False), (tcp(flags="SF"), True),
        (tcp(flags="R"), False)]),
    "tcp_flags_masked": (dict(TCP4, tcp_flags="0x02/0x12"), [
        (tcp(flags="S"), True), (tcp(flags="SA"), False), (tcp(flags="A"), False),
        (tcp(flags="SPU"), True), (udp(), False)]),
    "icmp_type": ({"eth_type": "ipv4", "ip_proto": "icmp", "icmp_type": 8}, [
        (v4(ICMP(type=8)), True), (v4(ICMP(type=0)), False), (v4(ICMP(type=3, code=8)), False),
        (udp(sport=8), False), (v4(ICMP(type=8, code=1)), True)]),
    "icmp_type_code": ({"eth_type": "ipv4", "ip_proto": "icmp", "icmp_type": 3, "icmp_code": 3}, [
        (v4(ICMP(type=3, code=3)), True), (v4(ICMP(type=3, code=1)), False),
        (v4(ICMP(type=8, code=3)), False), (udp(dport=3, sport=3), False)]),
    "icmpv6_type": ({"eth_type": "ipv6", "ip_proto": "icmpv6", "icmp_type": 128}, [
        (v6(ICMPv6EchoRequest()), True), (v6(ICMPv6EchoReply()), False),
        (v4(ICMP(type=128)), False), (v6(UDP(sport=128)), False)]),
}


@pytest.mark.parametrize("name", sorted(MATCH_CASES))
def test_match_field(bridge, name):
    """Port `in` sends frames some of which the match under test selects; rule 1 (priority 10,
    that match) outputs to `hit`, rule 2 (priority 0, no match) to `miss`.

    Expects the matching frames on `hit` and the others on `miss`, byte for byte and in order,
    nothing on `in`, no drop, and the rules' packet and byte hit counters equal to the frames
    each forwarded.
    """
    match, cases = MATCH_CASES[name]
    frames = [f for f, _ in cases]
    assert len(set(frames)) == len(frames), "frames of a case must be distinct"
    want_hit = [f for f, m in cases if m]
    want_miss = [f for f, m in cases if not m]
    bridge.port("in", frames)
    bridge.port("hit")
    bridge.port("miss")
    bridge.ferryd.config["rules"] = [rule(1, ["output:hit"], match, priority=10),
                                     rule(2, ["output:miss"], priority=0)]
    bridge.start()
    bridge.wait_counts(rx={"in": len(frames)}, tx={"hit": len(want_hit), "miss": len(want_miss)})
    assert hits(bridge) == {1: volume(want_hit), 2: volume(want_miss)}
    out = bridge.finish()
    assert out["hit"] == want_hit
    assert out["miss"] == want_miss
    assert out["in"] == []
    assert not any(drops(bridge, p) for p in bridge.ports)
    bridge.check_counters()


def test_match_in_port(bridge):
    """Ports in1 and in2 each send a UDP frame, an ARP request and a tagged frame; rule 1
    (priority 10, in_port in1) outputs to `hit`, rule 2 (priority 0) to `miss`.

    Expects in1's frames on `hit` and in2's on `miss`, unchanged and in order; no drop.
    """
    f1 = [v4(payload=b"in1"), arp(psrc="10.0.0.11"), tagged(5, payload=b"in1 tagged")]
    f2 = [v4(payload=b"in2"), arp(psrc="10.0.0.12"), tagged(5, payload=b"in2 tagged")]
    bridge.port("in1", f1)
    bridge.port("in2", f2)
    bridge.port("hit")
    bridge.port("miss")
    bridge.ferryd.config["rules"] = [rule(1, ["output:hit"], {"in_port": "in1"}, priority=10),
                                     rule(2, ["output:miss"], priority=0)]
    bridge.start()
    bridge.wait_counts(rx={"in1": 3, "in2": 3}, tx={"hit": 3, "miss": 3})
    assert hits(bridge) == {1: volume(f1), 2: volume(f2)}
    out = bridge.finish()
    assert out["hit"] == f1
    assert out["miss"] == f2
    assert not any(drops(bridge, p) for p in bridge.ports)
    bridge.check_counters()


