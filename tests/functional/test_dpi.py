"""Functional tests of payload inspection (the `dpi` action, Hyperscan) on tracked connections.

ferryd sits between an inside network (10.0.0.0/8) and an outside one, as in the ct tests
(ct_util.py): two capturing pcap ports, `inside` and `outside`, and one new pcap port per phase
(lan1, wan1, ...) whose frames ferryd reads as soon as it is added. Where a packet goes follows
from its connection's direction. Two rule sets put `dpi` after a `ct` action:

- "tables": table 0 sends IPv4 to ct(zone=1,table=1); in table 1 a new connection from the
  inside is committed, inspected and sent out of `outside`; established packets are inspected
  and sent out of `outside` (original direction) or `inside` (replies); the rest is dropped.
- "single_rule": one rule per side, ["ct(zone=1,commit)", "dpi", "output:..."].

Expected frames are compared byte for byte with the tx pcaps, drops by reason on every phase
port, dpi.stats / dpi.list counters exactly, and alert log lines by content.
"""
import json
import os
import re
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pcap_util import WAIT_S, rule, settled_stats  # noqa: E402
from ct_util import CLIENT, INSIDE4, INSIDE_MAC, SERVER, CtBridge, bridges, tcp, udp  # noqa: E402
from ferry_harness import FERRYD, RpcError, wait_for  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

ZONE = 1
INVALID_PARAMS, NOT_FOUND = -32602, -32002

# Rule ids of dpi_rules("tables")
R_CT, R_INV, R_NEW, R_EST_ORIG, R_EST_REPLY, R_DEFAULT = 1, 10, 11, 12, 13, 14


def dpi_rules(style="tables", then=None):
    """The rule sets of the module docstring. then: replaces the final output of table 1's
    inspecting rules (e.g. goto_table:2), the same for both directions."""
    commit = f"ct(zone={ZONE},commit)"
    if style == "single_rule":
        return [rule(1, [commit, "dpi", "output:outside"], {"eth_type": "ipv4", "ip_src": INSIDE4},
                     priority=10),
                rule(2, [commit, "dpi", "output:inside"], {"eth_type": "ipv4", "ip_dst": INSIDE4},
                     priority=10)]
    assert style == "tables"
    orig, reply = (then or "output:outside"), (then or "output:inside")
    return [
        rule(R_CT, [f"ct(zone={ZONE},table=1)"], {"eth_type": "ipv4"}, priority=10),
        rule(R_INV, ["drop"], {"ct_state": "+trk+inv"}, priority=30, table=1),
        rule(R_NEW, [commit, "dpi", orig],
             {"eth_type": "ipv4", "ip_src": INSIDE4, "ct_state": "+trk+new"}, priority=20, table=1),
        rule(R_EST_ORIG, ["dpi", orig], {"ct_state": "+trk+est-rpl"}, priority=10, table=1),
        rule(R_EST_REPLY, ["dpi", reply], {"ct_state": "+trk+est+rpl"}, priority=10, table=1),
        rule(R_DEFAULT, ["drop"], priority=0, table=1),
    ]


def pattern(pid, regex, action="alert", direction="both", flags=(), mark=None):
    p = {"id": pid, "regex": regex, "action": action, "direction": direction, "flags": list(flags)}
    if mark is not None:
        p["mark"] = mark
    return p


ALERT_RE = re.compile(r"dpi alert: pattern (\d+) (to_server|to_client) at byte (\d+): (.*)$")


def tuple_text(proto, cport, sport=80, client=CLIENT, server=SERVER):
    """How ferryd's log names a connection (its original tuple)."""
    return f"{proto} {client}:{cport} -> {server}:{sport} zone {ZONE}"


class DpiBridge(CtBridge):
    """A CtBridge with a `dpi` config section and helpers to read inspection state."""

    def __init__(self, patterns=(), dpi=None, rules=None, style="tables", **kw):
        super().__init__(rules=rules if rules is not None else dpi_rules(style), **kw)
        self.ferryd.config["dpi"] = dict(dpi or {}, patterns=list(patterns))

    def dpi_stats(self):
        return self.call("dpi.stats")

    def counts(self, *keys):
        """The named dpi.stats counters as a dict."""
        st = self.dpi_stats()
        return {k: st[k] for k in keys}

    def matches(self):
        """dpi.list as {id: matches}."""
        return {p["id"]: p["matches"] for p in self.call("dpi.list")["patterns"]}

    def alerts(self):
        """The alert lines of the log so far as sorted (id, direction, byte, tuple) tuples."""
        out = []
        for line in self.ferryd.read_log().splitlines():
            m = ALERT_RE.search(line)
            if m:
                out.append((int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)))
        return sorted(out)

    def wait_alerts(self, expected):
        """Waits until the log holds as many alert lines as expected, then compares them."""
        expected = sorted(expected)
        try:
            wait_for(lambda: len(self.alerts()) >= len(expected), WAIT_S, what="alert log lines")
        except TimeoutError:
            pass
        time.sleep(0.05)  # one more housekeeping round: a line too many would show now
        assert self.alerts() == expected

    def wait_stats(self, want, timeout=WAIT_S):
        """Waits until the dpi.stats counters named in want have the given values."""
        have = {}

        def done():
            st = self.dpi_stats()
            have.update({k: st[k] for k in want})
            return have == want

        try:
            wait_for(done, timeout, what="dpi.stats")
        except TimeoutError as e:
            raise AssertionError(f"{e}: want {want}, have {have}") from None


class Conn:
    """A TCP connection CLIENT:cport -> SERVER:sport whose segments carry consecutive sequence
    numbers (ISNs cisn / sisn)."""

    def __init__(self, cport, sport=80, cisn=1000, sisn=5000):
        self.cport, self.sport = cport, sport
        self.isn = (cisn, sisn)
        self.next = [cisn + 1, sisn + 1]

    def syn(self):
        return tcp(CLIENT, SERVER, self.cport, self.sport, "S", self.isn[0])

    def synack(self):
        return tcp(SERVER, CLIENT, self.sport, self.cport, "SA", self.isn[1], self.isn[0] + 1)

    def c(self, data=b"", flags="PA", seq=None):
        """A client segment at the next sequence number (advanced), or at seq (not advanced)."""
        at = self.next[0] if seq is None else seq
        f = tcp(CLIENT, SERVER, self.cport, self.sport, flags, at, self.next[1], data)
        if seq is None:
            self.next[0] += len(data) + (1 if "F" in flags else 0)
        return f

    def s(self, data=b"", flags="PA", seq=None):
        """A server segment, as c()."""
        at = self.next[1] if seq is None else seq
        f = tcp(SERVER, CLIENT, self.sport, self.cport, flags, at, self.next[0], data)
        if seq is None:
            self.next[1] += len(data) + (1 if "F" in flags else 0)
        return f


def open_conns(b, *conns):
    """Phases SYN (lan) and SYN+ACK (wan) of the connections; the client's ACK is left to the
    test's next lan phase (conn.c(flags="A"))."""
    b.phase([c.syn() for c in conns], out={"outside": [c.syn() for c in conns]})
    b.phase([c.synack() for c in conns], out={"inside": [c.synack() for c in conns]})


def passes(b, frames):
    """A phase whose frames must all be forwarded unchanged: inside frames to outside,
    outside frames to inside."""
    side = "outside" if Ether(frames[0]).src == INSIDE_MAC else "inside"
    return b.phase(frames, out={side: frames})


@pytest.fixture
def dpib():
    """DpiBridge(**kw) maker; the bridges stop after the test (ct_util.bridges)."""
    yield from bridges(DpiBridge)


# ---------------------------------------------------------------------------------------------
# 1. Patterns split across segments


def test_pattern_split_across_segments_is_found(dpib):
    """Pattern 1 "attack" (alert, to_server) and pattern 3 "abab" (alert, to_server). Five TCP
    connections CLIENT -> SERVER:80 and one UDP flow, all from the inside, in one lan phase
    after the handshakes:
      A 40001: "xxatt" | "ackyy"                 (two segments; the match ends at byte 8)
      B 40002: "at" | "ta" | "ck"                (three; ends at 6)
      C 40003: "z", "a", "t", "t", "a", "c", "k", "z"   (one byte per segment, each frame
               padded to 60 bytes by zeros that are not payload; ends at 7)
      D 40004: "attac" then "k" one byte beyond the next sequence number (a gap)
      E 40005: "ab", "ab" again (a retransmission), "abcd" from the same sequence number
               (2 bytes retransmitted, 2 new): the stream is "abcd", not "ababcd"
      U 5000->53 (UDP): "att" | "ack"            (datagrams form one stream; ends at 6)

    Expects every frame forwarded unchanged; pattern 1 found 4 times (A, B, C, U), pattern 3
    never (retransmitted bytes are not scanned again), D's split match lost at the gap (gaps 1);
    dpi.stats packets 18 (E's full retransmission and D's segment past the gap not scanned),
    bytes 39; alerts 4, each logged once with the byte its match ends at and the connection.
    """
    b = dpib(patterns=[pattern(1, "attack", direction="to_server"),
                       pattern(3, "abab", direction="to_server")])
    b.start()
    A, B, C, D, E = (Conn(40001 + i, cisn=1000 * (i + 1)) for i in range(5))
    open_conns(b, A, B, C, D, E)
    frames = [A.c(flags="A"), A.c(b"xxatt"), A.c(b"ackyy"),
              B.c(flags="A"), B.c(b"at"), B.c(b"ta"), B.c(b"ck")]
    frames += [C.c(flags="A")] + [C.c(bytes([ch])) for ch in b"zattackz"]
    d_start = D.next[0]
    frames += [D.c(flags="A"), D.c(b"attac"), D.c(b"k", seq=d_start + 6)]
    e_start = E.next[0]
    frames += [E.c(flags="A"), E.c(b"ab", seq=e_start), E.c(b"ab", seq=e_start),
               E.c(b"abcd", seq=e_start)]
    frames += [udp(CLIENT, SERVER, 5000, 53, b"att"), udp(CLIENT, SERVER, 5000, 53, b"ack")]
    assert len(C.c(b"q", seq=1)) == 60, "one-byte segments must be padded frames"
    passes(b, frames)

    assert b.matches() == {1: 4, 3: 0}
    b.wait_stats({"packets": 18, "bytes": 39, "matches": 4, "alerts": 4, "gaps": 1, "drops": 0,
                  "alerts_lost": 0, "restarts": 0, "untracked": 0, "scan_errors": 0})
    assert {p["id"]: p["matches"] for p in b.dpi_stats()["patterns"]} == {1: 4, 3: 0}
    b.wait_alerts([(1, "to_server", 8, tuple_text("tcp", 40001)),
                   (1, "to_server", 6, tuple_text("tcp", 40002)),
                   (1, "to_server", 7, tuple_text("tcp", 40003)),
                   (1, "to_server", 6, tuple_text("udp", 5000, 53))])
    assert b.dpi_stats()["alerts_logged"] == 4
    b.finish()
    b.check_outputs()
    b.check_counters()


@pytest.mark.parametrize("style,same_burst", [("single_rule", True), ("tables", True),
                                              ("tables", False)],
                         ids=["single_rule", "tables", "tables_next_burst"])
def test_split_drop_pattern_blocks_the_connection(dpib, style, same_burst):
    """Pattern 2 "/etc/passwd" (drop, both directions); TCP timeouts with tcp_time_wait 77 s.
    Connections X 40010 (the victim) and Y 40011 (same hosts, innocent) CLIENT -> SERVER:80,
    then UDP flows V 5010 -> 53 (victim) and W 5011 -> 53:
      lan: X ACK, "GET /et", "c/pas", "swd HTTP/1.0" (completes the match), "more"; Y ACK,
           "GET /index"; V "cat /etc/pa", "sswd", "again"; W "hello"   (one burst; with
           tables_next_burst X "more" and V "again" come in a phase of their own)
      wan: X "HTTP/1.1 200 OK", X FIN; Y "HTTP/1.1 200 OK"; V "reply"; W "reply"
      lan: X "even more", X RST; Y "bye"; V "x"; W "bye"

    Expects X's segments up to "c/pas" forwarded byte for byte, "swd HTTP/1.0" dropped as
    dpi_drop and every later X packet, both directions, dropped as dpi_drop at its ct action
    (also "more", which arrives in the same burst as the completing segment); the same for V
    from "sswd"; Y and W forwarded in full both ways. dpi.stats drops 2 (connections ended)
    and matches 2; the blocked connections stay in ct.list with the TIME_WAIT timeout (77 s),
    refreshed by their dropped packets.
    """
    b = dpib(patterns=[pattern(2, "/etc/passwd", action="drop")], style=style,
             conntrack={"timeouts": {"tcp_time_wait": 77}})
    b.start()
    X, Y = Conn(40010), Conn(40011, cisn=3000, sisn=8000)
    open_conns(b, X, Y)
    x_ok = [X.c(flags="A"), X.c(b"GET /et"), X.c(b"c/pas")]
    x_drop = [X.c(b"swd HTTP/1.0"), X.c(b"more")]
    y_ok = [Y.c(flags="A"), Y.c(b"GET /index")]
    v_ok = [udp(CLIENT, SERVER, 5010, 53, b"cat /etc/pa")]
    v_drop = [udp(CLIENT, SERVER, 5010, 53, b"sswd"), udp(CLIENT, SERVER, 5010, 53, b"again")]
    w_ok = [udp(CLIENT, SERVER, 5011, 53, b"hello")]
    if same_burst:
        b.phase(x_ok + x_drop + y_ok + v_ok + v_drop + w_ok,
                out={"outside": x_ok + y_ok + v_ok + w_ok}, drops={"dpi_drop": 4})
    else:
        b.phase(x_ok + x_drop[:1] + y_ok + v_ok + v_drop[:1] + w_ok,
                out={"outside": x_ok + y_ok + v_ok + w_ok}, drops={"dpi_drop": 2})
        b.phase(x_drop[1:] + v_drop[1:], drops={"dpi_drop": 2})
    assert b.counts("drops", "matches") == {"drops": 2, "matches": 2}

    x_back = [X.s(b"HTTP/1.1 200 OK"), X.s(flags="FA")]
    y_back = [Y.s(b"HTTP/1.1 200 OK")]
    v_back = [udp(SERVER, CLIENT, 53, 5010, b"reply")]
    w_back = [udp(SERVER, CLIENT, 53, 5011, b"reply")]
    b.phase(x_back + y_back + v_back + w_back, out={"inside": y_back + w_back},
            drops={"dpi_drop": 3})

    x_late = [X.c(b"even more"), X.c(flags="R")]
    y_late = [Y.c(b"bye")]
    b.phase(x_late + y_late + [udp(CLIENT, SERVER, 5010, 53, b"x"),
                               udp(CLIENT, SERVER, 5011, 53, b"bye")],
            out={"outside": y_late + [udp(CLIENT, SERVER, 5011, 53, b"bye")]},
            drops={"dpi_drop": 3})

    assert b.counts("drops", "matches", "streams_in_use") == \
        {"drops": 2, "matches": 2, "streams_in_use": 2}  # Y and W are still inspected
    assert b.matches() == {2: 2}
    conns = {(c["proto"], c["orig"]["sport"]): c for c in b.conns()}
    assert set(conns) == {("tcp", 40010), ("tcp", 40011), ("udp", 5010), ("udp", 5011)}
    for key in (("tcp", 40010), ("udp", 5010)):
        assert 75 <= conns[key]["timeout_s"] <= 77, conns[key]
    assert conns[("tcp", 40011)]["state"] == "ESTABLISHED"
    b.finish()
    b.check_outputs()
    b.check_counters()


# ---------------------------------------------------------------------------------------------
# 2., 3. Flags and directions


def test_caseless_flag(dpib):
    """Pattern 10 "secret" caseless, pattern 11 "Token" without flags (both alert). One
    connection from CLIENT:40020:
      lan: ACK, "my SeCrEt", " TOKEN token"      then      lan: " Token!"

    Expects "SeCrEt" found by 10 only because of the flag, "TOKEN" and "token" not found by 11,
    then "Token" found: matches {10: 1, 11: 0}, then {10: 1, 11: 1}; dpi.list shows the flags
    as loaded; everything forwarded.
    """
    b = dpib(patterns=[pattern(10, "secret", flags=["caseless"]), pattern(11, "Token")])
    b.start()
    a = Conn(40020)
    open_conns(b, a)
    passes(b, [a.c(flags="A"), a.c(b"my SeCrEt"), a.c(b" TOKEN token")])
    assert b.matches() == {10: 1, 11: 0}
    passes(b, [a.c(b" Token!")])
    assert b.matches() == {10: 1, 11: 1}
    assert b.counts("alerts", "matches") == {"alerts": 2, "matches": 2}
    listed = {p["id"]: (p["regex"], p["flags"]) for p in b.call("dpi.list")["patterns"]}
    assert listed == {10: ("secret", ["caseless"]), 11: ("Token", [])}
    b.wait_alerts([(10, "to_server", 9, tuple_text("tcp", 40020)),
                   (11, "to_server", 27, tuple_text("tcp", 40020))])
    b.finish()
    b.check_outputs()


def test_directions_are_inspected_separately(dpib):
    """Pattern 20 "REQ" to_server, 21 "RSP" to_client, 22 "ANY" both (all alert). TCP
    CLIENT:40030 -> SERVER:80, then a UDP flow CLIENT:5030 -> SERVER:53:
      lan: ACK, "RSP"        wan: "REQ"         (each in the wrong direction: no match)
      lan: "REQ ANY"         wan: "RSP ANY"     (each in its direction: matches)
      lan: UDP "RSP"         wan: UDP reply "REQ" then "RSP"

    Expects after the first two phases no match at all; then 20 found to_server, 21 to_client,
    22 both ways; for the UDP flow only the reply's "RSP" (the client's "RSP" and the
    server's "REQ" are in the wrong direction). Alert lines name the direction and the byte
    offset within that direction's stream. All forwarded.
    """
    b = dpib(patterns=[pattern(20, "REQ", direction="to_server"),
                       pattern(21, "RSP", direction="to_client"),
                       pattern(22, "ANY", direction="both")])
    b.start()
    a = Conn(40030)
    open_conns(b, a)
    passes(b, [a.c(flags="A"), a.c(b"RSP")])
    passes(b, [a.s(b"REQ")])
    assert b.matches() == {20: 0, 21: 0, 22: 0}
    assert b.counts("packets", "matches") == {"packets": 2, "matches": 0}
    passes(b, [a.c(b" REQ ANY")])
    assert b.matches() == {20: 1, 21: 0, 22: 1}
    passes(b, [a.s(b" RSP ANY")])
    assert b.matches() == {20: 1, 21: 1, 22: 2}
    passes(b, [udp(CLIENT, SERVER, 5030, 53, b"RSP")])
    passes(b, [udp(SERVER, CLIENT, 53, 5030, b"REQ"), udp(SERVER, CLIENT, 53, 5030, b"RSP")])
    assert b.matches() == {20: 1, 21: 2, 22: 2}
    t = tuple_text("tcp", 40030)
    b.wait_alerts([(20, "to_server", 7, t), (22, "to_server", 11, t),
                   (21, "to_client", 7, t), (22, "to_client", 11, t),
                   (21, "to_client", 6, tuple_text("udp", 5030, 53))])
    b.finish()
    b.check_outputs()


# ---------------------------------------------------------------------------------------------
# 5. Mark


def mark_rules():
    """dpi_rules("tables") continuing in table 2 instead of sending out: there ct_mark 7 goes
    to `quar`, other packets to outside (original direction) or inside (replies)."""
    return dpi_rules("tables", then="goto_table:2") + [
        rule(30, ["output:quar"], {"ct_mark": 7}, priority=20, table=2),
        rule(31, ["output:outside"], {"ct_state": "+trk-rpl"}, priority=10, table=2),
        rule(32, ["output:inside"], {"ct_state": "+trk+rpl"}, priority=10, table=2),
    ]


def test_mark_redirects_the_connection(dpib):
    """Pattern 30 "\\x13BitTorrent protocol" (mark 7, single_match, both directions); rules of
    mark_rules() with a third capture port `quar`. Connections M 40050 and N 40051:
      lan: M ACK, M "hello", N ACK, N "hello"
      lan: M "\\x13BitTorrent protocol"        (the match)
      wan: M "ok", N "ok"
      lan: M "\\x13BitTorrent protocol" again, N "more"

    Expects everything forwarded normally until the match; the marking segment itself goes to
    quar (the mark is in its key for table 2), and so do all later M packets, both directions;
    N unaffected. ct.list shows M's mark 7, N's 0; dpi.stats marks 1, matches 1 also after the
    pattern appears again (single_match).
    """
    b = dpib(patterns=[pattern(30, r"\x13BitTorrent protocol", action="mark", mark=7,
                               flags=["single_match"])],
             rules=mark_rules(), capture=("inside", "outside", "quar"))
    b.start()
    M, N = Conn(40050), Conn(40051, cisn=3000)
    open_conns(b, M, N)
    passes(b, [M.c(flags="A"), M.c(b"hello"), N.c(flags="A"), N.c(b"hello")])
    assert {c["orig"]["sport"]: c["mark"] for c in b.conns()} == {40050: 0, 40051: 0}
    bt = M.c(b"\x13BitTorrent protocol")
    b.phase([bt], out={"quar": [bt]})
    assert {c["orig"]["sport"]: c["mark"] for c in b.conns()} == {40050: 7, 40051: 0}
    assert b.counts("marks", "matches") == {"marks": 1, "matches": 1}
    m_ok, n_ok = M.s(b"ok"), N.s(b"ok")
    b.phase([m_ok, n_ok], out={"quar": [m_ok], "inside": [n_ok]})
    bt2, n_more = M.c(b"\x13BitTorrent protocol"), N.c(b"more")
    b.phase([bt2, n_more], out={"quar": [bt2], "outside": [n_more]})
    assert b.counts("marks", "matches", "alerts", "drops") == \
        {"marks": 1, "matches": 1, "alerts": 0, "drops": 0}
    assert b.matches() == {30: 1}
    assert {c["orig"]["sport"]: c["mark"] for c in b.conns()} == {40050: 7, 40051: 0}
    listed = b.call("dpi.list")["patterns"]
    assert listed[0]["action"] == "mark" and listed[0]["mark"] == 7
    b.finish()
    b.check_outputs()
    b.check_counters()


def test_mark_applies_to_the_rest_of_the_burst(dpib):
    """As test_mark_redirects_the_connection, but the marking segment and two more segments of
    M arrive in one burst (one phase): M "\\x13BitTorrent protocol", "after 1", "after 2".

    Expects all three on quar: the connection is marked from the matching packet on, whether
    its later packets come in a later burst or the same one.
    """
    b = dpib(patterns=[pattern(30, r"\x13BitTorrent protocol", action="mark", mark=7)],
             rules=mark_rules(), capture=("inside", "outside", "quar"))
    b.start()
    M = Conn(40052)
    open_conns(b, M)
    passes(b, [M.c(flags="A")])
    burst = [M.c(b"\x13BitTorrent protocol"), M.c(b"after 1"), M.c(b"after 2")]
    b.phase(burst, out={"quar": burst})
    b.finish()
    b.check_outputs()


# ---------------------------------------------------------------------------------------------
# 6. Database swap under traffic


def test_database_swap_during_traffic(dpib):
    """8 UDP flows CLIENT:6000+k -> SERVER:7000 ("alpha beta k") are opened in a first phase;
    then port inf replays forever their datagrams and their replies ("gamma k"); outside and
    inside count without capturing; depth 1 GiB so inspection never stops. Generation 1: 60 "alpha" to_server, 61 "gamma" to_client, both
    alert + single_match (one report per connection, direction and database).

    With traffic flowing: dpi.load replace [60 "alpha", 62 "beta" to_server, 63 "gamma"
    to_server] (generation 2); then 40 loads alternating two sets (generations 3..42), and a
    final replace by [70 "zeta"] (generation 43), which nothing sends.

    Expects: generation 1 matches {60: 8, 61: 8}; after the swap every connection restarted
    once (restarts 8) and matched again under the new database: {60: 16, 62: 8, 63: 0}, 61
    gone from dpi.list and dpi.stats; each load answering the next generation and a hash that
    dpi.stats then shows; after the last load no more matches while traffic still flows and is
    scanned; ferryd up throughout; no drop anywhere, and once inf is deleted, the packets the
    worker received equal the packets sent on outside and inside.
    """
    flows = [udp(CLIENT, SERVER, 6000 + k, 7000, b"alpha beta %d" % k) for k in range(8)]
    replies = [udp(SERVER, CLIENT, 7000, 6000 + k, b"gamma %d" % k) for k in range(8)]
    g1 = [pattern(60, "alpha", direction="to_server", flags=["single_match"]),
          pattern(61, "gamma", direction="to_client", flags=["single_match"])]
    b = dpib(patterns=g1, dpi={"depth_kib": 1 << 20}, capture=())
    b.port("outside", capture=False)
    b.port("inside", capture=False)
    b.start()
    # The flows exist before the replay starts: a reply in the same burst as its flow's first
    # datagram would meet no connection yet (the commit runs after the burst's ct lookups).
    b.phase(flows, side="lan")
    wait_for(lambda: len(b.conns()) == 8, WAIT_S, what="the flows to be committed")
    b.add_port("inf", flows + replies, infinite=True, capture=False)
    try:
        wait_for(lambda: b.dpi_stats()["packets"] > 20000, WAIT_S, what="traffic")
        assert b.matches() == {60: 8, 61: 8}
        st = b.dpi_stats()
        assert (st["generation"], st["alerts"], st["restarts"]) == (1, 16, 0)

        g2 = [pattern(60, "alpha", direction="to_server", flags=["single_match"]),
              pattern(62, "beta", direction="to_server", flags=["single_match"]),
              pattern(63, "gamma", direction="to_server", flags=["single_match"])]
        r = b.call("dpi.load", {"patterns": g2, "replace": True})
        assert (r["generation"], r["patterns"]) == (2, 3)
        b.wait_stats({"restarts": 8, "alerts": 32, "generation": 2, "hash": r["hash"]})
        time.sleep(0.2)
        assert b.matches() == {60: 16, 62: 8, 63: 0}
        st = b.dpi_stats()
        assert {p["id"]: p["matches"] for p in st["patterns"]} == {60: 16, 62: 8, 63: 0}
        assert (st["alerts"], st["restarts"], st["pattern_count"]) == (32, 8, 3)

        alt = [[pattern(64, "alpha|gamma")], [pattern(65, "beta", flags=["caseless"])]]
        for i in range(40):
            r = b.call("dpi.load", {"patterns": alt[i % 2], "replace": True})
            assert r["generation"] == 3 + i
            assert b.ferryd.proc.poll() is None
            time.sleep(0.005)
        r = b.call("dpi.load", {"patterns": [pattern(70, "zeta")], "replace": True})
        assert r["generation"] == 43
        time.sleep(0.2)  # every connection has seen the last database
        before = b.dpi_stats()
        time.sleep(0.3)
        after = b.dpi_stats()
        assert after["packets"] > before["packets"], "traffic stopped being scanned"
        assert after["matches"] == before["matches"] and after["alerts"] == before["alerts"]
        assert (after["generation"], after["hash"]) == (43, r["hash"])
        assert b.matches() == {70: 0}
        assert after["drops"] == 0 and after["scan_errors"] == 0 and after["depth_reached"] == 0
        inf_drops = {k: n for k, n in b.stats("inf")["drops"].items() if n}
    finally:
        if b.ferryd.proc.poll() is None and \
                "inf" in {p["name"] for p in b.call("port.list")}:
            b.del_port("inf")
    assert inf_drops == {}, inf_drops
    ports, workers = settled_stats(b)
    b.final_stats = {s["name"]: s for s in ports}
    rc = b.ferryd.stop()
    assert rc == 0, f"ferryd exited with {rc}:\n{b.ferryd.read_log()}"
    b.outputs = {}
    sent = {p: b.final_stats[p]["tx_packets"] for p in ("outside", "inside")}
    for p in ("outside", "inside"):
        assert not any(b.final_stats[p]["drops"].values()), b.final_stats[p]["drops"]
    assert sent["outside"] > 0 and sent["inside"] > 0, sent
    assert sum(workers) == sent["outside"] + sent["inside"], \
        f"worker received {sum(workers)}, sent {sent}"


# ---------------------------------------------------------------------------------------------
# 7. Compile errors and refused patterns


def test_refused_patterns_keep_the_running_database(dpib):
    """Pattern 1 "attack" (alert) loaded at start. dpi.load of, each alone:
      [{5, "fine"}, {7, "a("}]             Hyperscan: missing close parenthesis (pattern 7)
      [{5, "a*"}]                          matches empty input
      [{5, "x"}, {5, "y"}]                 duplicate id
      [{5, "x", mark 3}] with action alert, without action, with action drop
      [{5, "x", action mark}]              mark missing
      [{5, "a<NUL>b"}]                     NUL byte
      []                                   no pattern
    and, replacing, [{5, "(a|b"}].

    Expects each refused with a JSON-RPC error -32602 whose message names the pattern (the id
    for compile errors with Hyperscan's own message, else the param's path); dpi.list, the
    generation and the hash unchanged after every one; traffic (CLIENT:40070 sending
    "attack") still inspected with the old set: one alert.
    """
    b = dpib(patterns=[pattern(1, "attack")])
    b.start()
    before = (b.call("dpi.list"), b.dpi_stats()["generation"], b.dpi_stats()["hash"])
    bad = [
        ([pattern(5, "fine"), pattern(7, "a(")], False,
         "pattern 7: Missing close parenthesis for group started at index 1."),
        ([pattern(5, "a*")], False,
         "pattern 5: Pattern matches empty buffer; use HS_FLAG_ALLOWEMPTY to enable support."),
        ([pattern(5, "x"), pattern(5, "y")], False, "params.patterns[1].id: duplicate id 5"),
        ([pattern(5, "x", mark=3)], False,
         'params.patterns[0].mark: only allowed when action is "mark"'),
        ([{"id": 5, "regex": "x", "mark": 3}], False,
         'params.patterns[0].mark: only allowed when action is "mark"'),
        ([pattern(5, "x", action="drop", mark=3)], False,
         'params.patterns[0].mark: only allowed when action is "mark"'),
        ([pattern(5, "x", action="mark")], False, "params.patterns[0].mark: required"),
        ([pattern(5, "a\x00b")], False,
         "params.patterns[0].regex: contains a NUL byte; write \\x00 in the expression"),
        ([], False, "params.patterns: must not be empty"),
        ([pattern(5, "(a|b")], True, "pattern 5: Missing close parenthesis"),
    ]
    for patterns, replace, message in bad:
        with pytest.raises(RpcError) as err:
            b.call("dpi.load", {"patterns": patterns, "replace": replace})
        assert err.value.code == INVALID_PARAMS, (patterns, err.value.message)
        assert err.value.message.startswith(message), (patterns, err.value.message)
        after = (b.call("dpi.list"), b.dpi_stats()["generation"], b.dpi_stats()["hash"])
        assert after == before, f"refused load of {patterns} changed the database"
    a = Conn(40070)
    open_conns(b, a)
    passes(b, [a.c(flags="A"), a.c(b"an attack")])
    assert b.matches() == {1: 1}
    assert b.counts("alerts", "generation") == {"alerts": 1, "generation": 1}
    b.finish()
    b.check_outputs()


def test_pattern_set_over_the_memory_limit_is_refused(dpib):
    """dpi memory_mb 1, streams_per_worker 16384 (64 bytes of stream state per connection);
    pattern 1 "attack" loaded at start. dpi.load of a pattern with large bounded repeats (both
    directions).

    Expects the load refused (-32602, "more than dpi.memory_mb (1)"), the database unchanged.
    """
    b = dpib(patterns=[pattern(1, "attack")], dpi={"memory_mb": 1, "streams_per_worker": 16384})
    b.start()
    before = b.counts("generation", "hash", "stream_bytes")
    assert before["stream_bytes"] <= 64
    with pytest.raises(RpcError) as err:
        b.call("dpi.load", {"patterns": [pattern(2, r"a[^x]{300}b.{40,200}c[0-9]{100}d")]})
    assert err.value.code == INVALID_PARAMS
    assert "bytes of stream state per connection" in err.value.message
    assert "more than dpi.memory_mb (1)" in err.value.message
    assert b.counts("generation", "hash", "stream_bytes") == before
    assert b.matches() == {1: 0}


def write_config(path, dpi):
    """A config without ports whose dpi section is dpi."""
    cfg = {"eal": ["--no-pci"], "control": {"socket": path + ".sock"}, "workers": [1],
           "ports": [], "dpi": dpi}
    with open(path, "w") as f:
        json.dump(cfg, f)


@pytest.mark.parametrize("case", ["bad_regex", "empty_match", "mark_without_action_mark",
                                  "duplicate_id", "valid"])
def test_check_config_with_patterns(tmp_path, case):
    """ferryd --check --config FILE with dpi.patterns holding, by case: [{9, "a("}],
    [{9, "a*"}], [{9, "x", mark 4}], two patterns of id 9, or a valid set.

    Expects exit status 2 and the message on stderr naming the file and the pattern, or for the
    valid set status 0 and "is valid".
    """
    patterns, message = {
        "bad_regex": ([pattern(9, "a(")], "dpi.patterns: pattern 9: Missing close parenthesis"),
        "empty_match": ([pattern(9, "a*")], "dpi.patterns: pattern 9: Pattern matches empty"),
        "mark_without_action_mark": ([{"id": 9, "regex": "x", "mark": 4}],
                                     'dpi.patterns[0].mark: only allowed when action is "mark"'),
        "duplicate_id": ([pattern(9, "x"), pattern(9, "y")],
                         "dpi.patterns[1].id: duplicate id 9"),
        "valid": ([pattern(9, "x"), pattern(10, "y", action="mark", mark=3)], None),
    }[case]
    path = str(tmp_path / "ferryd.json")
    write_config(path, {"patterns": patterns})
    p = subprocess.run([FERRYD, "--check", "--config", path], capture_output=True, text=True,
                       timeout=30)
    if message is None:
        assert p.returncode == 0, p.stderr
        assert "is valid" in p.stdout
    else:
        assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
        assert f"ferryd: {path}: {message}" in p.stderr, p.stderr


# ---------------------------------------------------------------------------------------------
# 8. Bounds


def test_depth_limit(dpib):
    """depth_kib 1 (1024 bytes per direction). Patterns 80 "early", 81 "edge", 82 "late"
    (alert, both directions), 83 "/etc/passwd" (drop). CLIENT:40080 sends
      "early" + 1015 dots + "ed"  (1022 bytes)  |  "ge" + "late" + "/etc/passwd"  |  "/etc/passwd"
    then SERVER answers "late!".

    Expects "early" and "edge" (ending at byte 1024, the last inspected) found; "late"
    (starting at 1024) and "/etc/passwd" after the depth not found, so nothing dropped;
    depth_reached 1 (the client's direction); the server's "late" found in its own direction;
    1024 + 5 bytes scanned; every segment forwarded.
    """
    b = dpib(patterns=[pattern(80, "early"), pattern(81, "edge"), pattern(82, "late"),
                       pattern(83, "/etc/passwd", action="drop")], dpi={"depth_kib": 1})
    b.start()
    a = Conn(40080)
    open_conns(b, a)
    first = b"early" + b"." * 1015 + b"ed"
    assert len(first) == 1022
    passes(b, [a.c(flags="A"), a.c(first), a.c(b"ge" + b"late" + b"/etc/passwd"),
               a.c(b"/etc/passwd")])
    assert b.matches() == {80: 1, 81: 1, 82: 0, 83: 0}
    assert b.counts("depth_reached", "bytes", "drops") == \
        {"depth_reached": 1, "bytes": 1024, "drops": 0}
    passes(b, [a.s(b"late!")])
    assert b.matches() == {80: 1, 81: 1, 82: 1, 83: 0}
    assert b.counts("depth_reached", "bytes", "packets", "depth_bytes") == \
        {"depth_reached": 1, "bytes": 1029, "packets": 3, "depth_bytes": 1024}
    t = tuple_text("tcp", 40080)
    b.wait_alerts([(80, "to_server", 5, t), (81, "to_server", 1024, t),
                   (82, "to_client", 4, t)])
    b.finish()
    b.check_outputs()
    b.check_counters()


def test_streams_exhausted(dpib):
    """streams_per_worker 16 (the minimum); pattern 90 "hit" (alert, both directions). 24 UDP
    flows CLIENT:6000+k -> SERVER:53 send "hit k" in one phase, then each sends "hit again";
    then ct.flush, and 24 new flows CLIENT:6100+k send "hit".

    Expects all 72 datagrams forwarded in order; the first 16 flows inspected (alerts for
    ports 6000..6015 only), the other 8 counted in streams_exhausted once each and passed
    uninspected (also their second datagram); streams_in_use 16; after the flush the slots are
    free again (streams_in_use 0) and the new flows get them: 16 inspected, 8 more exhausted.
    """
    b = dpib(patterns=[pattern(90, "hit")], dpi={"streams_per_worker": 16})
    b.start()
    first = [udp(CLIENT, SERVER, 6000 + k, 53, b"hit %d" % k) for k in range(24)]
    passes(b, first)
    assert b.counts("alerts", "streams_exhausted", "streams_in_use", "packets") == \
        {"alerts": 16, "streams_exhausted": 8, "streams_in_use": 16, "packets": 16}
    passes(b, [udp(CLIENT, SERVER, 6000 + k, 53, b"hit again") for k in range(24)])
    assert b.counts("alerts", "streams_exhausted", "streams_in_use", "packets") == \
        {"alerts": 32, "streams_exhausted": 8, "streams_in_use": 16, "packets": 32}
    assert b.call("ct.flush")["flushed"] == 24
    assert b.counts("streams_in_use") == {"streams_in_use": 0}
    passes(b, [udp(CLIENT, SERVER, 6100 + k, 53, b"hit") for k in range(24)])
    assert b.counts("alerts", "streams_exhausted", "streams_in_use") == \
        {"alerts": 48, "streams_exhausted": 16, "streams_in_use": 16}
    assert b.matches() == {90: 48}
    want = [(90, "to_server", 3, tuple_text("udp", 6000 + k, 53)) for k in range(16)]
    want += [(90, "to_server", len(b"hit %d" % k) + 3, tuple_text("udp", 6000 + k, 53))
             for k in range(16)]
    want += [(90, "to_server", 3, tuple_text("udp", 6100 + k, 53)) for k in range(16)]
    b.wait_alerts(want)
    b.finish()
    b.check_outputs()
    b.check_counters()


# ---------------------------------------------------------------------------------------------
# 9. dpi.clear


def test_clear_one_and_all(dpib):
    """Patterns 1 "one", 2 "two", 3 "three" (alert). UDP flows CLIENT:5100+i -> SERVER:53, each
    sending "one two three":
      flow 0; dpi.clear [2]; flow 1; dpi.clear [99] (unknown); dpi.load [1 "uno"] without
      replace; flow 2 ("one two three uno"); dpi.clear (all); flow 3

    Expects {1: 1, 2: 1, 3: 1}; after clearing 2 dpi.list [1, 3] with their counts kept, the
    generation one higher; flow 1 matches 1 and 3 only; clear [99] refused (-32002) with
    nothing changed; the load replaces 1's regex (list [1 "uno", 3 "three"], 1's count kept);
    flow 2 matches "uno" and "three"; after clear all an empty list, pattern_count 0, and flow 3
    not inspected at all (packets unchanged). Every datagram forwarded.
    """
    b = dpib(patterns=[pattern(1, "one"), pattern(2, "two"), pattern(3, "three")])
    b.start()

    def flow(i, data=b"one two three"):
        passes(b, [udp(CLIENT, SERVER, 5100 + i, 53, data)])

    flow(0)
    assert b.matches() == {1: 1, 2: 1, 3: 1}
    r = b.call("dpi.clear", {"ids": [2]})
    assert (r["generation"], r["patterns"]) == (2, 2)
    assert b.matches() == {1: 1, 3: 1}
    flow(1)
    assert b.matches() == {1: 2, 3: 2}
    assert b.counts("alerts", "generation", "pattern_count") == \
        {"alerts": 5, "generation": 2, "pattern_count": 2}

    listed = b.call("dpi.list")
    with pytest.raises(RpcError) as err:
        b.call("dpi.clear", {"ids": [99]})
    assert err.value.code == NOT_FOUND and "99" in err.value.message
    assert b.call("dpi.list") == listed
    assert b.counts("generation") == {"generation": 2}

    r = b.call("dpi.load", {"patterns": [pattern(1, "uno")]})
    assert (r["generation"], r["patterns"]) == (3, 2)
    assert [(p["id"], p["regex"], p["matches"]) for p in b.call("dpi.list")["patterns"]] == \
        [(1, "uno", 2), (3, "three", 2)]
    flow(2, b"one two three uno")
    assert b.matches() == {1: 3, 3: 3}

    r = b.call("dpi.clear")
    assert (r["generation"], r["patterns"]) == (4, 0)
    assert b.call("dpi.list") == {"patterns": []}
    before = b.counts("packets", "bytes", "alerts", "matches")
    flow(3)
    st = b.dpi_stats()
    assert (st["pattern_count"], st["patterns"], st["generation"]) == (0, [], 4)
    assert {k: st[k] for k in before} == before
    b.finish()
    b.check_outputs()
    b.check_counters()
