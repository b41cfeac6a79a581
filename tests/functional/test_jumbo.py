"""Functional tests of jumbo frames through net_pcap ports.

The pcap PMD reads a frame larger than one mbuf into a chain of ferryd's 2 KiB mbufs (2,048
bytes in the first, 2,176 in each next) and writes chains out whole, so these frames cross the
fast path as multi-segment mbufs: the bridge and its flood copies, the ports' MTU on the way in
and out, connection tracking with NAT (lengths and checksums of the whole chain) and payload
inspection of a pattern that straddles two segments. Frames are compared byte for byte.
"""
import os
import sys

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pcap_util import BROADCAST, drops, mac  # noqa: E402
from ct_util import (CLIENT, NAT_IP, R_NEW4, SERVER, assert_checksums, bridges,  # noqa: E402
                     stateful_rules, tcp, udp)
from ferry_harness import RpcError  # noqa: E402

A = mac(1)
JUMBO = 9000
INVALID_PARAMS = -32602
PORTS = range(20000, 20011)


def bcast(ip_len, payload_byte=0x5a):
    """A broadcast IPv4/UDP frame from A whose IP packet is ip_len bytes."""
    data = bytes([payload_byte]) * (ip_len - 28)
    return bytes(Ether(src=A, dst=BROADCAST) / IP(src="10.0.0.1", dst="10.0.0.2") /
                 UDP(sport=1000, dport=2000) / data)


def test_bridge_carries_1500_and_9000_byte_frames_and_enforces_each_ports_mtu(bridge):
    """p1 (MTU 9000) receives broadcasts carrying IP packets of 1,500, 9,000 and 9,001 bytes;
    p2 has MTU 9000, p3 the default 1500.

    Expects p2 to send the 1,500- and 9,000-byte frames byte for byte (p1's MTU admits them),
    p3 only the 1,500-byte one, with one mtu_exceeded on p3 (egress) and one on p1 (the 9,001-
    byte packet, ingress), and the port counters to agree with the pcaps.
    """
    small, jumbo, over = bcast(1500), bcast(JUMBO, 0x6b), bcast(JUMBO + 1, 0x7c)
    assert len(jumbo) == 9014
    bridge.port("p1", [small, jumbo, over], mtu=JUMBO)
    bridge.port("p2", mtu=JUMBO)
    bridge.port("p3")
    bridge.start()
    bridge.wait_counts(rx={"p1": 3}, tx={"p2": 2, "p3": 1},
                       drops={("p1", "mtu_exceeded"): 1, ("p3", "mtu_exceeded"): 1})
    out = bridge.finish()
    assert out["p2"] == [small, jumbo]
    assert out["p3"] == [small]
    assert drops(bridge, "p1") == {"mtu_exceeded": 1}
    assert drops(bridge, "p2") == {}
    assert drops(bridge, "p3") == {"mtu_exceeded": 1}
    bridge.check_counters()


def test_mtu_is_validated_shown_and_defaults_to_1500(bridge):
    """port.add of pcap ports with mtu 9000, without mtu, with 9001 and with 67.

    Expects port.list to show 9000 and 1500; 9001 and 67 refused as invalid params naming
    params.mtu and its range, and no port added for them.
    """
    bridge.start()
    bridge.add_port("big", mtu=JUMBO)
    bridge.add_port("plain")
    shown = {p["name"]: p["mtu"] for p in bridge.call("port.list")}
    assert shown == {"big": JUMBO, "plain": 1500}
    for bad in (JUMBO + 1, 67):
        with pytest.raises(RpcError) as e:
            bridge.add_port(f"bad{bad}", mtu=bad)
        assert e.value.code == INVALID_PARAMS
        assert "params.mtu" in e.value.message and "68..9000" in e.value.message, e.value.message
    assert sorted(p["name"] for p in bridge.call("port.list")) == ["big", "plain"]
    bridge.finish()


@pytest.fixture
def ctb():
    yield from bridges()


def rewrite(frame, src=None, dst=None, sport=None, dport=None):
    """frame with the given IPv4 addresses and TCP/UDP ports and fresh checksums (scapy)."""
    p = Ether(frame)
    if src is not None:
        p[IP].src = src
    if dst is not None:
        p[IP].dst = dst
    del p[IP].chksum
    l4 = p[IP].payload
    if sport is not None:
        l4.sport = sport
    if dport is not None:
        l4.dport = dport
    del l4.chksum
    return bytes(p)


def test_snat_of_9000_byte_tcp_and_udp_with_checksums_over_the_chain(ctb):
    """A stateful firewall with SNAT to 192.0.2.1:20000-20010, every port MTU 9000.
      1 lan: TCP SYN CLIENT:40000 -> SERVER:80 and a UDP datagram of 9,000 bytes (IP)
      2 wan: the SYN+ACK and a 9,000-byte UDP reply, to the bindings
      3 lan: the ACK and a 9,000-byte TCP segment (8,960 bytes of data)
      4 wan: the server's ACK of all 8,960 bytes; a 9,000-byte UDP reply with one payload byte
             changed past the first segment (its checksum now wrong)

    Expects every forwarded frame translated with every checksum right over the whole frame
    (byte-exact against scapy's rebuild, and checked again by ct_util's own sum); the server's
    ACK accepted as +est (conntrack counted the 8,960 bytes of the chained segment); the
    corrupted reply +inv and dropped (rule_drop).
    """
    b = ctb(rules=stateful_rules(table0_ct="ct(zone=1,nat,table=1)", inside_by="mac",
                                 new4=["ct(zone=1,commit,nat(src=192.0.2.1:20000-20010))",
                                       "output:outside"]), mtu=JUMBO)
    b.start()
    syn = tcp(CLIENT, SERVER, 40000, 80, "S", 1000)
    q = udp(CLIENT, SERVER, 5000, 53, bytes(range(256)) * 35 + b"q" * 12)
    assert len(Ether(q)[IP]) == JUMBO
    b.phase([syn, q], out={"outside": 2})
    conns = {c["proto"]: c for c in b.conns()}
    t, u = conns["tcp"]["reply"]["dport"], conns["udp"]["reply"]["dport"]
    assert conns["tcp"]["reply"]["dst"] == NAT_IP and t in PORTS and u in PORTS
    out = [rewrite(syn, src=NAT_IP, sport=t), rewrite(q, src=NAT_IP, sport=u)]

    synack = tcp(SERVER, NAT_IP, 80, t, "SA", 5000, 1001)
    r = udp(SERVER, NAT_IP, 53, u, b"r" * (JUMBO - 28))
    back = [rewrite(synack, dst=CLIENT, dport=40000), rewrite(r, dst=CLIENT, dport=5000)]
    b.phase([synack, r], out={"inside": back})

    data = bytes((i * 7) & 0xff for i in range(JUMBO - 40))
    ack = tcp(CLIENT, SERVER, 40000, 80, "A", 1001, 5001)
    seg = tcp(CLIENT, SERVER, 40000, 80, "PA", 1001, 5001, data)
    b.phase([ack, seg], out={"outside": 2})
    out += [rewrite(ack, src=NAT_IP, sport=t), rewrite(seg, src=NAT_IP, sport=t)]

    sack = tcp(SERVER, NAT_IP, 80, t, "A", 5001, 1001 + len(data))
    bad = bytearray(udp(SERVER, NAT_IP, 53, u, b"s" * (JUMBO - 28)))
    bad[5000] ^= 0xff
    b.phase([sack, bytes(bad)], out={"inside": [rewrite(sack, dst=CLIENT, dport=40000)]},
            drops={"rule_drop": 1})
    assert b.conn(proto="tcp")["state"] == "ESTABLISHED"
    b.finish()
    b.check_outputs()
    assert b.outputs["outside"] == out
    for f in b.outputs["outside"] + b.outputs["inside"]:
        assert_checksums(f)
    assert b.final_stats["outside"]["tx_bytes"] == sum(map(len, out))


def test_dpi_matches_a_pattern_straddling_two_segments(ctb):
    """Pattern 1 "straddle-me" (drop) loaded; a firewall that inspects every packet of the
    inside's connections; MTU 9000.
      1 lan: SYN CLIENT:40100 -> SERVER:80    2 wan: SYN+ACK    3 lan: ACK
      4 lan: a 9,000-byte segment without the pattern, then one whose payload holds it across
             frame byte 2,048, where the pcap PMD ends the first mbuf and starts the second

    Expects the clean segment forwarded byte for byte, the second dropped as dpi_drop, one
    match of pattern 1.
    """
    commit = "ct(zone=1,commit)"
    rules = stateful_rules(new4=[commit, "dpi", "output:outside"], inside_by="mac")
    for r in rules:
        if r["id"] == 20:  # established, original direction: inspect too
            r["actions"] = ["dpi"] + r["actions"]
    b = ctb(rules=rules, mtu=JUMBO)
    b.ferryd.config["dpi"] = {"patterns": [{"id": 1, "regex": "straddle-me", "action": "drop"}]}
    b.start()
    syn = tcp(CLIENT, SERVER, 40100, 80, "S", 1000)
    b.phase([syn], out={"outside": 1})
    b.phase([tcp(SERVER, CLIENT, 80, 40100, "SA", 5000, 1001)], out={"inside": 1})
    b.phase([tcp(CLIENT, SERVER, 40100, 80, "A", 1001, 5001)], out={"outside": 1})
    n = JUMBO - 40
    clean = tcp(CLIENT, SERVER, 40100, 80, "PA", 1001, 5001, b"." * n)
    text = bytearray(b"." * n)
    at = 2048 - 5 - (14 + 20 + 20)  # "strad" ends the first segment
    text[at:at + 11] = b"straddle-me"
    dirty = tcp(CLIENT, SERVER, 40100, 80, "PA", 1001 + n, 5001, bytes(text))
    assert dirty[2043:2048] == b"strad"
    b.phase([clean, dirty], out={"outside": [clean]}, drops={"dpi_drop": 1})
    assert {p["id"]: p["matches"] for p in b.call("dpi.list")["patterns"]} == {1: 1}
    b.finish()
    b.check_outputs()
