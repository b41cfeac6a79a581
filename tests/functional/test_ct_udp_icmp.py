"""Functional tests of UDP, ICMP echo and ICMP error tracking through ferryd's stateful
firewall rules (ct_util.stateful_rules), IPv4 and IPv6.

Each phase sends frames from a new pcap port (lanN: inside hosts, wanN: outside hosts);
forwarded frames must arrive unchanged on `outside` (original direction) or `inside` (reply
direction), and ct.list / ct.stats must show the pseudo-states UDP_UNREPLIED / UDP_REPLIED,
ICMP_UNREPLIED / ICMP_REPLIED and the timeouts of the config.
"""
import pytest

from pcap_util import wait_for

from ct_util import (CLIENT, CLIENT6, R_CT4, R_CT6, R_DEFAULT, R_EST_ORIG, R_EST_REPLY, R_INV,
                     R_NEW4, R_NEW6, R_REL_ORIG, R_REL_REPLY, ROUTER, SERVER, SERVER2, SERVER6,
                     bridges, echo, hit_packets, icmp_error, stateful_rules, tcp, udp)


@pytest.fixture
def ctb():
    """CtBridge(**kw) maker; the bridges stop after the test (ct_util.bridges)."""
    yield from bridges()


def test_udp_request_reply_and_unsolicited(ctb):
    """udp_first 40 s, udp_stream 90 s.
      1 lan: a request CLIENT:5000 -> SERVER:53
      2 wan: the reply SERVER:53 -> CLIENT:5000; SERVER:53 -> CLIENT:5001 (no request went
             there); SERVER2:53 -> CLIENT:5000 (another server)
      3 lan: a second request on the first flow
      4 wan: its reply

    Expects the requests on outside, the replies on inside, unchanged and in order; the two
    unsolicited datagrams dropped (+new from outside: the default drop rule, rule_drop 2); the
    connection UDP_UNREPLIED with timeout_s about 40 after phase 1, UDP_REPLIED with about 90
    after phase 2; one connection created; ct.stats by_state udp 1.
    """
    b = ctb(rules=stateful_rules(), conntrack={"timeouts": {"udp_first": 40, "udp_stream": 90}})
    b.start()
    q1, q2 = (udp(CLIENT, SERVER, 5000, 53, b"query %d" % i) for i in (1, 2))
    r1, r2 = (udp(SERVER, CLIENT, 53, 5000, b"answer %d" % i) for i in (1, 2))
    b.phase([q1], out={"outside": [q1]})
    c = b.conn(sport=5000)
    assert (c["proto"], c["state"]) == ("udp", "UDP_UNREPLIED")
    assert 38 <= c["timeout_s"] <= 40
    b.phase([r1, udp(SERVER, CLIENT, 53, 5001, b"stray"), udp(SERVER2, CLIENT, 53, 5000, b"x")],
            out={"inside": [r1]}, drops={"rule_drop": 2})
    c = b.conn(sport=5000)
    assert c["state"] == "UDP_REPLIED" and 88 <= c["timeout_s"] <= 90
    b.phase([q2], out={"outside": [q2]})
    b.phase([r2], out={"inside": [r2]})
    c = b.conn(sport=5000)
    assert c["state"] == "UDP_REPLIED" and c["packets"] == [2, 2] and c["ports"] == ["lan1", "wan1"]
    st = b.ct_stats()
    assert st["connections"] == 1 and st["by_state"]["udp"] == 1
    assert (b.worker_stat("created"), b.worker_stat("invalid")) == (1, 0)
    assert hit_packets(b) == {R_CT4: 6, R_NEW4: 1, R_EST_ORIG: 1, R_EST_REPLY: 2, R_DEFAULT: 2}
    b.finish()
    b.check_outputs()


def test_udp_unreplied_expires_replied_stays(ctb):
    """udp_first 1 s, udp_stream 100 s.
      1 lan: requests CLIENT:5010 -> SERVER:53 and CLIENT:5011 -> SERVER:53
      2 wan: a reply to 5011 only
      then a wait of up to 4 s
      3 wan: a (late) reply to 5010, and a second reply to 5011

    Expects the unreplied connection (5010) gone within 4 s while the replied one (5011,
    udp_stream) stays; then the late reply dropped as +new from outside, the reply on the live
    flow forwarded; ct.stats removed 1.
    """
    b = ctb(rules=stateful_rules(), conntrack={"timeouts": {"udp_first": 1, "udp_stream": 100}})
    b.start()
    qa, qb = udp(CLIENT, SERVER, 5010, 53, b"a"), udp(CLIENT, SERVER, 5011, 53, b"b")
    rb1, rb2 = udp(SERVER, CLIENT, 53, 5011, b"b1"), udp(SERVER, CLIENT, 53, 5011, b"b2")
    b.phase([qa, qb], out={"outside": [qa, qb]})
    b.phase([rb1], out={"inside": [rb1]})
    wait_for(lambda: [c["orig"]["sport"] for c in b.conns()] == [5011], 4.0,
             what="the unreplied connection to expire")
    assert b.state(sport=5011) == "UDP_REPLIED"
    assert b.worker_stat("removed") == 1
    b.phase([udp(SERVER, CLIENT, 53, 5010, b"late"), rb2], out={"inside": [rb2]},
            drops={"rule_drop": 1})
    assert hit_packets(b)[R_DEFAULT] == 1
    b.finish()
    b.check_outputs()


def test_packet_through_two_ct_actions_is_counted_once(ctb):
    """Two requests CLIENT:5020 -> SERVER:53 in two phases, before any reply: each passes
    table 0's ct(zone=1,table=1) and, being +new, the commit rule's ct(zone=1,commit).

    Expects both forwarded and the connection's packets [2, 0], bytes the two frames: a packet
    tracked again in the same zone is the same packet (Open vSwitch keeps the connection it
    found on the packet and does not look it up or count it again). ferryd counts the second
    request twice ([3, 0]) unless both requests arrive in one burst, when table 0 looks both up
    before table 1 commits the first.
    """
    b = ctb(rules=stateful_rules())
    b.start()
    q1, q2 = udp(CLIENT, SERVER, 5020, 53, b"q1"), udp(CLIENT, SERVER, 5020, 53, b"q2")
    b.phase([q1], out={"outside": [q1]})
    b.phase([q2], out={"outside": [q2]})
    c = b.conn(sport=5020)
    b.finish()
    b.check_outputs()
    assert (c["packets"], c["bytes"]) == ([2, 0], [len(q1) + len(q2), 0])


def test_icmp_echo_and_unsolicited(ctb):
    """icmp timeout 25 s.
      1 lan: echo request CLIENT -> SERVER, id 0x1234 seq 1
      2 wan: its echo reply; an echo reply with id 0x9999 (no request); an echo request
             SERVER -> CLIENT (from outside)
      3 lan: echo request id 0x1234 seq 2            4 wan: its reply

    Expects requests on outside and replies on inside, unchanged; the stray reply dropped as
    +inv (an echo reply without request), the outside request dropped as +new from outside;
    one connection, proto icmp, keyed by the identifier (orig sport = dport = 0x1234),
    ICMP_UNREPLIED after phase 1 (timeout_s about 25) and ICMP_REPLIED after phase 2.
    """
    b = ctb(rules=stateful_rules(), conntrack={"timeouts": {"icmp": 25}})
    b.start()
    q1, q2 = echo(CLIENT, SERVER, 0x1234, 1), echo(CLIENT, SERVER, 0x1234, 2)
    r1, r2 = (echo(SERVER, CLIENT, 0x1234, i, reply=True) for i in (1, 2))
    b.phase([q1], out={"outside": [q1]})
    c = b.conn(src=CLIENT)
    assert c["proto"] == "icmp" and c["state"] == "ICMP_UNREPLIED" and 23 <= c["timeout_s"] <= 25
    assert c["orig"] == {"src": CLIENT, "dst": SERVER, "sport": 0x1234, "dport": 0x1234}
    b.phase([r1, echo(SERVER, CLIENT, 0x9999, 1, reply=True), echo(SERVER, CLIENT, 0x4321)],
            out={"inside": [r1]}, drops={"rule_drop": 2})
    assert b.state(src=CLIENT) == "ICMP_REPLIED"
    b.phase([q2], out={"outside": [q2]})
    b.phase([r2], out={"inside": [r2]})
    assert len(b.conns()) == 1 and b.conn(src=CLIENT)["packets"] == [2, 2]
    assert b.ct_stats()["by_state"]["icmp"] == 1
    assert b.worker_stat("invalid") == 1
    assert hit_packets(b) == {R_CT4: 6, R_NEW4: 1, R_EST_ORIG: 1, R_EST_REPLY: 2, R_INV: 1,
                              R_DEFAULT: 1}
    b.finish()
    b.check_outputs()


def test_icmp_errors_related(ctb):
    """1 lan: UDP CLIENT:5030 -> SERVER:33434 and a TCP SYN CLIENT:40050 -> SERVER:80
      2 wan: port unreachable from SERVER quoting the UDP datagram; time exceeded from a
             router (ROUTER) quoting the SYN; port unreachable from SERVER quoting a datagram
             CLIENT:5031 -> SERVER:33434 that was never sent
      3 wan: the UDP reply SERVER:33434 -> CLIENT:5030
      4 lan: port unreachable from CLIENT quoting that reply

    Expects both errors about tracked connections forwarded to inside as +rel+rpl (whoever
    sent them), the one about an unknown connection dropped as +inv; the errors not making
    the UDP connection replied (UDP_UNREPLIED after phase 2) nor changing the TCP one
    (SYN_SENT); after the reply, CLIENT's error about it forwarded to outside as +rel-rpl.
    """
    b = ctb(rules=stateful_rules())
    b.start()
    dgram = udp(CLIENT, SERVER, 5030, 33434, b"probe")
    syn = tcp(CLIENT, SERVER, 40050, 80, "S", 1000)
    b.phase([dgram, syn], out={"outside": [dgram, syn]})
    unreach = icmp_error(SERVER, CLIENT, dgram)
    expired = icmp_error(ROUTER, CLIENT, syn, icmp_type=11, code=0)
    unknown = icmp_error(SERVER, CLIENT, udp(CLIENT, SERVER, 5031, 33434, b"probe"))
    b.phase([unreach, expired, unknown], out={"inside": [unreach, expired]},
            drops={"rule_drop": 1})
    assert b.state(sport=5030) == "UDP_UNREPLIED"
    assert b.state(sport=40050) == "SYN_SENT"
    assert hit_packets(b)[R_REL_REPLY] == 2 and hit_packets(b)[R_INV] == 1
    reply = udp(SERVER, CLIENT, 33434, 5030, b"reply")
    b.phase([reply], out={"inside": [reply]})
    back = icmp_error(CLIENT, SERVER, reply)
    b.phase([back], out={"outside": [back]})
    assert hit_packets(b)[R_REL_ORIG] == 1
    assert b.state(sport=5030) == "UDP_REPLIED"
    assert len(b.conns()) == 2
    b.finish()
    b.check_outputs()


def test_ipv6_udp_icmpv6_through_firewall(ctb):
    """IPv6 through the same rules (the +new rule for 2001:db8:1::/48).
      1 lan: UDP CLIENT6:5040 -> SERVER6:53; ICMPv6 echo request id 7; UDP CLIENT6:5041 ->
             SERVER6:33434
      2 wan: the UDP reply; the echo reply; an ICMPv6 port unreachable quoting the 5041
             datagram; an unsolicited UDP SERVER6:53 -> CLIENT6:5042; an unsolicited TCP SYN
             SERVER6:40000 -> CLIENT6:22

    Expects the three requests on outside, the two replies and the error on inside, unchanged;
    the unsolicited datagram and SYN dropped (rule_drop 2); connections UDP_REPLIED,
    ICMP_REPLIED (proto icmpv6) and UDP_UNREPLIED, with IPv6 addresses in ct.list.
    """
    b = ctb(rules=stateful_rules())
    b.start()
    q = udp(CLIENT6, SERVER6, 5040, 53, b"q6")
    ping = echo(CLIENT6, SERVER6, 7)
    probe = udp(CLIENT6, SERVER6, 5041, 33434, b"p6")
    b.phase([q, ping, probe], out={"outside": [q, ping, probe]})
    r = udp(SERVER6, CLIENT6, 53, 5040, b"r6")
    pong = echo(SERVER6, CLIENT6, 7, reply=True)
    err = icmp_error(SERVER6, CLIENT6, probe)
    b.phase([r, pong, err, udp(SERVER6, CLIENT6, 53, 5042, b"x"),
             tcp(SERVER6, CLIENT6, 40000, 22, "S", 1)],
            out={"inside": [r, pong, err]}, drops={"rule_drop": 2})
    states = {(c["proto"], c["orig"]["sport"]): c["state"] for c in b.conns()}
    assert states == {("udp", 5040): "UDP_REPLIED", ("icmpv6", 7): "ICMP_REPLIED",
                      ("udp", 5041): "UDP_UNREPLIED"}
    assert b.conn(sport=5040)["orig"]["src"] == CLIENT6
    assert hit_packets(b) == {R_CT6: 8, R_NEW6: 3, R_EST_REPLY: 2, R_REL_REPLY: 1, R_DEFAULT: 2}
    b.finish()
    b.check_outputs()
