"""Functional tests of TCP connection tracking through ferryd's stateful firewall rules
(ct_util.stateful_rules: new connections only from the inside network, +est/+rel both ways,
+inv and everything else dropped).

Each phase sends frames from a new pcap port (lanN for the client side, wanN for the server
side); forwarded frames must arrive unchanged, byte for byte, on `outside` (original direction)
or `inside` (reply direction), and ct.list must show the TCP state dataplane/conntrack/ct_tcp.cc
gives the connection after the phase.
"""
import pytest

from pcap_util import wait_for

from ct_util import (CLIENT, R_CT4, R_DEFAULT, R_EST_ORIG, R_EST_REPLY, R_INV, R_NEW4, SERVER,
                     bridges, hit_packets, stateful_rules, tcp)


@pytest.fixture
def ctb():
    """CtBridge(**kw) maker; the bridges stop after the test (ct_util.bridges)."""
    yield from bridges()

# Seconds per state, all distinct, so that timeout_s tells which timeout a state got.
TIMEOUTS = {"tcp_syn_sent": 100, "tcp_syn_recv": 50, "tcp_established": 3000,
            "tcp_fin_wait": 110, "tcp_close_wait": 55, "tcp_last_ack": 25, "tcp_time_wait": 115,
            "tcp_close": 9}
STATE_TIMEOUT = {"SYN_SENT": 100, "SYN_RECV": 50, "ESTABLISHED": 3000, "FIN_WAIT": 110,
                 "CLOSE_WAIT": 55, "LAST_ACK": 25, "TIME_WAIT": 115, "CLOSE": 9}


def cli(cport, flags, seq, ack=0, payload=b"", sport=80, window=65535, options=()):
    """A segment from CLIENT:cport to SERVER:sport."""
    return tcp(CLIENT, SERVER, cport, sport, flags, seq, ack, payload, window=window,
               options=options)


def srv(cport, flags, seq, ack=0, payload=b"", sport=80, window=65535, options=()):
    """A segment from SERVER:sport to CLIENT:cport."""
    return tcp(SERVER, CLIENT, sport, cport, flags, seq, ack, payload, window=window,
               options=options)


def handshake(b, cport, cisn=1000, sisn=5000):
    """Phases SYN (lan), SYN+ACK (wan), ACK (lan) of CLIENT:cport -> SERVER:80; checks that
    each passes and the connection ends ESTABLISHED."""
    b.phase([cli(cport, "S", cisn)], out={"outside": [cli(cport, "S", cisn)]})
    b.phase([srv(cport, "SA", sisn, cisn + 1)], out={"inside": [srv(cport, "SA", sisn, cisn + 1)]})
    b.phase([cli(cport, "A", cisn + 1, sisn + 1)],
            out={"outside": [cli(cport, "A", cisn + 1, sisn + 1)]})
    assert b.state(sport=cport) == "ESTABLISHED"


def test_tcp_life_cycle_client_and_server_close(ctb):
    """Two connections from CLIENT to SERVER:80, A (port 40001: client closes first) and B
    (40002: server closes first), phase by phase:
      1 lan: A SYN, B SYN                      -> both SYN_SENT
      2 wan: A SYN+ACK, B SYN+ACK              -> both SYN_RECV
      3 lan: A ACK, A 10 bytes, B ACK          -> both ESTABLISHED
      4 wan: A 20 bytes, B FIN                 -> A ESTABLISHED, B FIN_WAIT
      5 lan: A FIN, B ACK of the FIN           -> A FIN_WAIT, B CLOSE_WAIT
      6 wan: A ACK of the FIN                  -> A CLOSE_WAIT
      7 lan: B FIN                             -> B LAST_ACK
      8 wan: A FIN, B ACK of the FIN           -> A LAST_ACK, B TIME_WAIT
      9 lan: A ACK of the FIN                  -> A TIME_WAIT
    Timeouts are configured distinct per state.

    Expects every segment forwarded unchanged (client's on outside, server's on inside, in
    order), nothing dropped; after each phase the states above, with timeout_s the state's
    timeout; the SYNs hit the +new rule, the rest the +est rules of their direction; the
    packet and port bookkeeping of ct.list right; ct.stats by_state in step.
    """
    b = ctb(rules=stateful_rules(), conntrack={"timeouts": TIMEOUTS})
    b.start()

    def states():
        got = {c["orig"]["sport"]: (c["state"], c["timeout_s"]) for c in b.conns()}
        for state, t in got.values():
            assert STATE_TIMEOUT[state] - 2 <= t <= STATE_TIMEOUT[state], (state, t)
        return {port: s for port, (s, _) in got.items()}

    A, B = 40001, 40002
    steps = [
        ("lan", [cli(A, "S", 1000), cli(B, "S", 2000)], "SYN_SENT", "SYN_SENT"),
        ("wan", [srv(A, "SA", 5000, 1001), srv(B, "SA", 7000, 2001)], "SYN_RECV", "SYN_RECV"),
        ("lan", [cli(A, "A", 1001, 5001), cli(A, "PA", 1001, 5001, b"0123456789"),
                 cli(B, "A", 2001, 7001)], "ESTABLISHED", "ESTABLISHED"),
        ("wan", [srv(A, "PA", 5001, 1011, b"abcdefghijklmnopqrst"), srv(B, "FA", 7001, 2001)],
         "ESTABLISHED", "FIN_WAIT"),
        ("lan", [cli(A, "FA", 1011, 5021), cli(B, "A", 2001, 7002)], "FIN_WAIT", "CLOSE_WAIT"),
        ("wan", [srv(A, "A", 5021, 1012)], "CLOSE_WAIT", "CLOSE_WAIT"),
        ("lan", [cli(B, "FA", 2001, 7002)], "CLOSE_WAIT", "LAST_ACK"),
        ("wan", [srv(A, "FA", 5021, 1012), srv(B, "A", 7002, 2002)], "LAST_ACK", "TIME_WAIT"),
        ("lan", [cli(A, "A", 1012, 5022)], "TIME_WAIT", "TIME_WAIT"),
    ]
    for i, (side, frames, want_a, want_b) in enumerate(steps, 1):
        b.phase(frames, out={"outside" if side == "lan" else "inside": frames})
        assert states() == {A: want_a, B: want_b}, f"after phase {i}"
        by_state = b.ct_stats()["by_state"]
        want = {}
        for s in (want_a, want_b):
            want["tcp_" + s] = want.get("tcp_" + s, 0) + 1
        assert {k: v for k, v in by_state.items() if v} == want, f"after phase {i}"

    a = b.conn(sport=A)
    assert a["proto"] == "tcp" and a["zone"] == 1 and a["nat"] is None and a["mark"] == 0
    assert a["orig"] == {"src": CLIENT, "dst": SERVER, "sport": A, "dport": 80}
    assert a["reply"] == {"src": SERVER, "dst": CLIENT, "sport": 80, "dport": A}
    assert a["ports"] == ["lan1", "wan1"]
    assert a["packets"] == [5, 4]
    sent_a = [f for _, frames, _, _ in steps for f in frames if f[34:36] == A.to_bytes(2, "big")
              or f[36:38] == A.to_bytes(2, "big")]
    assert sum(a["bytes"]) == sum(map(len, sent_a))
    assert hit_packets(b) == {R_CT4: 16, R_NEW4: 2, R_EST_ORIG: 7, R_EST_REPLY: 7}
    st = b.ct_stats()
    assert (st["connections"], b.worker_stat("created"), b.worker_stat("invalid")) == (2, 2, 0)
    b.finish()
    b.check_outputs()
    b.check_counters()


def test_tcp_rst_closes_then_syn_reopens(ctb):
    """Handshake of CLIENT:40010 -> SERVER:80 (ISNs 1000 / 5000), then:
      4 wan: a RST with seq 1,005,001 (far outside the window), then a RST with seq 5001
      5 lan: a late ACK from the client (seq 1001)
      6 lan: a new SYN on the same tuple (seq 90000)
      7 wan: its SYN+ACK

    Expects the out-of-window RST dropped as +inv with the connection still ESTABLISHED; the
    in-window RST forwarded and the connection CLOSE; the straggler ACK accepted as in Linux
    (CLOSE allows stragglers: +est, forwarded, state stays CLOSE); the new SYN replacing the
    closed connection (ct.stats reopened 1, state SYN_SENT, one connection), forwarded as +new;
    its SYN+ACK forwarded and the new connection SYN_RECV.
    """
    b = ctb(rules=stateful_rules())
    b.start()
    handshake(b, 40010)
    rst_far = srv(40010, "R", 1005001)
    rst = srv(40010, "R", 5001)
    b.phase([rst_far, rst], out={"inside": [rst]}, drops={"rule_drop": 1})
    assert b.state(sport=40010) == "CLOSE"
    assert b.worker_stat("invalid") == 1
    assert hit_packets(b)[R_INV] == 1

    late = cli(40010, "A", 1001, 5001)
    b.phase([late], out={"outside": [late]})
    assert b.state(sport=40010) == "CLOSE"

    syn = cli(40010, "S", 90000)
    b.phase([syn], out={"outside": [syn]})
    assert [c["state"] for c in b.conns()] == ["SYN_SENT"]
    assert b.worker_stat("reopened") == 1
    synack = srv(40010, "SA", 300000, 90001)
    b.phase([synack], out={"inside": [synack]})
    c = b.conn(sport=40010)
    assert c["state"] == "SYN_RECV" and c["packets"] == [1, 1]
    assert hit_packets(b)[R_NEW4] == 2
    b.finish()
    b.check_outputs()


def test_tcp_closed_connection_expires(ctb):
    """tcp_close timeout 1 s. Handshake of CLIENT:40011 -> SERVER:80, then the server's RST
    (seq 5001): CLOSE. After the connection expired, the client sends an ACK (seq 1001) and
    the server a data segment (seq 5001).

    Expects the connection gone from ct.list within 3 s (ct.stats removed 1, zone count 0),
    then both late segments dropped as +inv (a non-SYN without a connection).
    """
    b = ctb(rules=stateful_rules(), conntrack={"timeouts": {"tcp_close": 1}})
    b.start()
    handshake(b, 40011)
    rst = srv(40011, "R", 5001)
    b.phase([rst], out={"inside": [rst]})
    assert b.state(sport=40011) == "CLOSE"
    wait_for(lambda: not b.conns(), 3.0, what="the closed connection to expire")
    assert b.worker_stat("removed") == 1
    assert b.zone_stats(1) is None or b.zone_stats(1)["connections"] == 0
    b.phase([cli(40011, "A", 1001, 5001)], drops={"rule_drop": 1})
    b.phase([srv(40011, "PA", 5001, 1001, b"late")], drops={"rule_drop": 1})
    assert hit_packets(b)[R_INV] == 2
    b.finish()
    b.check_outputs()


def test_tcp_out_of_window_from_outside_is_invalid(ctb):
    """Handshake of CLIENT:40020 -> SERVER:80 (ISNs 1000 / 5000, windows 65535, no scaling),
    then from the server: 10 bytes at seq 1,005,001 (a million past the window), then 10 bytes
    at seq 5001.

    Expects the out-of-window segment dropped by the +inv rule (rule_drop 1, ct.stats invalid
    1), the in-window one forwarded unchanged; the connection still ESTABLISHED, the dropped
    segment not counted in its packets.
    """
    b = ctb(rules=stateful_rules())
    b.start()
    handshake(b, 40020)
    far = srv(40020, "PA", 1005001, 1001, b"0123456789")
    near = srv(40020, "PA", 5001, 1001, b"0123456789")
    b.phase([far, near], out={"inside": [near]}, drops={"rule_drop": 1})
    c = b.conn(sport=40020)
    assert c["state"] == "ESTABLISHED" and c["packets"] == [2, 2]
    assert b.worker_stat("invalid") == 1
    assert hit_packets(b)[R_INV] == 1
    b.finish()
    b.check_outputs()


def test_tcp_liberal_zone_skips_window_checks(ctb):
    """As test_tcp_out_of_window_from_outside_is_invalid, with conntrack.zones [{zone 1,
    liberal}]; then the client sends an ACK (no SYN) of an unknown connection CLIENT:40021.

    Expects both server segments forwarded (no +inv, ct.stats invalid 0), the connection
    ESTABLISHED; ct.stats shows zone 1 liberal; the mid-stream ACK picked up as a new
    connection (+new: forwarded by the +new rule and committed) since liberal zones may open
    connections with any non-RST segment.
    """
    b = ctb(rules=stateful_rules(), conntrack={"zones": [{"zone": 1, "liberal": True}]})
    b.start()
    handshake(b, 40020)
    far = srv(40020, "PA", 1005001, 1001, b"0123456789")
    near = srv(40020, "PA", 5001, 1001, b"0123456789")
    b.phase([far, near], out={"inside": [far, near]})
    assert b.state(sport=40020) == "ESTABLISHED"
    assert b.worker_stat("invalid") == 0
    assert b.zone_stats(1)["liberal"] is True
    mid = cli(40021, "A", 7777, 8888)
    b.phase([mid], out={"outside": [mid]})
    assert b.conn(sport=40021)["packets"] == [1, 0]
    assert hit_packets(b)[R_NEW4] == 2
    b.finish()
    b.check_outputs()


@pytest.mark.parametrize("client_scales", [True, False], ids=["both_scale", "server_only"])
def test_tcp_window_scaling(ctb, client_scales):
    """CLIENT:40025 -> SERVER:80: the SYN carries window 512 and (both_scale) the window-scale
    option 7, the SYN+ACK window 512 and scale 7 in both cases; the client's ACK advertises 512.
    Then the server sends 1000 bytes at seq 5001 + 60000, then 1000 bytes at 5001 + 140000.

    Expects, when both SYNs carry the option, the client's window to be 512 << 7 = 65536 bytes:
    the first segment (ending 61000 past the ACK) forwarded, the second (starting more than a
    window past the right edge, beyond what netfilter lets overshoot it) +inv and dropped. When only the server offers scaling, RFC 7323 turns it off both ways:
    the window is 512 bytes and both segments are dropped. The connection stays ESTABLISHED.
    """
    b = ctb(rules=stateful_rules())
    b.start()
    syn = cli(40025, "S", 1000, window=512, options=[("WScale", 7)] if client_scales else [])
    synack = srv(40025, "SA", 5000, 1001, window=512, options=[("WScale", 7)])
    ack = cli(40025, "A", 1001, 5001, window=512)
    b.phase([syn], out={"outside": [syn]})
    b.phase([synack], out={"inside": [synack]})
    b.phase([ack], out={"outside": [ack]})
    inside = srv(40025, "PA", 5001 + 60000, 1001, b"i" * 1000, window=512)
    beyond = srv(40025, "PA", 5001 + 140000, 1001, b"o" * 1000, window=512)
    if client_scales:
        b.phase([inside, beyond], out={"inside": [inside]}, drops={"rule_drop": 1})
    else:
        b.phase([inside, beyond], drops={"rule_drop": 2})
    assert b.state(sport=40025) == "ESTABLISHED"
    assert b.worker_stat("invalid") == (1 if client_scales else 2)
    b.finish()
    b.check_outputs()


def test_tcp_retransmissions_pass(ctb):
    """CLIENT:40030 -> SERVER:80 where every step is sent twice:
      1 lan: SYN, SYN again                     2 wan: SYN+ACK, SYN+ACK again
      3 lan: ACK, 10 bytes at 1001, the same 10 bytes again
      4 wan: 20 bytes at 5001, the same again
      5 lan: the client's 10 bytes at 1001 once more (already acknowledged)

    Expects every segment forwarded unchanged (retransmissions are not +inv; the second SYN+ACK
    passes untracked, as netfilter ignores it), one connection created (the second SYN is +new
    but does not create another), SYN_SENT, SYN_RECV, then ESTABLISHED to the end; ct.stats
    invalid 0.
    """
    b = ctb(rules=stateful_rules())
    b.start()
    syn = cli(40030, "S", 1000)
    b.phase([syn, syn], out={"outside": [syn, syn]})
    assert b.state(sport=40030) == "SYN_SENT"
    synack = srv(40030, "SA", 5000, 1001)
    b.phase([synack, synack], out={"inside": [synack, synack]})
    assert b.state(sport=40030) == "SYN_RECV"
    data = cli(40030, "PA", 1001, 5001, b"0123456789")
    step3 = [cli(40030, "A", 1001, 5001), data, data]
    b.phase(step3, out={"outside": step3})
    sdata = srv(40030, "PA", 5001, 1011, b"abcdefghijklmnopqrst")
    b.phase([sdata, sdata], out={"inside": [sdata, sdata]})
    b.phase([data], out={"outside": [data]})
    c = b.conn(sport=40030)
    # Not the original direction's count: the second SYN passes two ct actions (table 0's and
    # the +new rule's commit) and is counted by both (see test_ct_udp_icmp's double count test).
    # The second SYN+ACK passes untracked in SYN_RECV (netfilter's sIG) and is not counted.
    assert c["state"] == "ESTABLISHED" and c["packets"][1] == 3
    assert (b.worker_stat("created"), b.worker_stat("invalid")) == (1, 0)
    assert hit_packets(b) == {R_CT4: 10, R_NEW4: 2, R_EST_ORIG: 4, R_EST_REPLY: 4}
    b.finish()
    b.check_outputs()


def test_tcp_unsolicited_segments_dropped(ctb):
    """No connection exists.
      1 wan: a SYN SERVER:40000 -> CLIENT:22; an ACK, a SYN+ACK and a FIN+ACK SERVER:80 ->
             CLIENT:40040
      2 lan: an ACK CLIENT:40041 -> SERVER:80 and a SYN+FIN CLIENT:40042 -> SERVER:80

    Expects nothing forwarded: the outside SYN is +new but not from the inside network (the
    default drop rule), the other five are +inv (a non-SYN without connection, an invalid flag
    combination: the +inv rule); rule_drop 4 on wan1 and 2 on lan1; no connection created;
    ct.stats invalid 5.
    """
    b = ctb(rules=stateful_rules())
    b.start()
    b.phase([tcp(SERVER, CLIENT, 40000, 22, "S", 1), srv(40040, "A", 1, 1),
             srv(40040, "SA", 1, 1), srv(40040, "FA", 1, 1)], drops={"rule_drop": 4})
    b.phase([cli(40041, "A", 1, 1), cli(40042, "SF", 1)], drops={"rule_drop": 2})
    assert b.conns() == []
    assert (b.worker_stat("created"), b.worker_stat("invalid")) == (0, 5)
    assert hit_packets(b) == {R_CT4: 6, R_DEFAULT: 1, R_INV: 5}
    b.finish()
    b.check_outputs()


def _spoil_tcp_checksum(frame):
    """frame (Ethernet + 20-byte IPv4 + TCP) with its TCP checksum wrong."""
    at = 14 + 20 + 16
    return frame[:at] + bytes([frame[at] ^ 0x5a, frame[at + 1] ^ 0x5a]) + frame[at + 2:]


def test_tcp_bad_checksum_neither_ends_nor_opens(ctb):
    """Handshake of CLIENT:40030 -> SERVER:80 (ISNs 1000 / 5000), then from the server a RST at
    seq 5001 with a wrong TCP checksum; from the client a SYN of CLIENT:40031 with a wrong TCP
    checksum. Then the server's 10 bytes at 5001, intact.

    Expects (as Linux with nf_conntrack_checksum=1) both corrupt segments dropped by the +inv
    rule (ct.stats invalid 2), the connection still ESTABLISHED and no connection for 40031;
    the intact segment forwarded unchanged.
    """
    b = ctb(rules=stateful_rules())
    b.start()
    handshake(b, 40030)
    rst = _spoil_tcp_checksum(srv(40030, "R", 5001))
    b.phase([rst], out={}, drops={"rule_drop": 1})
    syn = _spoil_tcp_checksum(cli(40031, "S", 7000))
    b.phase([syn], out={}, drops={"rule_drop": 1})
    data = srv(40030, "PA", 5001, 1001, b"0123456789")
    b.phase([data], out={"inside": [data]})
    assert b.state(sport=40030) == "ESTABLISHED"
    assert all(c["orig"]["sport"] != 40031 for c in b.conns())
    assert b.worker_stat("invalid") == 2
    b.finish()
    b.check_outputs()


def test_tcp_rst_must_be_exact_and_restarted_client_syn_passes(ctb):
    """Handshake of CLIENT:40040 -> SERVER:80 (ISNs 1000 / 5000), 100 bytes from the client,
    the server's ACK of them; then from the client: a RST at seq 1050 (below what the server
    acknowledged), a RST at seq 2101 (in the window, not exact); a new SYN (ISN 90000, a client
    restarting on the same port); from the server its challenge ACK; from the client a RST at
    1101 (exact).

    Expects (as Linux, RFC 5961): the old RST dropped (+inv), the inexact one forwarded with the
    connection still ESTABLISHED, the SYN forwarded and the connection unchanged, the challenge
    ACK forwarded, and the exact RST forwarded, leaving the connection CLOSE.
    """
    b = ctb(rules=stateful_rules())
    b.start()
    handshake(b, 40040)
    data = cli(40040, "PA", 1001, 5001, b"x" * 100)
    b.phase([data], out={"outside": [data]})
    ack = srv(40040, "A", 5001, 1101)
    b.phase([ack], out={"inside": [ack]})
    old = cli(40040, "R", 1050)
    b.phase([old], out={}, drops={"rule_drop": 1})
    inexact = cli(40040, "R", 2101)
    b.phase([inexact], out={"outside": [inexact]})
    assert b.state(sport=40040) == "ESTABLISHED"
    syn = cli(40040, "S", 90000)
    b.phase([syn], out={"outside": [syn]})
    assert b.state(sport=40040) == "ESTABLISHED"
    challenge = srv(40040, "A", 5001, 1101)
    b.phase([challenge], out={"inside": [challenge]})
    exact = cli(40040, "R", 1101)
    b.phase([exact], out={"outside": [exact]})
    assert b.state(sport=40040) == "CLOSE"
    b.finish()
    b.check_outputs()
