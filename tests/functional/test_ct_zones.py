"""Functional tests of conntrack zones, marks and zone limits through ferryd, and of the
ct.list / ct.flush / ct.limit / ct.stats control methods (filters, paging, errors).

Zones come from VLANs in the zone tests (VLAN 10 -> zone 1, VLAN 20 -> zone 2, so that two
tenants can use the same addresses); elsewhere the rules are ct_util.stateful_rules in zone 1.
"""
import pytest

from ferry_harness import RpcError
from pcap_util import rule

from ct_util import (CLIENT, CLIENT2, INSIDE_MAC, SERVER, SERVER2, bridges, echo, hit_packets,
                     stateful_rules, tcp, udp)


@pytest.fixture
def ctb():
    """CtBridge(**kw) maker; the bridges stop after the test (ct_util.bridges)."""
    yield from bridges()


def zone_rules():
    """Table 0: VLAN 10 -> ct(zone=1,table=1), VLAN 20 -> ct(zone=2,table=1). Table 1: +inv
    dropped; +new from INSIDE_MAC committed in its zone (zone 2 with mark 7) and sent to
    outside; +est-rpl -> outside; +est+rpl with mark 7 -> inside2, other +est+rpl -> inside;
    the rest dropped."""
    return [
        rule(1, ["ct(zone=1,table=1)"], {"vlan": 10, "eth_type": "ipv4"}, priority=10),
        rule(2, ["ct(zone=2,table=1)"], {"vlan": 20, "eth_type": "ipv4"}, priority=10),
        rule(10, ["drop"], {"ct_state": "+trk+inv"}, priority=30, table=1),
        rule(11, ["ct(zone=1,commit)", "output:outside"],
             {"ct_zone": 1, "ct_state": "+trk+new", "eth_src": INSIDE_MAC}, priority=20, table=1),
        rule(12, ["ct(zone=2,commit,mark=7)", "output:outside"],
             {"ct_zone": 2, "ct_state": "+trk+new", "eth_src": INSIDE_MAC}, priority=20, table=1),
        rule(20, ["output:outside"], {"ct_state": "+trk+est-rpl"}, priority=10, table=1),
        rule(21, ["output:inside2"], {"ct_state": "+trk+est+rpl", "ct_mark": 7}, priority=15,
             table=1),
        rule(22, ["output:inside"], {"ct_state": "+trk+est+rpl"}, priority=10, table=1),
        rule(30, ["drop"], priority=0, table=1),
    ]


def test_same_tuple_in_two_zones(ctb):
    """The same TCP connection CLIENT:42000 -> SERVER:80 in VLAN 10 (zone 1) and VLAN 20
    (zone 2, committed with mark 7).
      1 lan: both SYNs                 2 wan: both SYN+ACKs
      then ct.flush zone=1
      3 lan: both ACKs

    Expects two connections after phase 1 (ct.list zone=1 and zone=2 one each, the zone-2 one
    with mark 7; ct.stats zones 1 and 2 with 1 connection each); the SYN+ACK of zone 1 on
    inside and that of zone 2 (mark 7) on inside2; ct.flush zone=1 answering flushed 1 and
    leaving the zone-2 connection alone; then the zone-1 ACK dropped as +inv (its connection is
    gone) and the zone-2 ACK forwarded, making it ESTABLISHED. Frames keep their tags.
    """
    b = ctb(rules=zone_rules(), capture=("inside", "inside2", "outside"))
    b.start()
    syn10, syn20 = (tcp(CLIENT, SERVER, 42000, 80, "S", 1000, vid=v) for v in (10, 20))
    b.phase([syn10, syn20], out={"outside": [syn10, syn20]})
    assert sorted((c["zone"], c["mark"], c["state"]) for c in b.conns()) == \
        [(1, 0, "SYN_SENT"), (2, 7, "SYN_SENT")]
    assert [c["zone"] for c in b.conns(zone=1)] == [1]
    assert [c["zone"] for c in b.conns(zone=2)] == [2]
    assert b.zone_stats(1)["connections"] == 1 and b.zone_stats(2)["connections"] == 1
    sa10, sa20 = (tcp(SERVER, CLIENT, 80, 42000, "SA", 5000, 1001, vid=v) for v in (10, 20))
    b.phase([sa10, sa20], out={"inside": [sa10], "inside2": [sa20]})
    assert b.call("ct.flush", {"zone": 1}) == {"flushed": 1}
    left = b.conns()
    assert [(c["zone"], c["state"]) for c in left] == [(2, "SYN_RECV")]
    assert b.zone_stats(1) is None or b.zone_stats(1)["connections"] == 0
    ack10, ack20 = (tcp(CLIENT, SERVER, 42000, 80, "A", 1001, 5001, vid=v) for v in (10, 20))
    b.phase([ack10, ack20], out={"outside": [ack20]}, drops={"rule_drop": 1})
    assert [(c["zone"], c["state"]) for c in b.conns()] == [(2, "ESTABLISHED")]
    assert hit_packets(b)[10] == 1
    b.finish()
    b.check_outputs()


@pytest.mark.parametrize("how", ["config", "ct.limit"])
def test_zone_limit(ctb, how):
    """Zone 1 limited to 2 connections, in the config (conntrack.zones) or by ct.limit.
      1 lan: SYNs CLIENT:42001, 42002, 42003 -> SERVER:80
      2 wan: SYN+ACKs to all three              3 lan: ACKs of the first two
      then ct.limit zone=1 limit=3
      4 lan: the third SYN again

    Expects the first two SYNs forwarded, the third dropped with drops.ct_limit 1 on lan1
    (ct.stats: zone 1 limit_drops 1, worker limit_drops 1, zone connections 2); both admitted
    connections still passing traffic (SYN+ACKs and ACKs forwarded, ESTABLISHED), the third
    SYN+ACK dropped as +inv; ct.limit reading back limit 2 with 2 connections; after raising
    the limit to 3 the SYN admitted.
    """
    conntrack = {"zones": [{"zone": 1, "limit": 2}]} if how == "config" else None
    b = ctb(rules=stateful_rules(), conntrack=conntrack)
    b.start()
    if how == "ct.limit":
        assert b.call("ct.limit", {"zone": 1, "limit": 2}) == \
            {"zone": 1, "limit": 2, "liberal": False, "connections": 0}
    syns = [tcp(CLIENT, SERVER, p, 80, "S", 1000) for p in (42001, 42002, 42003)]
    b.phase(syns, out={"outside": syns[:2]}, drops={"ct_limit": 1})
    z = b.zone_stats(1)
    assert (z["connections"], z["limit"], z["limit_drops"]) == (2, 2, 1)
    assert b.worker_stat("limit_drops") == 1
    assert sorted(c["orig"]["sport"] for c in b.conns()) == [42001, 42002]
    synacks = [tcp(SERVER, CLIENT, 80, p, "SA", 5000, 1001) for p in (42001, 42002, 42003)]
    b.phase(synacks, out={"inside": synacks[:2]}, drops={"rule_drop": 1})
    acks = [tcp(CLIENT, SERVER, p, 80, "A", 1001, 5001) for p in (42001, 42002)]
    b.phase(acks, out={"outside": acks})
    assert [c["state"] for c in b.conns()] == ["ESTABLISHED", "ESTABLISHED"]
    assert b.call("ct.limit", {"zone": 1}) == \
        {"zone": 1, "limit": 2, "liberal": False, "connections": 2}
    assert b.call("ct.limit", {"zone": 1, "limit": 3})["limit"] == 3
    b.phase([syns[2]], out={"outside": [syns[2]]})
    assert b.zone_stats(1)["connections"] == 3 and b.zone_stats(1)["limit_drops"] == 1
    b.finish()
    b.check_outputs()


def test_ct_limit_liberal_and_flush_keep_counts(ctb):
    """ct.limit zone=5 liberal=true, then liberal=false; zone 1 (the rules' zone) gets 2 UDP
    connections, then ct.flush.

    Expects ct.limit to answer the zone's settings each time (liberal true, then false, limit
    0 untouched); ct.stats to list zone 5 only while it has a setting; after the flush
    ({flushed: 2}) the zone count back at 0 and ct.stats connections 0, removed 2.
    """
    b = ctb(rules=stateful_rules())
    b.start()
    assert b.call("ct.limit", {"zone": 5, "liberal": True}) == \
        {"zone": 5, "limit": 0, "liberal": True, "connections": 0}
    assert b.zone_stats(5)["liberal"] is True
    assert b.call("ct.limit", {"zone": 5, "liberal": False})["liberal"] is False
    assert b.zone_stats(5) is None
    qs = [udp(CLIENT, SERVER, p, 53) for p in (5080, 5081)]
    b.phase(qs, out={"outside": qs})
    assert b.zone_stats(1)["connections"] == 2
    assert b.call("ct.flush") == {"flushed": 2}
    st = b.ct_stats()
    assert st["connections"] == 0 and b.worker_stat("removed") == 2
    assert b.zone_stats(1) is None
    b.finish()
    b.check_outputs()


def test_ct_list_filters_paging_and_flush_by_port(ctb):
    """Four connections in zone 1:
      1 lan (lan1): TCP SYN CLIENT:43000 -> SERVER:80; UDP CLIENT:5090 -> SERVER:53
      2 lan (lan2): UDP CLIENT2:5091 -> SERVER2:53; echo request CLIENT2 -> SERVER2 id 9
      3 wan (wan1): the SYN+ACK                 4 lan (lan3): the ACK

    Expects ct.list filters to select: state ESTABLISHED the TCP one, UDP_UNREPLIED the two
    UDP ones, ICMP_UNREPLIED the echo; address CLIENT2 the two of lan2, SERVER2 the same two,
    an unused address none; port lan1 the TCP and first UDP ones, wan1 the TCP one (its reply
    port), lan2 two; zone 1 all, zone 2 none; filters combined (address and state). Paging with
    limit 1 (and 3) returning every connection once, each page at most the limit, `next` null
    on the last page only. ct.flush port=lan2 answering flushed 2 and leaving the other two;
    ct.stats connections 2.
    """
    b = ctb(rules=stateful_rules())
    b.start()
    syn = tcp(CLIENT, SERVER, 43000, 80, "S", 1000)
    u1 = udp(CLIENT, SERVER, 5090, 53)
    u2 = udp(CLIENT2, SERVER2, 5091, 53)
    ping = echo(CLIENT2, SERVER2, 9)
    b.phase([syn, u1], out={"outside": [syn, u1]})
    b.phase([u2, ping], out={"outside": [u2, ping]})
    synack = tcp(SERVER, CLIENT, 80, 43000, "SA", 5000, 1001)
    b.phase([synack], out={"inside": [synack]})
    ack = tcp(CLIENT, SERVER, 43000, 80, "A", 1001, 5001)
    b.phase([ack], out={"outside": [ack]})

    def keys(**flt):
        return sorted((c["proto"], c["orig"]["sport"]) for c in b.conns(**flt))

    everything = [("icmp", 9), ("tcp", 43000), ("udp", 5090), ("udp", 5091)]
    assert keys() == everything
    assert keys(state="ESTABLISHED") == [("tcp", 43000)]
    assert keys(state="UDP_UNREPLIED") == [("udp", 5090), ("udp", 5091)]
    assert keys(state="ICMP_UNREPLIED") == [("icmp", 9)]
    assert keys(state="SYN_SENT") == []
    assert keys(address=CLIENT2) == [("icmp", 9), ("udp", 5091)]
    assert keys(address=SERVER2) == [("icmp", 9), ("udp", 5091)]
    assert keys(address="192.0.2.77") == [] and keys(address="2001:db8::1") == []
    assert keys(port="lan1") == [("tcp", 43000), ("udp", 5090)]
    assert keys(port="wan1") == [("tcp", 43000)]
    assert keys(port="lan2") == [("icmp", 9), ("udp", 5091)]
    assert keys(port="lan3") == []
    assert keys(zone=1) == everything and keys(zone=2) == []
    assert keys(address=CLIENT, state="UDP_UNREPLIED") == [("udp", 5090)]
    assert keys(port="lan1", zone=1, state="ESTABLISHED") == [("tcp", 43000)]

    for limit in (1, 3):
        seen, cursor, pages = [], None, 0
        while True:
            params = {"limit": limit} if cursor is None else {"limit": limit, "cursor": cursor}
            page = b.call("ct.list", params)
            pages += 1
            assert 1 <= len(page["connections"]) <= limit
            seen += [(c["proto"], c["orig"]["sport"]) for c in page["connections"]]
            cursor = page["next"]
            if cursor is None:
                break
            assert pages < 10
        assert sorted(seen) == everything and len(seen) == len(set(seen)), (limit, seen)
        assert pages == (4 if limit == 1 else 2)
    page = b.call("ct.list", {"limit": 4})
    assert page["next"] is None and len(page["connections"]) == 4

    assert b.call("ct.flush", {"port": "lan2"}) == {"flushed": 2}
    assert keys() == [("tcp", 43000), ("udp", 5090)]
    assert b.ct_stats()["connections"] == 2
    b.finish()
    b.check_outputs()


@pytest.mark.parametrize("method, params, code, field", [
    ("ct.limit", {"zone": 70000}, -32602, "zone"),
    ("ct.limit", {"zone": 1, "limit": 2 ** 31}, -32602, "limit"),
    ("ct.limit", {}, -32602, "zone"),
    ("ct.limit", {"zone": "one"}, -32602, "zone"),
    ("ct.list", {"port": "nope"}, -32002, "port"),
    ("ct.list", {"zone": 70000}, -32602, "zone"),
    ("ct.list", {"limit": 0}, -32602, "limit"),
    ("ct.list", {"limit": 1001}, -32602, "limit"),
    ("ct.list", {"address": "10.0.0.256"}, -32602, "address"),
    ("ct.list", {"state": 5}, -32602, "state"),
    ("ct.flush", {"port": "nope"}, -32002, "port"),
    ("ct.flush", {"zone": 65536}, -32602, "zone"),
], ids=["limit_zone_range", "limit_limit_range", "limit_no_zone", "limit_zone_type",
        "list_no_port", "list_zone_range", "list_limit_0", "list_limit_1001", "list_bad_address",
        "list_state_type", "flush_no_port", "flush_zone_range"])
def test_ct_methods_refuse_bad_params(ctb, method, params, code, field):
    """A ct.* method with one bad parameter (out of range, wrong type, missing, a port that
    does not exist).

    Expects the JSON-RPC error code (-32602 invalid params, -32002 not found) with a message
    naming the parameter, and ferryd still answering afterwards (ct.stats).
    """
    b = ctb(rules=stateful_rules())
    b.start()
    with pytest.raises(RpcError) as e:
        b.call(method, params)
    assert e.value.code == code, e.value.message
    assert field in e.value.message, e.value.message
    assert b.ct_stats()["connections"] == 0
    b.finish()
