"""Functional tests of ferryd's L2 bridge through net_pcap ports.

Each test writes the frames every port receives into rx pcap files, runs ferryd (in phases when
an address must be learned before the next frames arrive, see pcap_util), and compares what each
port's tx pcap holds with the expected frames byte for byte: the input frames, with an 802.1Q tag
inserted (TPID 0x8100, PCP 0) or removed where the VLAN rules say so.
"""
import os
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))

from pcap_util import (BROADCAST, arp_request, assert_frames,  # noqa: E402
                       assert_phases, mac, set_vid, tag, tagged_udp, udp_frame, untag)
from pcap_util import drops  # noqa: E402
from ferry_harness import counter_catalog  # noqa: E402

A, B, C, D, E, N, T, X = (mac(i) for i in range(1, 9))
UNKNOWN = mac(0x77)


def test_broadcast_arp_floods_to_all_other_ports(bridge):
    """Sends an ARP request (broadcast) from A on p1; p2 and p3 have nothing to send.

    Expects the request on p2 and on p3, byte for byte unchanged, nothing back on p1, no drop,
    and A learned on p1 in VLAN 0.
    """
    arp = arp_request(A)
    bridge.port("p1", [arp])
    bridge.port("p2")
    bridge.port("p3")
    bridge.start()
    bridge.wait_counts(rx={"p1": 1}, tx={"p1": 0, "p2": 1, "p3": 1})
    bridge.wait_macs({(A, 0, "p1")})
    out = bridge.finish()
    assert out["p1"] == []
    assert out["p2"] == [arp]
    assert out["p3"] == [arp]
    assert all(not drops(bridge, p) for p in ("p1", "p2", "p3"))
    bridge.check_counters()


def test_learning_unicast_to_learned_port_unknown_floods(bridge):
    """Phase 1: A on p1 sends an ARP request (broadcast), B on p2 a broadcast; p3 is silent.
    Phase 2: a new port p4 with host C sends C->A, C->B and C->(unknown address).

    A frame has to come in on a port added for its phase, so the frames towards A and B come
    from a new host C rather than from B itself.
    Expects after phase 1: mac.list = {A on p1, B on p2}, VLAN 0; each broadcast on every
    other port. After phase 2: C->A only on p1, C->B only on p2, the unknown unicast flooded to
    p1, p2 and p3 (not back to p4); C learned on p4.
    """
    arp_a = arp_request(A)
    bcast_b = udp_frame(B, BROADCAST, b"hello from B")
    to_a = udp_frame(C, A, b"C to A")
    to_b = udp_frame(C, B, b"C to B")
    to_unknown = udp_frame(C, UNKNOWN, b"C to nobody")
    bridge.port("p1", [arp_a])
    bridge.port("p2", [bcast_b])
    bridge.port("p3")
    bridge.start()
    bridge.wait_counts(rx={"p1": 1, "p2": 1}, tx={"p1": 1, "p2": 1, "p3": 2})
    bridge.wait_macs({(A, 0, "p1"), (B, 0, "p2")})
    assert bridge.macs(port="p1") == {(A, 0, "p1")}
    assert bridge.macs(vlan=0) == {(A, 0, "p1"), (B, 0, "p2")}

    bridge.add_port("p4", [to_a, to_b, to_unknown])
    bridge.wait_counts(rx={"p4": 1 + 2}, tx={"p1": 3, "p2": 3, "p3": 3, "p4": 0})
    bridge.wait_macs({(A, 0, "p1"), (B, 0, "p2"), (C, 0, "p4")})
    out = bridge.finish()
    assert_phases(out["p1"], [[bcast_b]], [[to_a, to_unknown]], where="p1")
    assert_phases(out["p2"], [[arp_a]], [[to_b, to_unknown]], where="p2")
    assert_phases(out["p3"], [[arp_a], [bcast_b]], [[to_unknown]], where="p3")
    assert out["p4"] == []
    bridge.check_counters()


def test_no_hairpin_to_address_learned_on_ingress_port(bridge):
    """p1 replays forever (net_pcap infinite_rx) A->B and B->A: two hosts behind the same port;
    p2 is a second port of VLAN 0 that drops what it is sent (no tx_pcap).

    Until A and B are learned, the frames are unknown unicast and flooded to p2. Once mac.list
    shows both on p1, every frame is addressed to the port it came in on: expects the hairpin
    counter of p1 to keep growing, p2 to receive nothing more, and nothing ever sent on p1.
    """
    a_to_b = udp_frame(A, B, b"A to B")
    b_to_a = udp_frame(B, A, b"B to A")
    bridge.port("p1", [a_to_b, b_to_a], infinite=True)
    bridge.port("p2", capture=False)
    bridge.start()
    bridge.wait_macs({(A, 0, "p1"), (B, 0, "p1")})
    time.sleep(0.05)  # frames looked up before the table changed leave the worker
    first_p1, first_p2 = bridge.stats("p1"), bridge.stats("p2")
    time.sleep(0.3)
    later_p1, later_p2 = bridge.stats("p1"), bridge.stats("p2")
    assert later_p1["rx_packets"] > first_p1["rx_packets"], "p1 stopped replaying"
    new_rx = later_p1["rx_packets"] - first_p1["rx_packets"]
    new_hairpin = later_p1["drops"]["hairpin"] - first_p1["drops"]["hairpin"]
    # Every frame received meanwhile is a hairpin drop, give or take the burst in flight.
    assert new_hairpin > 0 and new_hairpin >= new_rx - 64, (new_hairpin, new_rx)
    assert later_p2["tx_packets"] == first_p2["tx_packets"], "frames still flooded to p2"
    assert later_p1["tx_packets"] == 0
    bridge.del_port("p1")  # stops the replay, so the counters can settle
    out = bridge.finish()
    assert out["p1"] == []


def test_mac_move_to_new_port(bridge):
    """Phase 1: A broadcasts on p1, B broadcasts on p2; p3 is silent.
    Phase 2: A broadcasts again from a new port p4 (A moved).
    Phase 3: host C on a new port p5 sends C->A.

    Expects mac.list to show A on p1, then A on p4 (B still on p2); the phase-2 broadcast on
    p1, p2 and p3; and C->A on p4 only.
    """
    a1 = udp_frame(A, BROADCAST, b"A on p1")
    b1 = udp_frame(B, BROADCAST, b"B on p2")
    a2 = udp_frame(A, BROADCAST, b"A on p4")
    to_a = udp_frame(C, A, b"C to A")
    bridge.port("p1", [a1])
    bridge.port("p2", [b1])
    bridge.port("p3")
    bridge.start()
    bridge.wait_counts(rx={"p1": 1, "p2": 1}, tx={"p1": 1, "p2": 1, "p3": 2})
    bridge.wait_macs({(A, 0, "p1"), (B, 0, "p2")})

    bridge.add_port("p4", [a2])
    bridge.wait_counts(rx={"p4": 1}, tx={"p1": 2, "p2": 2, "p3": 3, "p4": 0})
    bridge.wait_macs({(A, 0, "p4"), (B, 0, "p2")})

    bridge.add_port("p5", [to_a])
    bridge.wait_counts(rx={"p5": 1}, tx={"p4": 1})
    bridge.wait_macs({(A, 0, "p4"), (B, 0, "p2"), (C, 0, "p5")})
    out = bridge.finish()
    assert_phases(out["p1"], [[b1]], [[a2]], where="p1")
    assert_phases(out["p2"], [[a1]], [[a2]], where="p2")
    assert_phases(out["p3"], [[a1], [b1]], [[a2]], where="p3")
    assert out["p4"] == [to_a]
    assert out["p5"] == []
    bridge.check_counters()


def test_mac_flush_floods_again(bridge):
    """Phase 1: A broadcasts on p1; p2 and p3 are silent.
    Phase 2: C on a new port p4 sends C->A; then mac.flush (all ports).
    Phase 3: D on a new port p5 sends D->A.

    Expects C->A on p1 only; mac.flush to report 2 entries (A and C) and leave mac.list empty;
    D->A, now to an unknown address, flooded to p1, p2, p3 and p4.
    """
    a1 = udp_frame(A, BROADCAST, b"A on p1")
    c_to_a = udp_frame(C, A, b"C to A")
    d_to_a = udp_frame(D, A, b"D to A after flush")
    bridge.port("p1", [a1])
    bridge.port("p2")
    bridge.port("p3")
    bridge.start()
    bridge.wait_counts(rx={"p1": 1}, tx={"p2": 1, "p3": 1})
    bridge.wait_macs({(A, 0, "p1")})

    bridge.add_port("p4", [c_to_a])
    bridge.wait_counts(rx={"p4": 1}, tx={"p1": 1})
    bridge.wait_macs({(A, 0, "p1"), (C, 0, "p4")})
    assert bridge.call("mac.flush") == {"flushed": 2}
    assert bridge.macs() == set()

    bridge.add_port("p5", [d_to_a])
    bridge.wait_counts(rx={"p5": 1}, tx={"p1": 2, "p2": 2, "p3": 2, "p4": 1, "p5": 0})
    bridge.wait_macs({(D, 0, "p5")})
    out = bridge.finish()
    assert out["p1"] == [c_to_a, d_to_a]
    assert out["p2"] == [a1, d_to_a]
    assert out["p3"] == [a1, d_to_a]
    assert out["p4"] == [d_to_a]
    assert out["p5"] == []
    bridge.check_counters()


def test_vlan_access_trunk_isolation(bridge):
    """Ports: a10 (access, tag 10), b10 (access, tag 10, silent), tr (trunk, trunks [10, 20]),
    a20 (access, tag 20, silent).
    a10 sends an untagged broadcast u; tr sends tagged broadcasts VID 10, VID 30 and VID 20.

    Expects u on tr tagged VID 10 and on b10 unchanged, never on a20; the VID 10 frame untagged
    on a10 and b10 only; the VID 20 frame untagged on a20 only; the VID 30 frame dropped on tr
    as vlan_not_allowed and not learned; learned: A in VLAN 10 on a10, T in VLANs 10 and 20 on
    tr.
    """
    u = udp_frame(A, BROADCAST, b"untagged on a10")
    t10 = tagged_udp(T, BROADCAST, 10, payload=b"vid 10 on tr")
    t30 = tagged_udp(T, BROADCAST, 30, payload=b"vid 30 on tr")
    t20 = tagged_udp(T, BROADCAST, 20, payload=b"vid 20 on tr")
    bridge.port("a10", [u], vlan_mode="access", tag=10)
    bridge.port("b10", vlan_mode="access", tag=10)
    bridge.port("tr", [t10, t30, t20], vlan_mode="trunk", trunks=[10, 20])
    bridge.port("a20", vlan_mode="access", tag=20)
    bridge.start()
    bridge.wait_counts(rx={"a10": 1, "tr": 3}, tx={"a10": 1, "b10": 2, "tr": 1, "a20": 1},
                       drops={("tr", "vlan_not_allowed"): 1})
    bridge.wait_macs({(A, 10, "a10"), (T, 10, "tr"), (T, 20, "tr")})
    out = bridge.finish()
    assert out["tr"] == [tag(u, 10)]
    assert out["a10"] == [untag(t10)]
    assert_frames(out["b10"], [u], [untag(t10)], where="b10")
    assert out["a20"] == [untag(t20)]
    assert drops(bridge, "tr") == {"vlan_not_allowed": 1}
    bridge.check_counters()


def test_access_port_drops_tagged_frames(bridge):
    """Ports: a10 (access, tag 10), b10 (access, tag 10, silent), tr (trunk, all VLANs, silent).
    a10 sends a broadcast tagged VID 10 (its own VLAN), one tagged VID 20, then an untagged one.

    Expects both tagged frames dropped on a10 as vlan_not_allowed; the untagged frame on b10
    unchanged and on tr tagged VID 10.
    """
    t10 = tagged_udp(A, BROADCAST, 10, payload=b"tagged 10 on access")
    t20 = tagged_udp(A, BROADCAST, 20, payload=b"tagged 20 on access")
    u = udp_frame(A, BROADCAST, b"untagged on access")
    bridge.port("a10", [t10, t20, u], vlan_mode="access", tag=10)
    bridge.port("b10", vlan_mode="access", tag=10)
    bridge.port("tr")
    bridge.start()
    bridge.wait_counts(rx={"a10": 3}, tx={"b10": 1, "tr": 1},
                       drops={("a10", "vlan_not_allowed"): 2})
    out = bridge.finish()
    assert out["b10"] == [u]
    assert out["tr"] == [tag(u, 10)]
    assert out["a10"] == []
    assert drops(bridge, "a10") == {"vlan_not_allowed": 2}
    bridge.check_counters()


def test_priority_tagged_frame_accepted_on_access_port(bridge):
    """Ports: a10 (access, tag 10), b10 (access, tag 10, silent), tr (trunk, trunks [10]).
    a10 sends a broadcast with a priority tag (VID 0, PCP 5).

    Expects it accepted into VLAN 10: on b10 with the tag removed, on tr with the tag's VID set
    to 10 and its PCP 5 kept (the priority is the point of a priority tag); no drop; A learned
    in VLAN 10.
    """
    p = tagged_udp(A, BROADCAST, 0, prio=5, payload=b"priority tagged")
    bridge.port("a10", [p], vlan_mode="access", tag=10)
    bridge.port("b10", vlan_mode="access", tag=10)
    bridge.port("tr", vlan_mode="trunk", trunks=[10])
    bridge.start()
    bridge.wait_counts(rx={"a10": 1}, tx={"b10": 1, "tr": 1})
    bridge.wait_macs({(A, 10, "a10")})
    out = bridge.finish()
    assert out["b10"] == [untag(p)]
    assert out["tr"] == [set_vid(p, 10)]
    assert out["tr"][0][14] >> 5 == 5
    assert not drops(bridge, "a10")
    bridge.check_counters()


def test_priority_tag_over_another_tag_does_not_hop_vlans(bridge):
    """VLAN hopping with a priority tag. Ports: a10 (access, tag 10), trn (trunk, native tag 10,
    trunks [20], silent), a20 (access, tag 20, silent), b10 (access, tag 10, silent).
    a10 sends a broadcast whose outer tag is a priority tag (VID 0) and whose inner tag is VID
    20, then an untagged broadcast.

    Expects the double-tagged frame dropped on a10 as vlan_after_priority_tag: a priority tag
    only carries a priority, and what an access port accepts is untagged after it (before, it
    entered VLAN 10 and left the trunk, whose native VLAN 10 is untagged, tagged VID 20: in
    another tenant's VLAN). The untagged frame reaches b10 unchanged and trn untagged.
    """
    hop = tag(tagged_udp(A, BROADCAST, 20, payload=b"hop to 20"), 0, pcp=3)
    u = udp_frame(A, BROADCAST, b"untagged on a10")
    bridge.port("a10", [hop, u], vlan_mode="access", tag=10)
    bridge.port("trn", vlan_mode="trunk", tag=10, trunks=[20])
    bridge.port("a20", vlan_mode="access", tag=20)
    bridge.port("b10", vlan_mode="access", tag=10)
    bridge.start()
    bridge.wait_counts(rx={"a10": 2}, tx={"trn": 1, "b10": 1, "a20": 0},
                       drops={("a10", "vlan_after_priority_tag"): 1})
    out = bridge.finish()
    assert out["trn"] == [u]
    assert out["b10"] == [u]
    assert out["a20"] == []
    assert drops(bridge, "a10") == {"vlan_after_priority_tag": 1}
    bridge.check_counters()


def test_frames_with_more_tags_than_parsed_are_dropped(bridge):
    """Ports: tr (trunk, all VLANs), t2 (trunk, all VLANs, silent).
    tr sends a broadcast with three tags (VIDs 10, 20, 30) and one with two (10, 20).

    Expects the three-tag frame dropped on tr as vlan_too_deep (ferry reads two tags; what lies
    behind a third was never seen by the rules or connection tracking, and used to be forwarded
    untracked by a catch-all rule); the two-tag frame on t2 unchanged.
    """
    two = tagged_udp(T, BROADCAST, 20, payload=b"two tags")
    three = tag(tag(tagged_udp(T, BROADCAST, 30, payload=b"three tags"), 20), 10)
    bridge.port("tr", [three, tag(two, 10)])
    bridge.port("t2")
    bridge.start()
    bridge.wait_counts(rx={"tr": 2}, tx={"t2": 1}, drops={("tr", "vlan_too_deep"): 1})
    out = bridge.finish()
    assert out["t2"] == [tag(two, 10)]
    assert drops(bridge, "tr") == {"vlan_too_deep": 1}
    bridge.check_counters()


def test_trunk_native_vlan(bridge):
    """Ports: trn (trunk, native tag 5, trunks [10]), a5 (access, tag 5), a10 (access, tag 10),
    t0 (trunk with defaults: native VLAN 0, all VLANs tagged, silent), v0 (trunk, native 0,
    trunks [99], i.e. only the untagged domain and VLAN 99, silent).
    trn sends an untagged broadcast n; a5 and a10 each send an untagged broadcast.

    Expects n to enter VLAN 5: on a5 untagged, on t0 tagged VID 5, not on v0 or a10. a5's frame
    on trn untagged (native VLAN leaves untagged) and on t0 tagged 5; a10's frame on trn and t0
    tagged VID 10. v0 receives nothing.
    """
    n = udp_frame(N, BROADCAST, b"untagged on trunk")
    e = udp_frame(E, BROADCAST, b"untagged on a5")
    x = udp_frame(X, BROADCAST, b"untagged on a10")
    bridge.port("trn", [n], vlan_mode="trunk", tag=5, trunks=[10])
    bridge.port("a5", [e], vlan_mode="access", tag=5)
    bridge.port("a10", [x], vlan_mode="access", tag=10)
    bridge.port("t0")
    bridge.port("v0", vlan_mode="trunk", trunks=[99])
    bridge.start()
    bridge.wait_counts(rx={"trn": 1, "a5": 1, "a10": 1},
                       tx={"trn": 2, "a5": 1, "a10": 0, "t0": 3, "v0": 0})
    bridge.wait_macs({(N, 5, "trn"), (E, 5, "a5"), (X, 10, "a10")})
    out = bridge.finish()
    assert out["a5"] == [n]
    assert_frames(out["trn"], [e], [tag(x, 10)], where="trn")
    assert_frames(out["t0"], [tag(n, 5)], [tag(e, 5)], [tag(x, 10)], where="t0")
    assert out["a10"] == []
    assert out["v0"] == []
    bridge.check_counters()


def malformed_frames(src):
    """Frames the parser must refuse, with the drop reason each is counted under."""
    ihl3 = bytearray(udp_frame(src, BROADCAST, b"ihl 3"))
    ihl3[14] = 0x43  # version 4, IHL 3 (12 bytes, below the 20-byte minimum)
    bad_l4 = udp_frame(src, BROADCAST, b"")  # total length cut to 24: 4 bytes of UDP
    bad_l4 = bad_l4[:16] + (24).to_bytes(2, "big") + bad_l4[18:]
    truncated_tag = bytes.fromhex("ffffffffffff") + bytes.fromhex(src.replace(":", "")) + \
        bytes.fromhex("8100000a")  # TPID and TCI, no inner ethertype
    return [(bytes(range(10)), "runt"), (bytes(ihl3), "bad_l3"), (bad_l4, "bad_l4"),
            (truncated_tag, "bad_vlan")]


def test_malformed_frames_dropped_good_frames_pass(bridge):
    """p1 sends a good broadcast, a 10-byte runt, an IPv4 frame with IHL 3, an IPv4 frame whose
    total length leaves 4 bytes for the UDP header, a frame cut after its VLAN tag, and another
    good broadcast; p2 is silent.

    Expects exactly the two good frames on p2, in order; p1's drops runt, bad_l3, bad_l4 and
    bad_vlan at 1 each; the malformed frames' source (M) never learned.
    """
    good1 = udp_frame(A, BROADCAST, b"good 1")
    good2 = udp_frame(A, BROADCAST, b"good 2")
    bad = malformed_frames(mac(0x66))
    bridge.port("p1", [good1] + [f for f, _ in bad] + [good2])
    bridge.port("p2")
    bridge.start()
    bridge.wait_counts(rx={"p1": 2 + len(bad)}, tx={"p2": 2},
                       drops={("p1", reason): 1 for _, reason in bad})
    bridge.wait_macs({(A, 0, "p1")})
    out = bridge.finish()
    assert out["p2"] == [good1, good2]
    assert out["p1"] == []
    assert drops(bridge, "p1") == {reason: 1 for _, reason in bad}
    assert not drops(bridge, "p2")
    bridge.check_counters()


def test_port_counters_match_pcaps(bridge):
    """p1 (trunk, all VLANs) sends an untagged 60-byte broadcast, an untagged 1042-byte
    broadcast, a broadcast tagged VID 7 and a 10-byte runt; p2 (access, tag 7) sends an
    untagged broadcast; p3 (trunk, all VLANs) is silent.

    Expects port.stats rx_packets/rx_bytes to equal what each rx pcap holds (the runt
    included: it was received, then dropped), tx_packets/tx_bytes to equal what each tx pcap
    holds (tags included), the frames themselves as the VLAN rules say, and one runt drop.
    """
    small = udp_frame(A, BROADCAST, b"small")
    big = udp_frame(A, BROADCAST, bytes(1000))
    t7 = tagged_udp(A, BROADCAST, 7, payload=b"tagged 7")
    runt = bytes(10)
    b7 = udp_frame(B, BROADCAST, b"from access 7")
    bridge.port("p1", [small, big, t7, runt])
    bridge.port("p2", [b7], vlan_mode="access", tag=7)
    bridge.port("p3")
    bridge.start()
    bridge.wait_counts(rx={"p1": 4, "p2": 1}, tx={"p1": 1, "p2": 1, "p3": 4},
                       drops={("p1", "runt"): 1})
    out = bridge.finish()
    assert out["p1"] == [tag(b7, 7)]
    assert out["p2"] == [untag(t7)]
    assert_frames(out["p3"], [small, big, t7], [tag(b7, 7)], where="p3")
    bridge.check_counters()
    st = bridge.final_stats
    assert (st["p1"]["rx_packets"], st["p1"]["rx_bytes"]) == (4, 60 + 1042 + 64 + 10)
    assert (st["p3"]["tx_packets"], st["p3"]["tx_bytes"]) == (4, 60 + 1042 + 64 + 64)
    assert drops(bridge, "p1") == {"runt": 1}
    # Every reason of ferryd's table is reported, zero or not.
    assert set(st["p1"]["drops"]) == {r["name"] for r in counter_catalog()["drop_reasons"]}
