"""Functional tests of the flow-rule control methods (rule.add, rule.del, rule.list, rule.flush,
and port.del of a port rules use), and of rule changes while traffic flows.

Refused requests must name the right error code and change nothing: rule.list is compared
before and after. The traffic test replays two frames forever from a net_pcap port while rules
are swapped atomically, and checks that every frame came out whole, once.
"""
import os
import shutil
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))

from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

from ferry_harness import RpcError, wait_for  # noqa: E402
from pcap_util import WAIT_S, PcapBridge, frame, mac, rule, settled_stats, tally_pcap  # noqa: E402

INVALID_PARAMS, NOT_FOUND, CONFLICT = -32602, -32002, -32003
UDP4 = {"eth_type": "ipv4", "ip_proto": "udp"}


@pytest.fixture
def bridge(request):
    """A PcapBridge, stopped after the test; its directory (config, log, pcaps) is kept only
    when the test failed."""
    failed_before = request.session.testsfailed
    b = PcapBridge()
    yield b
    b.close()
    if request.session.testsfailed == failed_before:
        shutil.rmtree(b.ferryd.dir, ignore_errors=True)


def refused(b, method, params):
    """Calls method expecting an error; returns it (RpcError with code and message)."""
    with pytest.raises(RpcError) as e:
        b.call(method, params)
    return e.value


def ids(b, table=None):
    rows = b.call("rule.list", {} if table is None else {"table": table})
    return sorted(r["id"] for r in rows)


BASE_RULES = [
    rule(1, ["output:p2"], {"in_port": "p1"}, priority=10),
    rule(2, ["mirror:p3", "output:p1"], {"in_port": "p2"}, priority=10),
    rule(3, ["goto_table:1"], priority=0),
    rule(11, ["output:p3"], dict(UDP4, l4_dst="1000-2000"), table=1),
    rule(12, ["drop"], table=1, priority=-1),
    rule(21, ["output:p1"], {"eth_src": "02:00:00:00:00:00/ff:ff:ff:00:00:00"}, table=2),
]


@pytest.fixture
def ruled(bridge):
    """A running bridge of silent ports p1, p2, p3 holding BASE_RULES and meter 1."""
    for p in ("p1", "p2", "p3"):
        bridge.port(p)
    bridge.ferryd.config["meters"] = [{"id": 1, "cir_kbps": 1000, "cbs_bytes": 10000,
                                       "pir_kbps": 2000, "pbs_bytes": 20000}]
    bridge.ferryd.config["rules"] = BASE_RULES
    return bridge.start()


def test_rule_list_shows_rules_as_written(ruled):
    """No traffic. Expects rule.list to return every config rule with table and priority
    (defaults filled: table 0, priority 0), its match and actions as written, zero counters and
    offload "software..." (net_pcap offloads nothing), sorted by table then decreasing priority; rule.list {table: 1} only
    table 1's rules.
    """
    rows = ruled.call("rule.list")
    assert [r["id"] for r in rows] == [1, 2, 3, 11, 12, 21]
    by_id = {r["id"]: r for r in rows}
    for r in BASE_RULES:
        got = by_id[r["id"]]
        assert got["table"] == r.get("table", 0)
        assert got["priority"] == r.get("priority", 0)
        assert got["actions"] == r["actions"]
        assert got.get("match", {}) == r.get("match", {})
        assert (got["packets"], got["bytes"]) == (0, 0)
        # net_pcap offloads nothing; the text may go on to say why.
        assert got["offload"].startswith("software"), got["offload"]
    assert ids(ruled, 1) == [11, 12]
    assert ids(ruled, 5) == []


BAD_RULES = {
    "unknown_output_port": (rule(50, ["output:p9"]), NOT_FOUND, "p9"),
    "unknown_in_port": (rule(50, ["output:p1"], {"in_port": "nope"}), NOT_FOUND, "nope"),
    "unknown_mirror_port": (rule(50, ["mirror:p7", "output:p1"]), NOT_FOUND, "p7"),
    "unknown_meter": (rule(50, ["meter:9", "output:p1"]), NOT_FOUND, "actions"),
    "l4_value_outside_mask": (rule(50, ["drop"], dict(UDP4, l4_dst="0x51/0xf0")), INVALID_PARAMS,
                              "l4_dst"),
    "eth_src_outside_mask": (rule(50, ["drop"], {"eth_src": "02:00:00:00:00:01/ff:ff:ff:00:00:00"}),
                             INVALID_PARAMS, "eth_src"),
    "ip_prefix_host_bits": (rule(50, ["drop"], {"ip_dst": "10.1.2.3/8"}), INVALID_PARAMS,
                            "ip_dst"),
    "ip_prefix_too_long": (rule(50, ["drop"], {"ip_src": "10.0.0.0/33"}), INVALID_PARAMS,
                           "ip_src"),
    "ipv6_prefix_host_bits": (rule(50, ["drop"], {"ipv6_dst": "2001:db8::1/32"}),
                              INVALID_PARAMS, "ipv6_dst"),
    "reversed_range": (rule(50, ["drop"], dict(UDP4, l4_dst="2000-1000")), INVALID_PARAMS,
                       "l4_dst"),
    "l4_without_proto": (rule(50, ["drop"], {"l4_dst": 80}), INVALID_PARAMS, "l4_dst"),
    "unknown_match_key": (rule(50, ["drop"], {"colour": "red"}), INVALID_PARAMS, "colour"),
    "duplicate_id": (rule(11, ["drop"], table=3), CONFLICT, "id"),
    "ct_table_not_last": (rule(50, ["ct(zone=1,table=1)", "output:p1"], UDP4), INVALID_PARAMS,
                          "ct(table=N) must be the last"),
    "ct_mark_without_commit": (rule(50, ["ct(mark=5)", "output:p1"]), INVALID_PARAMS,
                               "needs commit"),
    "ct_nat_bad_range": (rule(50, ["ct(commit,nat(src=10.0.0.9-10.0.0.1))", "output:p1"]),
                         INVALID_PARAMS, "nat address range is empty"),
    "ct_twice": (rule(50, ["ct(commit)", "ct(zone=2)", "output:p1"]), INVALID_PARAMS,
                 "at most one ct"),
    "drop_not_alone": (rule(50, ["drop", "output:p1"]), INVALID_PARAMS, "drop"),
    "goto_backwards": (rule(50, ["goto_table:1"], table=2), INVALID_PARAMS, "actions[0]"),
    "too_many_range_entries": (rule(50, ["drop"], dict(UDP4, l4_src="1-65534", l4_dst="1-65534")),
                               INVALID_PARAMS, "match"),
    "tcp_flag_twice": (rule(50, ["drop"], dict(UDP4, ip_proto="tcp", tcp_flags="+syn-syn")),
                       INVALID_PARAMS, "tcp_flags"),
    "ipv4_and_ipv6": (rule(50, ["drop"], {"ip_src": "10.0.0.0/8", "ipv6_dst": "2001:db8::/32"}),
                      INVALID_PARAMS, "match"),
    "ip_src_with_eth_type_ipv6": (rule(50, ["drop"], {"eth_type": "ipv6", "ip_src": "10.0.0.1"}),
                                  INVALID_PARAMS, "ip_src"),
    "goto_not_last": (rule(50, ["goto_table:2", "output:p1"]), INVALID_PARAMS, "actions"),
    "table_64": (rule(50, ["drop"], table=64), INVALID_PARAMS, "table"),
    "nine_actions": (rule(50, ["output:p1"] * 9), INVALID_PARAMS, "actions"),
    "push_vid_4095": (rule(50, ["push_vlan:4095", "output:p1"]), INVALID_PARAMS,
                      "actions[0]"),
}


@pytest.mark.parametrize("how", ["rule", "batch_last"])
def test_rule_add_refused_changes_nothing(ruled, how):
    """For each bad rule (unknown port or meter, value with bits outside its mask, prefix with
    host bits or too long, reversed range, missing prerequisite, unknown key, duplicate id, ct,
    drop with another action, goto to a lower table, VID 4095): rule.add of it alone, or as the
    last of a batch after a valid rule 40.

    Expects -32002 for unknown names, -32003 for the duplicate id, -32602 for the rest, a
    message naming the offending field, and rule.list unchanged (rule 40 not added either).
    """
    before = ruled.call("rule.list")
    for name, (bad, code, word) in BAD_RULES.items():
        if how == "rule":
            err = refused(ruled, "rule.add", {"rule": bad})
        else:
            err = refused(ruled, "rule.add", {"rules": [rule(40, ["output:p1"], priority=3),
                                                        bad]})
        assert err.code == code, f"{name}: {err}"
        assert word in err.message, f"{name}: {err.message!r} does not name {word}"
        assert ruled.call("rule.list") == before, f"{name} changed the rules"


def test_rule_add_duplicate_ids_within_one_batch(ruled):
    """rule.add of a batch of three new rules where the third repeats the first's id (70).

    Expects -32003 and none of the three added; then the batch without the repeat is added
    whole (rules 70 and 71 listed).
    """
    before = ruled.call("rule.list")
    batch = [rule(70, ["output:p1"], {"eth_src": mac(7)}, priority=5),
             rule(71, ["output:p2"], {"eth_src": mac(8)}, priority=5),
             rule(70, ["output:p3"], {"eth_src": mac(9)}, priority=5)]
    err = refused(ruled, "rule.add", {"rules": batch})
    assert err.code == CONFLICT
    assert ruled.call("rule.list") == before
    result = ruled.call("rule.add", {"rules": batch[:2]})
    assert result["added"] == 2
    assert ids(ruled, 0) == [1, 2, 3, 70, 71]


def test_rule_del_unknown_id_deletes_nothing(ruled):
    """rule.del {id: 99} and rule.del {ids: [1, 99]} (99 does not exist).

    Expects -32002 both times and rule 1 still listed; then rule.del {ids: [1, 2]} deletes both
    and a second rule.del {id: 1} is -32002.
    """
    before = ruled.call("rule.list")
    assert refused(ruled, "rule.del", {"id": 99}).code == NOT_FOUND
    assert refused(ruled, "rule.del", {"ids": [1, 99]}).code == NOT_FOUND
    assert ruled.call("rule.list") == before
    assert ruled.call("rule.del", {"ids": [1, 2]})["deleted"] == 2
    assert ids(ruled) == [3, 11, 12, 21]
    assert refused(ruled, "rule.del", {"id": 1}).code == NOT_FOUND


def test_rule_flush_per_table(ruled):
    """rule.flush {table: 1}, then {table: 7} (empty), then rule.flush with no table.

    Expects table 1's rules gone and the others kept; the empty table's flush a no-op; table 64
    refused (-32602) by rule.flush and rule.list; then every rule gone. A flushed id can be
    added again.
    """
    ruled.call("rule.flush", {"table": 1})
    assert ids(ruled) == [1, 2, 3, 21]
    ruled.call("rule.flush", {"table": 7})
    assert ids(ruled) == [1, 2, 3, 21]
    assert refused(ruled, "rule.flush", {"table": 64}).code == INVALID_PARAMS
    assert refused(ruled, "rule.list", {"table": 64}).code == INVALID_PARAMS
    assert ids(ruled) == [1, 2, 3, 21]
    ruled.call("rule.flush")
    assert ids(ruled) == []
    ruled.call("rule.add", {"rule": rule(11, ["output:p3"], table=1)})
    assert ids(ruled) == [11]


@pytest.mark.parametrize("port, users", [("p1", [1, 2, 21]), ("p2", [1, 2]), ("p3", [2, 11])])
def test_port_del_refused_while_rules_use_it(ruled, port, users):
    """port.del of a port named by rules (in_port, output or mirror).

    Expects -32003 while any of them exists, naming them, and the port still listed; rule.del
    of all but one: still refused; after the last one is deleted, port.del succeeds.
    """
    err = refused(ruled, "port.del", {"name": port})
    assert err.code == CONFLICT
    assert all(str(i) in err.message for i in users), err.message
    ruled.call("rule.del", {"ids": users[:-1]})
    assert refused(ruled, "port.del", {"name": port}).code == CONFLICT
    assert port in {p["name"] for p in ruled.call("port.list")}
    ruled.call("rule.del", {"id": users[-1]})
    ruled.call("port.del", {"name": port})
    assert port not in {p["name"] for p in ruled.call("port.list")}


# ---------------------------------------------------------------------------------------------
# Rule changes during traffic

SWAPS = 50


def finish_without_reading(b):
    """PcapBridge.finish without reading the tx pcaps into memory (they are large here): takes
    the settled port.stats and switch stats, stops ferryd."""
    ports, workers = settled_stats(b)
    b.final_stats = {s["name"]: s for s in ports}
    rc = b.ferryd.stop()
    assert rc == 0, f"ferryd exited with {rc}:\n{b.ferryd.read_log()}"
    return workers


def swap_pair(base, out, priority):
    """Rules for frames A (by eth_src) and B (by UDP port) from port inf to port out."""
    return [rule(base, [f"output:{out}"], {"in_port": "inf", "eth_src": mac(0xa)},
                 priority=priority),
            rule(base + 1, [f"output:{out}"], dict(UDP4, in_port="inf", l4_dst=2222),
                 priority=priority)]


def test_rules_swapped_during_traffic_lose_nothing(bridge):
    """Port inf replays frames A (from 02:..:0a, UDP to 1111) and B (from 02:..:0b, UDP to 2222)
    forever (net_pcap infinite_rx); out1 and out2 capture. Rules: pair R0 (A -> out1, B ->
    out1). Fifty times: one rule.add batch adds the next pair, at higher priority, sending both
    to the other output; then rule.del removes the previous pair. At the end a pair without
    in_port (both -> out1) replaces the last one, and port.del inf stops the replay.

    Expects both outputs to have carried traffic, as many A as B on each; every frame on out1
    and out2 to be A or B byte for byte; no drop of any reason on inf (before it was deleted)
    or the outputs; and, once the counters settled, the frames received by the worker to equal
    the frames in the two tx pcaps, which equal the ports' tx counters: nothing lost or
    duplicated while the tables changed.
    """
    fa = frame(Ether(src=mac(0xa), dst=mac(0xc)) / IP(src="10.0.0.1", dst="10.0.0.2") /
               UDP(sport=1, dport=1111) / b"frame A")
    fb = frame(Ether(src=mac(0xb), dst=mac(0xc)) / IP(src="10.0.0.3", dst="10.0.0.4") /
               UDP(sport=1, dport=2222) / b"frame B")
    bridge.port("inf", [fa, fb], infinite=True, capture=False)
    bridge.port("out1")
    bridge.port("out2")
    bridge.ferryd.config["rules"] = swap_pair(100, "out1", 0)
    bridge.start()
    try:
        wait_for(lambda: bridge.stats("out1")["tx_packets"] > 1000, WAIT_S, what="traffic")
        base = 100
        for i in range(1, SWAPS + 1):
            nxt = 100 + 2 * i
            assert bridge.call("rule.add", {"rules": swap_pair(nxt, f"out{1 + i % 2}", i)})
            assert bridge.call("rule.del", {"ids": [base, base + 1]})["deleted"] == 2
            base = nxt
            time.sleep(0.002)
        bridge.call("rule.add", {"rules": [
            rule(1, ["output:out1"], {"eth_src": mac(0xa)}, priority=1000),
            rule(2, ["output:out1"], dict(UDP4, l4_dst=2222), priority=1000)]})
        bridge.call("rule.del", {"ids": [base, base + 1]})
        inf_drops = {r: n for r, n in bridge.stats("inf")["drops"].items() if n}
    finally:
        if "inf" in {p["name"] for p in bridge.call("port.list")}:
            bridge.del_port("inf")
    workers = finish_without_reading(bridge)
    assert inf_drops == {}, f"drops on inf during the swaps: {inf_drops}"
    received = sum(workers)
    tx = {p: bridge.final_stats[p]["tx_packets"] for p in ("out1", "out2")}
    for p in ("out1", "out2"):
        assert not any(bridge.final_stats[p]["drops"].values()), bridge.final_stats[p]["drops"]
    tallies = {}
    for p in ("out1", "out2"):
        counts, unknown = tally_pcap(bridge.ports[p]["tx_path"], [fa, fb])
        assert unknown == 0, f"{p}: {unknown} frames that are neither A nor B"
        tallies[p] = counts
        assert counts[fa] + counts[fb] == tx[p], f"{p}: pcap {counts} vs tx counter {tx[p]}"
        assert counts[fa] > 0 and counts[fb] > 0, f"{p} carried {counts}"
        # The PMD replays A, B, A, B... and ferryd reads 32-frame bursts, each looked up in one
        # table version; a pair's two rules change in one step, so each output gets as many A
        # as B. A batch applied rule by rule would move A without B for a burst or more.
        assert counts[fa] == counts[fb], f"{p}: A {counts[fa]} != B {counts[fb]}"
    assert received == tx["out1"] + tx["out2"], \
        f"worker received {received}, outputs sent {tx}: " \
        f"{received - tx['out1'] - tx['out2']} lost (negative: duplicated)"
