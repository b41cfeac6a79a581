"""Functional tests of ferryd's flow-rule actions, tables, priorities and hit counters
(docs/rules.md) through net_pcap ports.

Each test writes the frames every input port receives into rx pcap files, installs rules (in the
config, or with rule.add before the input port is added), and compares what each port's tx pcap
holds with the expected frames byte for byte. Match fields are in test_rules_match.py, the
control methods and rule changes under traffic in test_rules_control.py.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))

from scapy.layers.inet import UDP  # noqa: E402

from pcap_util import BROADCAST, assert_frames, assert_phases, mac  # noqa: E402
from pcap_util import drops  # noqa: E402
from pcap_util import arp_frame as arp  # noqa: E402
from pcap_util import ipv4_frame as v4  # noqa: E402
from pcap_util import ipv6_frame as v6  # noqa: E402
from pcap_util import rule, rule_hits as hits, set_vid, tag  # noqa: E402
from pcap_util import tcp4_frame as tcp  # noqa: E402
from pcap_util import udp4_frame as udp  # noqa: E402
from pcap_util import untag, volume  # noqa: E402
from pcap_util import vlan_frame as tagged  # noqa: E402

# Default source and destination of the frames, a third host, an address nobody has.
S, D, C, N = mac(1), mac(2), mac(3), mac(4)
UDP4 = {"eth_type": "ipv4", "ip_proto": "udp"}
TCP4 = {"eth_type": "ipv4", "ip_proto": "tcp"}


# ---------------------------------------------------------------------------------------------
# Actions


def test_action_output_unchanged(bridge):
    """Port `in` sends an untagged 60-byte frame, a 1514-byte frame, a double-tagged frame and
    an ARP request; the only rule (no match) outputs to `out`.

    Expects the four frames on `out` byte for byte, in order; nothing back on `in`.
    """
    frames = [v4(payload=b"small"), v4(payload=bytes(1472)), tagged(10, inner=20), arp()]
    assert len(frames[1]) == 1514
    bridge.port("in", frames)
    bridge.port("out")
    bridge.port("other")
    bridge.ferryd.config["rules"] = [rule(1, ["output:out"])]
    bridge.start()
    bridge.wait_counts(rx={"in": 4}, tx={"out": 4})
    out = bridge.finish()
    assert out["out"] == frames
    assert out["in"] == [] and out["other"] == []
    bridge.check_counters()


def test_action_drop_counted(bridge):
    """Port `in` sends 5 frames, 3 of them TCP to port 23; rule 1 (priority 10, TCP dport 23)
    drops, rule 2 (priority 0) outputs to `out`.

    Expects the 2 other frames on `out`, in order; drops.rule_drop == 3 on `in` and no other
    drop; rule 1's counters at 3 frames.
    """
    telnet = [tcp(23, payload=b"t%d" % i) for i in range(3)]
    others = [udp(23), tcp(22)]
    frames = [telnet[0], others[0], telnet[1], telnet[2], others[1]]
    bridge.port("in", frames)
    bridge.port("out")
    bridge.ferryd.config["rules"] = [rule(1, ["drop"], dict(TCP4, l4_dst=23), priority=10),
                                     rule(2, ["output:out"])]
    bridge.start()
    bridge.wait_counts(rx={"in": 5}, tx={"out": 2}, drops={("in", "rule_drop"): 3})
    assert hits(bridge) == {1: volume(telnet), 2: volume(others)}
    out = bridge.finish()
    assert out["out"] == others
    assert drops(bridge, "in") == {"rule_drop": 3}
    assert not drops(bridge, "out")
    bridge.check_counters()


@pytest.mark.parametrize("actions", [["push_vlan:5"], ["pop_vlan"]], ids=["push", "pop"])
def test_rule_sending_nowhere_counts_rule_drop(bridge, actions):
    """Port `in` sends two tagged frames; the only rule's actions (a VLAN edit) send the packet
    nowhere.

    Expects nothing on any port and drops.rule_drop == 2 on `in`.
    """
    frames = [tagged(7, payload=b"a", minimum=64), tagged(7, payload=b"b", minimum=64)]
    bridge.port("in", frames)
    bridge.port("out")
    bridge.ferryd.config["rules"] = [rule(1, actions)]
    bridge.start()
    bridge.wait_counts(rx={"in": 2}, drops={("in", "rule_drop"): 2})
    out = bridge.finish()
    assert out["out"] == [] and out["in"] == []
    assert drops(bridge, "in") == {"rule_drop": 2}


def test_action_normal_learns_and_keeps_vlan_modes(bridge):
    """Rules: 1 (priority 10, UDP dport 9) drops; 2 (priority 0) `normal`. Ports: p1 (trunk),
    p2 (trunk), a7 (access, tag 7).
    Phase 1: A on p1 sends an untagged broadcast, a broadcast tagged VID 7, and a broadcast to
    UDP port 9. Phase 2: C on a new port p3 sends C->A (untagged) and C->nobody.

    Expects the untagged broadcast on p2 only (a7 is in VLAN 7), the VID-7 broadcast on p2
    tagged and on a7 untagged, the port-9 frame dropped (rule_drop 1); A learned on p1 in VLANs
    0 and 7; then C->A on p1 only and C->nobody flooded to p1 and p2; C learned on p3.
    """
    A = mac(0x0a)
    b0 = v4(smac=A, dmac=BROADCAST, payload=b"vlan 0")
    b7 = tagged(7, smac=A, dmac=BROADCAST, payload=b"vlan 7", minimum=64)
    discard = v4(UDP(sport=1, dport=9), smac=A, dmac=BROADCAST, payload=b"discard")
    to_a = v4(smac=C, dmac=A, payload=b"C to A")
    to_nobody = v4(smac=C, dmac=N, payload=b"C to nobody")
    bridge.port("p1", [b0, b7, discard])
    bridge.port("p2")
    bridge.port("a7", vlan_mode="access", tag=7)
    bridge.ferryd.config["rules"] = [rule(1, ["drop"], dict(UDP4, l4_dst=9), priority=10),
                                     rule(2, ["normal"])]
    bridge.start()
    bridge.wait_counts(rx={"p1": 3}, tx={"p2": 2, "a7": 1}, drops={("p1", "rule_drop"): 1})
    bridge.wait_macs({(A, 0, "p1"), (A, 7, "p1")})

    bridge.add_port("p3", [to_a, to_nobody])
    bridge.wait_counts(rx={"p3": 2}, tx={"p1": 2, "p2": 3, "a7": 1})
    bridge.wait_macs({(A, 0, "p1"), (A, 7, "p1"), (C, 0, "p3")})
    assert hits(bridge) == {1: volume([discard]), 2: volume([b0, b7, to_a, to_nobody])}
    out = bridge.finish()
    assert out["p1"] == [to_a, to_nobody]
    assert_phases(out["p2"], [[b0, b7]], [[to_nobody]], where="p2")
    assert out["a7"] == [untag(b7)]
    assert out["p3"] == []
    assert drops(bridge, "p1") == {"rule_drop": 1}
    bridge.check_counters()


def test_action_flood_all_other_ports_unchanged(bridge):
    """Rules: 1 (priority 10, eth_type arp) floods; 2 (priority 0) outputs to p2. Port p1 sends
    an ARP request, a unicast UDP frame, and a tagged ARP request; p2, p3, p4 are silent.

    Expects both ARP requests unchanged on p2, p3 and p4 (not back on p1), the UDP frame on p2
    only.
    """
    a1, a2 = arp(psrc="10.0.0.21"), arp(psrc="10.0.0.22", vid=12)
    u = udp(payload=b"unicast")
    bridge.port("p1", [a1, u, a2])
    for p in ("p2", "p3", "p4"):
        bridge.port(p)
    bridge.ferryd.config["rules"] = [rule(1, ["flood"], {"eth_type": "arp"}, priority=10),
                                     rule(2, ["output:p2"])]
    bridge.start()
    bridge.wait_counts(rx={"p1": 3}, tx={"p1": 0, "p2": 3, "p3": 2, "p4": 2})
    out = bridge.finish()
    assert out["p1"] == []
    assert out["p2"] == [a1, u, a2]
    assert out["p3"] == [a1, a2]
    assert out["p4"] == [a1, a2]
    assert not drops(bridge, "p1")
    bridge.check_counters()


def test_action_push_vlan(bridge):
    """Rule: push_vlan:100, output:out. Port `in` sends an untagged frame and a frame tagged VID
    7 (PCP 3).

    Expects on `out` the untagged frame with a tag TPID 0x8100, VID 100, PCP 0 inserted after
    the addresses, and the tagged frame with that tag pushed outside its own (VID 7 kept).
    """
    plain = v4(payload=b"plain")
    t7 = tagged(7, pcp=3, payload=b"tagged 7")
    bridge.port("in", [plain, t7])
    bridge.port("out")
    bridge.ferryd.config["rules"] = [rule(1, ["push_vlan:100", "output:out"])]
    bridge.start()
    bridge.wait_counts(rx={"in": 2}, tx={"out": 2})
    out = bridge.finish()
    assert out["out"] == [tag(plain, 100), tag(t7, 100)]
    bridge.check_counters()


def test_action_pop_vlan(bridge):
    """Rule: pop_vlan, output:out. Port `in` sends a frame tagged VID 7 (64 bytes), a QinQ frame
    (outer 10, inner 20) and an untagged frame.

    Expects on `out` the first without its tag (60 bytes), the second with only its inner tag
    left, the untagged one unchanged.
    """
    t7 = tagged(7, payload=b"tagged", minimum=64)
    qinq = tagged(10, inner=20, payload=b"qinq", minimum=64)
    plain = v4(payload=b"plain")
    bridge.port("in", [t7, qinq, plain])
    bridge.port("out")
    bridge.ferryd.config["rules"] = [rule(1, ["pop_vlan", "output:out"])]
    bridge.start()
    bridge.wait_counts(rx={"in": 3}, tx={"out": 3})
    out = bridge.finish()
    assert untag(qinq)[12:16] == bytes.fromhex("81000014")
    assert out["out"] == [untag(t7), untag(qinq), plain]
    bridge.check_counters()


def test_action_set_vlan(bridge):
    """Rule: set_vlan:20, output:out. Port `in` sends a frame tagged VID 10 with PCP 5, an
    untagged frame, and a QinQ frame (outer 10, inner 30).

    Expects on `out` the VID rewritten to 20 with PCP 5 kept; the untagged frame with a pushed
    tag VID 20 (TPID 0x8100, PCP 0); the QinQ frame with its outer VID 20, inner 30 kept.
    """
    t10 = tagged(10, pcp=5, payload=b"pcp 5")
    plain = v4(payload=b"plain")
    qinq = tagged(10, inner=30, payload=b"qinq")
    bridge.port("in", [t10, plain, qinq])
    bridge.port("out")
    bridge.ferryd.config["rules"] = [rule(1, ["set_vlan:20", "output:out"])]
    bridge.start()
    bridge.wait_counts(rx={"in": 3}, tx={"out": 3})
    out = bridge.finish()
    assert out["out"] == [set_vid(t10, 20), tag(plain, 20), set_vid(qinq, 20)]
    assert out["out"][0][14] >> 5 == 5
    bridge.check_counters()


def test_action_mirror(bridge):
    """Rules: 1 (priority 10, eth_src S) mirror:m, push_vlan:5, output:out; 2 (priority 5, eth_src
    C) mirror:m only; 3 (priority 0) output:out. Port `in` sends 2 frames from S, 1 from C and 1
    from D.

    Expects on `m` an unchanged copy of the S frames and of the C frame (taken before the
    push); on `out` the S frames tagged VID 5 and the D frame; the C frame, sent nowhere else,
    counted as rule_drop.
    """
    s1, s2 = v4(smac=S, payload=b"s1"), v4(smac=S, payload=b"s2")
    c1 = v4(smac=C, payload=b"c1")
    d1 = v4(smac=D, dmac=S, payload=b"d1")
    bridge.port("in", [s1, c1, s2, d1])
    bridge.port("m")
    bridge.port("out")
    bridge.ferryd.config["rules"] = [
        rule(1, ["mirror:m", "push_vlan:5", "output:out"], {"eth_src": S}, priority=10),
        rule(2, ["mirror:m"], {"eth_src": C}, priority=5),
        rule(3, ["output:out"])]
    bridge.start()
    bridge.wait_counts(rx={"in": 4}, tx={"m": 3, "out": 3}, drops={("in", "rule_drop"): 1})
    out = bridge.finish()
    assert out["m"] == [s1, c1, s2]
    assert out["out"] == [tag(s1, 5), tag(s2, 5), d1]
    assert drops(bridge, "in") == {"rule_drop": 1}
    bridge.check_counters()


def test_action_meter_drops_red(bridge):
    """Meter 1: cir 8 kbit/s, cbs 600 bytes, pir 16 kbit/s, pbs 1200 bytes (buckets start full).
    Rule: meter:1, output:out. Port `in` sends a burst of 200 60-byte frames.

    Expects roughly the peak bucket's worth (1200 / 60 = 20 frames, plus what refills during
    the burst) on `out`, unchanged and in order (a prefix-preserving subsequence), the others
    counted as drops.meter on `in`; sent + metered == 200; the rule counts all 200.
    """
    frames = [v4(payload=b"m%03d" % i) for i in range(200)]
    bridge.port("in", frames)
    bridge.port("out")
    bridge.ferryd.config["meters"] = [{"id": 1, "cir_kbps": 8, "cbs_bytes": 600,
                                       "pir_kbps": 16, "pbs_bytes": 1200}]
    bridge.ferryd.config["rules"] = [rule(1, ["meter:1", "output:out"])]
    bridge.start()
    bridge.wait_counts(rx={"in": 200})
    out = bridge.finish()
    sent = out["out"]
    metered = bridge.final_stats["in"]["drops"]["meter"]
    assert 20 <= len(sent) <= 40, f"{len(sent)} frames passed the meter"
    assert len(sent) + metered == 200
    assert drops(bridge, "in") == {"meter": metered}
    assert sent[:20] == frames[:20], "the first 20 frames fit the full bucket"
    pos = iter(frames)
    assert all(f in pos for f in sent), "frames passed out of order or changed"
    bridge.check_counters()


def test_goto_table(bridge):
    """Table 0: rule 1 (in_port p1) goto_table:1; rule 2 (in_port p2) output:o2. Table 1: rule
    11 (ip_dst 10.0.1.0/24) output:o1; rule 12 (ip_dst 10.0.2.0/24) output:o2. Port p1 sends to
    10.0.1.5, 10.0.2.5, 10.0.3.5 and an ARP request; p2 sends to 10.0.3.5; p3 sends one frame.

    Expects 10.0.1.5 on o1, 10.0.2.5 and p2's frame on o2; p1's 10.0.3.5 and ARP missing in
    table 1 and p3's frame missing in table 0 counted as drops.no_rule on their ports; rule 1
    counted 4 frames, rules 11 and 12 one each.
    """
    to1, to2, to3 = (v4(dst=f"10.0.{i}.5", payload=b"p1") for i in (1, 2, 3))
    a = arp()
    p2f = v4(dst="10.0.3.5", payload=b"p2")
    p3f = v4(dst="10.0.1.5", payload=b"p3")
    bridge.port("p1", [to1, to2, to3, a])
    bridge.port("p2", [p2f])
    bridge.port("p3", [p3f])
    bridge.port("o1")
    bridge.port("o2")
    bridge.ferryd.config["rules"] = [
        rule(1, ["goto_table:1"], {"in_port": "p1"}),
        rule(2, ["output:o2"], {"in_port": "p2"}),
        rule(11, ["output:o1"], {"ip_dst": "10.0.1.0/24"}, table=1),
        rule(12, ["output:o2"], {"ip_dst": "10.0.2.0/24"}, table=1)]
    bridge.start()
    bridge.wait_counts(rx={"p1": 4, "p2": 1, "p3": 1}, tx={"o1": 1, "o2": 2},
                       drops={("p1", "no_rule"): 2, ("p3", "no_rule"): 1})
    assert hits(bridge) == {1: volume([to1, to2, to3, a]), 2: volume([p2f]),
                            11: volume([to1]), 12: volume([to2])}
    out = bridge.finish()
    assert out["o1"] == [to1]
    assert_frames(out["o2"], [to2], [p2f], where="o2")
    assert drops(bridge, "p1") == {"no_rule": 2}
    assert drops(bridge, "p3") == {"no_rule": 1}
    assert not drops(bridge, "p2")
    bridge.check_counters()


@pytest.mark.parametrize("case", [
    "push_then_match_new_vid",
    "pop_qinq_then_match_inner_vid",
])
def test_goto_table_sees_vlan_edits(bridge, case):
    """Table 0: one rule edits the VLAN (push_vlan:5 on an untagged frame, or pop_vlan on a
    QinQ frame, outer 10 inner 20) then goto_table:1. Table 1: `vlan` of the edited frame
    (5, or 20: the tag now outermost) -> hit; vlan "none" -> none; a catch-all at priority -1
    -> miss.

    Expects the edited frame on `hit` (the new tag in front, or only the inner tag left): a
    later table matches the frame as the actions left it.
    """
    if case == "push_then_match_new_vid":
        sent, edit, vid = v4(payload=b"push"), "push_vlan:5", 5
        want = tag(sent, 5)
    else:
        sent, edit, vid = tagged(10, inner=20, payload=b"qinq", minimum=64), "pop_vlan", 20
        want = untag(sent)
    bridge.port("in", [sent])
    for p in ("hit", "none", "miss"):
        bridge.port(p)
    bridge.ferryd.config["rules"] = [
        rule(1, [edit, "goto_table:1"]),
        rule(2, ["output:hit"], {"vlan": vid}, table=1),
        rule(3, ["output:none"], {"vlan": "none"}, table=1),
        rule(4, ["output:miss"], table=1, priority=-1)]
    bridge.start()
    bridge.wait_counts(rx={"in": 1})
    out = bridge.finish()
    assert (out["hit"], out["none"], out["miss"]) == ([want], [], [])


@pytest.mark.parametrize("actions, want", [
    (["output:a", "output:b"], {"a": "same", "b": "same"}),
    (["output:a", "push_vlan:5", "output:b"], {"a": "same", "b": "tagged"}),
    (["mirror:m", "output:a", "output:b"], {"m": "same", "a": "same", "b": "same"}),
    (["output:a", "mirror:m"], {"a": "same", "m": "same"}),
    (["push_vlan:5", "output:a", "mirror:m"], {"a": "tagged", "m": "tagged"}),
], ids=["output_output", "output_push_output", "mirror_output_output", "output_mirror",
        "push_output_mirror"])
def test_actions_run_in_order(bridge, actions, want):
    """One rule with several sending actions; port `in` sends two untagged frames.

    Expects every output and mirror of the list to send each frame once, as the actions before
    it left the frame (unchanged, or tagged VID 5), in order; nothing on the other ports.
    """
    frames = [v4(payload=b"first"), v4(payload=b"second")]
    bridge.port("in", frames)
    for p in ("a", "b", "m"):
        bridge.port(p)
    bridge.ferryd.config["rules"] = [rule(1, actions)]
    bridge.start()
    bridge.wait_counts(rx={"in": 2})
    out = bridge.finish()
    expect = {p: [] for p in ("a", "b", "m")}
    for p, how in want.items():
        expect[p] = frames if how == "same" else [tag(f, 5) for f in frames]
    assert {p: out[p] for p in expect} == expect
    assert not drops(bridge, "in")


# ---------------------------------------------------------------------------------------------
# Tables, priorities, counters

PRIORITY_RULES = [
    rule(1, ["output:low"], UDP4, priority=-10),
    rule(2, ["output:mid"], dict(UDP4, l4_dst="50-59"), priority=0),
    rule(3, ["output:high"], dict(UDP4, l4_dst=53), priority=7),
    rule(4, ["output:top"], dict(UDP4, l4_dst=53, ip_src="10.0.0.9"), priority=100),
    rule(5, ["output:broad"], {"ip_src": "10.0.0.64/26"}, priority=200),
]


@pytest.mark.parametrize("how", ["config_low_first", "config_high_first", "add_high_first",
                                 "add_one_by_one_low_first"])
def test_priority_higher_wins_regardless_of_order(bridge, how):
    """Nested overlapping rules: 1 (priority -10, any UDP) -> low, 2 (0, dport 50-59) -> mid,
    3 (7, dport 53) -> high, 4 (100, dport 53 from 10.0.0.9) -> top, and the least specific
    on top of them: 5 (200, source 10.0.0.64/26) -> broad; installed in the config or with
    rule.add, in increasing or decreasing priority order. Port `in` sends UDP to 53 from
    10.0.0.9, to 53, to 55, to 80, UDP to 53 from 10.0.0.70, and a TCP frame to 53.

    Expects each frame on the port of the highest-priority rule it matches, however specific;
    the TCP frame, which no rule matches, dropped as no_rule.
    """
    frames = {"top": v4(UDP(dport=53), src="10.0.0.9"), "high": udp(53), "mid": udp(55),
              "low": udp(80), "broad": v4(UDP(dport=53), src="10.0.0.70")}
    unmatched = tcp(53)
    sent = list(frames.values()) + [unmatched]
    for p in frames:
        bridge.port(p)
    ordered = PRIORITY_RULES if how.endswith("low_first") else PRIORITY_RULES[::-1]
    if how.startswith("config"):
        bridge.port("in", sent)
        bridge.ferryd.config["rules"] = ordered
        bridge.start()
    else:
        bridge.start()
        if how == "add_high_first":
            bridge.call("rule.add", {"rules": ordered})
        else:
            for r in ordered:
                bridge.call("rule.add", {"rule": r})
        bridge.add_port("in", sent)
    bridge.wait_counts(rx={"in": len(sent)}, tx={p: 1 for p in frames},
                       drops={("in", "no_rule"): 1})
    out = bridge.finish()
    for p, f in frames.items():
        assert out[p] == [f], p
    assert drops(bridge, "in") == {"no_rule": 1}


def test_rule_counters_packets_and_bytes(bridge):
    """Rules: 1 (priority 10, dport 1) output:a; 2 (priority 5, dport 2) drop; 3 (priority 0)
    output:b; 4 (table 2, never reached). Phase 1: port in1 sends 3 frames to port 1 (60, 100
    and 1000 bytes), 2 to port 2, 4 others. Then rule 1 is deleted and added again, and rule 5
    (priority 20, dport 2) output:a is added. Phase 2: a new port in2 sends 2 frames to port 1
    and 1 to port 2.

    Expects after phase 1 rule.list packets/bytes (1: 3/1160, 2: 2 frames, 3: 4 frames, 4: 0)
    equal to the frames each matched; after phase 2, the re-added rule 1 counting only phase 2
    frames, rule 5 the new port-2 frame, rule 2 unchanged.
    """
    one = [udp(1, payload=b"a"), udp(1, payload=bytes(58)), udp(1, payload=bytes(958))]
    two = [udp(2, payload=b"x"), udp(2, payload=bytes(300))]
    rest = [udp(3), arp(), tcp(1), v6(UDP(dport=1))]
    assert [len(f) for f in one] == [60, 100, 1000]
    bridge.port("in1", [one[0], two[0], rest[0], one[1], rest[1], two[1], rest[2], one[2],
                        rest[3]])
    for p in ("a", "b"):
        bridge.port(p)
    bridge.ferryd.config["rules"] = [
        rule(1, ["output:a"], dict(UDP4, l4_dst=1), priority=10),
        rule(2, ["drop"], dict(UDP4, l4_dst=2), priority=5),
        rule(3, ["output:b"]),
        rule(4, ["output:b"], table=2)]
    bridge.start()
    bridge.wait_counts(rx={"in1": 9}, tx={"a": 3, "b": 4}, drops={("in1", "rule_drop"): 2})
    assert hits(bridge) == {1: volume(one), 2: volume(two), 3: volume(rest), 4: (0, 0)}
    assert hits(bridge)[1] == (3, 1160)

    bridge.call("rule.del", {"id": 1})
    bridge.call("rule.add", {"rules": [rule(1, ["output:a"], dict(UDP4, l4_dst=1), priority=10),
                                       rule(5, ["output:a"], dict(UDP4, l4_dst=2), priority=20)]})
    assert hits(bridge)[1] == (0, 0)
    one2 = [udp(1, payload=b"phase 2 a"), udp(1, payload=b"phase 2 b")]
    two2 = [udp(2, payload=b"phase 2 c")]
    bridge.add_port("in2", [one2[0], two2[0], one2[1]])
    bridge.wait_counts(rx={"in2": 3}, tx={"a": 6})
    assert hits(bridge) == {1: volume(one2), 2: volume(two), 3: volume(rest), 4: (0, 0),
                            5: volume(two2)}
    out = bridge.finish()
    assert out["a"] == one + [one2[0], two2[0], one2[1]]
    assert out["b"] == rest
    bridge.check_counters()


def test_empty_table0_is_l2_bridge(bridge):
    """Only table 1 has a rule (drop everything): table 0 is empty. Port p1 sends a broadcast
    from A; p2 and p3 are silent.

    Expects the L2 bridge: the broadcast on p2 and p3 unchanged, A learned on p1, no drop, the
    table-1 rule never hit.
    """
    b = v4(smac=mac(0x0a), dmac=BROADCAST, payload=b"bridged")
    bridge.port("p1", [b])
    bridge.port("p2")
    bridge.port("p3")
    bridge.ferryd.config["rules"] = [rule(1, ["drop"], table=1)]
    bridge.start()
    bridge.wait_counts(rx={"p1": 1}, tx={"p2": 1, "p3": 1})
    bridge.wait_macs({(mac(0x0a), 0, "p1")})
    assert hits(bridge) == {1: (0, 0)}
    out = bridge.finish()
    assert out["p2"] == [b] and out["p3"] == [b] and out["p1"] == []
    assert not any(drops(bridge, p) for p in bridge.ports)


def test_table0_miss_drops_no_rule(bridge):
    """Table 0 holds one rule (eth_type arp -> out). Port `in` sends an ARP request, 2 IPv4
    frames, an IPv6 frame and a tagged frame; a second port in2 sends one IPv4 frame.

    Expects the ARP request on `out`; the 4 others of `in` dropped as no_rule on `in`, the one
    of in2 as no_rule on in2; nothing else sent, nothing learned.
    """
    a = arp()
    others = [udp(payload=b"1"), tcp(), v6(), tagged(3)]
    bridge.port("in", [others[0], a] + others[1:])
    bridge.port("in2", [udp(payload=b"in2")])
    bridge.port("out")
    bridge.ferryd.config["rules"] = [rule(1, ["output:out"], {"eth_type": "arp"})]
    bridge.start()
    bridge.wait_counts(rx={"in": 5, "in2": 1}, tx={"out": 1},
                       drops={("in", "no_rule"): 4, ("in2", "no_rule"): 1})
    assert bridge.macs() == set()
    out = bridge.finish()
    assert out["out"] == [a] and out["in"] == [] and out["in2"] == []
    assert drops(bridge, "in") == {"no_rule": 4}
    assert drops(bridge, "in2") == {"no_rule": 1}
    bridge.check_counters()
