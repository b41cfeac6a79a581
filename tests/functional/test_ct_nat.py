"""Functional tests of NAT through ferryd: source NAT of an inside network to 192.0.2.1 (TCP, UDP,
ICMP echo, ICMP errors, IPv6), destination NAT of a virtual IP to a backend, and the allocation
of translated ports and addresses.

The rule set is the Open vSwitch pattern: table 0 sends IP to ct(zone=1,nat,table=1), whose plain
`nat` applies an existing connection's binding in both directions; in table 1 a new connection
from the inside (from INSIDE_MAC, as an in_port match would say) is committed with
nat(src=...) and sent out; +est/+rel packets, already translated, go out of `outside`
(original direction) or `inside` (replies); the rest is dropped.

Expected frames are the sent ones rebuilt by scapy with the translated fields and fresh
checksums, so the byte-exact comparison checks every checksum too; checksum_problems() checks
them again with an implementation of its own. The translated port is read from ct.list (its
choice is a hash) and checked to be in the configured range.
"""
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from pcap_util import rule

from ct_util import (BACKEND, CLIENT, CLIENT2, CLIENT6, NAT6, NAT_IP, R_DEFAULT, R_NEW4, R_NEW6,
                     R_REL_REPLY, ROUTER, SERVER, SERVER2, SERVER6, VIP, assert_checksums,
                     bridges, echo, hit_packets, icmp_error, stateful_rules, tcp, udp)


@pytest.fixture
def ctb():
    """CtBridge(**kw) maker; the bridges stop after the test (ct_util.bridges)."""
    yield from bridges()

PORTS = range(20000, 20011)


def snat_rules(spec4="192.0.2.1:20000-20010", spec6="[2001:db8:ffff::1]:20000-20010"):
    return stateful_rules(table0_ct="ct(zone=1,nat,table=1)", inside_by="mac",
                          new4=[f"ct(zone=1,commit,nat(src={spec4}))", "output:outside"],
                          new6=[f"ct(zone=1,commit,nat(src={spec6}))", "output:outside"])


def rewrite(frame, src=None, dst=None, sport=None, dport=None, ident=None):
    """frame with the given IP addresses, TCP/UDP ports or echo identifier replaced and every
    checksum computed again by scapy (a zero UDP checksum stays zero: no checksum)."""
    p = Ether(frame)
    ip = p[IP] if IP in p else p[IPv6]
    if src is not None:
        ip.src = src
    if dst is not None:
        ip.dst = dst
    if IP in p:
        del p[IP].chksum
    for cls in (TCP, UDP, ICMP, ICMPv6EchoRequest, ICMPv6EchoReply):
        if cls in p:
            l4 = p[cls]
            if sport is not None:
                l4.sport = sport
            if dport is not None:
                l4.dport = dport
            if ident is not None:
                l4.id = ident
            if cls is UDP:
                if l4.chksum != 0:
                    del l4.chksum
            elif cls in (TCP, UDP, ICMP):
                del l4.chksum
            else:
                del l4.cksum
    return bytes(p)


def binding(b, **orig):
    """The translated (address, port) of a SNAT connection: its reply tuple's destination."""
    c = b.conn(**orig)
    assert c["nat"] == "src", c
    return c["reply"]["dst"], c["reply"]["dport"]


def test_snat_tcp_udp_icmp(ctb):
    """SNAT to 192.0.2.1:20000-20010.
      1 lan: TCP SYN CLIENT:40000 -> SERVER:80; UDP CLIENT:5000 -> SERVER:53; UDP CLIENT:5001 ->
             SERVER:53 without checksum (0); echo request CLIENT -> SERVER id 0x1234
      2 wan: the SYN+ACK, both UDP replies and the echo reply, each to 192.0.2.1 and the
             translated port / identifier; a datagram to 192.0.2.1:20000-20010 port 19999
             (no binding)
      3 lan: the handshake's ACK and 10 bytes        4 wan: 20 bytes back

    Expects every outgoing frame with source 192.0.2.1 and a port (echo: identifier) in
    20000..20010, that of its connection in ct.list, all else unchanged and checksums valid
    (the zero UDP checksum still zero); the replies translated back to CLIENT and the original
    port / identifier with valid checksums; the stray datagram dropped (+new from outside);
    ct.list showing nat "src" on all four connections, found by address 192.0.2.1 as well as
    by CLIENT; states ESTABLISHED, UDP_REPLIED x2, ICMP_REPLIED.
    """
    b = ctb(rules=snat_rules())
    b.start()
    syn = tcp(CLIENT, SERVER, 40000, 80, "S", 1000)
    q = udp(CLIENT, SERVER, 5000, 53, b"query")
    q0 = udp(CLIENT, SERVER, 5001, 53, b"no checksum", chksum=0)
    ping = echo(CLIENT, SERVER, 0x1234)
    b.phase([syn, q, q0, ping], out={"outside": 4})
    bound = {(p, n): binding(b, proto=p, sport=n)
             for p, n in (("tcp", 40000), ("udp", 5000), ("udp", 5001), ("icmp", 0x1234))}
    assert all(addr == NAT_IP and port in PORTS for addr, port in bound.values()), bound
    t, u, u0, i = (bound[k][1] for k in (("tcp", 40000), ("udp", 5000), ("udp", 5001),
                                         ("icmp", 0x1234)))
    assert b.conn(proto="icmp")["reply"]["sport"] == i  # the identifier, both directions
    out = [rewrite(syn, src=NAT_IP, sport=t), rewrite(q, src=NAT_IP, sport=u),
           rewrite(q0, src=NAT_IP, sport=u0), rewrite(ping, src=NAT_IP, ident=i)]
    assert Ether(out[2])[UDP].chksum == 0

    synack = tcp(SERVER, NAT_IP, 80, t, "SA", 5000, 1001)
    r = udp(SERVER, NAT_IP, 53, u, b"answer")
    r0 = udp(SERVER, NAT_IP, 53, u0, b"answer 0", chksum=0)
    pong = echo(SERVER, NAT_IP, i, reply=True)
    stray = udp(SERVER, NAT_IP, 53, 19999, b"stray")
    back = [rewrite(synack, dst=CLIENT, dport=40000), rewrite(r, dst=CLIENT, dport=5000),
            rewrite(r0, dst=CLIENT, dport=5001), rewrite(pong, dst=CLIENT, ident=0x1234)]
    b.phase([synack, r, r0, pong, stray], out={"inside": back}, drops={"rule_drop": 1})

    ack = tcp(CLIENT, SERVER, 40000, 80, "A", 1001, 5001)
    data = tcp(CLIENT, SERVER, 40000, 80, "PA", 1001, 5001, b"0123456789")
    b.phase([ack, data], out={"outside": 2})
    out += [rewrite(ack, src=NAT_IP, sport=t), rewrite(data, src=NAT_IP, sport=t)]
    sdata = tcp(SERVER, NAT_IP, 80, t, "PA", 5001, 1011, b"abcdefghijklmnopqrst")
    back2 = rewrite(sdata, dst=CLIENT, dport=40000)
    b.phase([sdata], out={"inside": [back2]})

    states = {(c["proto"], c["orig"]["sport"]): c["state"] for c in b.conns()}
    assert states == {("tcp", 40000): "ESTABLISHED", ("udp", 5000): "UDP_REPLIED",
                      ("udp", 5001): "UDP_REPLIED", ("icmp", 0x1234): "ICMP_REPLIED"}
    assert len(b.conns(address=NAT_IP)) == 4 and len(b.conns(address=CLIENT)) == 4
    assert all(c["nat"] == "src" for c in b.conns())
    assert hit_packets(b)[R_NEW4] == 4 and hit_packets(b)[R_DEFAULT] == 1
    b.finish()
    b.check_outputs()
    assert b.outputs["outside"] == out
    for f in b.outputs["outside"] + b.outputs["inside"]:
        assert_checksums(f)


def test_snat_icmp_error_translated_back(ctb):
    """SNAT to 192.0.2.1:20000-20010.
      1 lan: UDP CLIENT:5050 -> SERVER:33434 and a TCP SYN CLIENT:40060 -> SERVER:80
      2 wan: time exceeded from ROUTER to 192.0.2.1 quoting the translated datagram as it went
             out; port unreachable from SERVER quoting the translated SYN

    Expects both errors forwarded to inside (+rel+rpl) with the outer destination CLIENT and
    the quote turned back into what CLIENT sent (source CLIENT and the original port), the
    outer IPv4, quoted IPv4, quoted TCP/UDP and ICMP checksums valid: byte for byte the errors
    Linux would deliver.
    """
    b = ctb(rules=snat_rules())
    b.start()
    dgram = udp(CLIENT, SERVER, 5050, 33434, b"probe")
    syn = tcp(CLIENT, SERVER, 40060, 80, "S", 1000)
    b.phase([dgram, syn], out={"outside": 2})
    _, pu = binding(b, sport=5050)
    _, pt = binding(b, sport=40060)
    expired = icmp_error(ROUTER, NAT_IP, rewrite(dgram, src=NAT_IP, sport=pu), icmp_type=11,
                         code=0)
    unreach = icmp_error(SERVER, NAT_IP, rewrite(syn, src=NAT_IP, sport=pt))
    want = [icmp_error(ROUTER, CLIENT, dgram, icmp_type=11, code=0),
            icmp_error(SERVER, CLIENT, syn)]
    b.phase([expired, unreach], out={"inside": 2})
    assert hit_packets(b)[R_REL_REPLY] == 2
    b.finish()
    b.check_outputs()
    got = b.outputs["inside"]
    for f in got:
        assert_checksums(f)
    assert got[0] == want[0], f"\n{got[0].hex()}\n{want[0].hex()}"
    assert got[1] == want[1], f"\n{got[1].hex()}\n{want[1].hex()}"


def test_snat_icmp_error_quoted_udp_checksum(ctb):
    """As test_snat_icmp_error_translated_back, for the datagram only: a time exceeded from
    ROUTER quoting UDP CLIENT:5051 -> SERVER:33434 as translated.

    Expects the error delivered to CLIENT exactly as CLIENT's datagram would have been quoted,
    including the quoted UDP checksum (which covers the pseudo-header and the ports the NAT
    changed back).
    """
    b = ctb(rules=snat_rules())
    b.start()
    dgram = udp(CLIENT, SERVER, 5051, 33434, b"probe")
    b.phase([dgram], out={"outside": 1})
    _, pu = binding(b, sport=5051)
    b.phase([icmp_error(ROUTER, NAT_IP, rewrite(dgram, src=NAT_IP, sport=pu), icmp_type=11,
                        code=0)], out={"inside": 1})
    b.finish()
    assert b.outputs["inside"] == [icmp_error(ROUTER, CLIENT, dgram, icmp_type=11, code=0)]


def test_snat_ipv6_tcp(ctb):
    """SNAT of IPv6 to [2001:db8:ffff::1]:20000-20010.
      1 lan: SYN CLIENT6:40070 -> SERVER6:80      2 wan: its SYN+ACK to the translated port
      3 lan: ACK and 10 bytes                      4 wan: 20 bytes back

    Expects outgoing segments from 2001:db8:ffff::1 and a port in 20000..20010 (the one in
    ct.list), replies translated back to CLIENT6:40070; TCP checksums (over the IPv6
    pseudo-header) valid both ways; the connection ESTABLISHED with nat "src".
    """
    b = ctb(rules=snat_rules())
    b.start()
    syn = tcp(CLIENT6, SERVER6, 40070, 80, "S", 1000)
    b.phase([syn], out={"outside": 1})
    addr, p = binding(b, sport=40070)
    assert addr == NAT6 and p in PORTS
    synack = tcp(SERVER6, NAT6, 80, p, "SA", 5000, 1001)
    b.phase([synack], out={"inside": [rewrite(synack, dst=CLIENT6, dport=40070)]})
    ack = tcp(CLIENT6, SERVER6, 40070, 80, "A", 1001, 5001)
    data = tcp(CLIENT6, SERVER6, 40070, 80, "PA", 1001, 5001, b"0123456789")
    b.phase([ack, data], out={"outside": 2})
    sdata = tcp(SERVER6, NAT6, 80, p, "PA", 5001, 1011, b"abcdefghijklmnopqrst")
    b.phase([sdata], out={"inside": [rewrite(sdata, dst=CLIENT6, dport=40070)]})
    c = b.conn(sport=40070)
    assert c["state"] == "ESTABLISHED" and c["nat"] == "src"
    assert c["reply"] == {"src": SERVER6, "dst": NAT6, "sport": 80, "dport": p}
    assert hit_packets(b)[R_NEW6] == 1
    b.finish()
    b.check_outputs()
    assert b.outputs["outside"] == [rewrite(f, src=NAT6, sport=p) for f in (syn, ack, data)]
    for f in b.outputs["outside"] + b.outputs["inside"]:
        assert_checksums(f)


def dnat_rules(spec="10.0.0.99:8080", match=None):
    """Clients outside reach VIP:80 (TCP), translated to spec; the original direction goes out
    of `inside` (to the backend), replies out of `outside`."""
    m = match or {"eth_type": "ipv4", "ip_dst": VIP, "ip_proto": "tcp", "l4_dst": 80}
    rules = stateful_rules(table0_ct="ct(zone=1,nat,table=1)", orig_out="inside",
                           reply_out="outside")
    rules = [r for r in rules if r["id"] not in (R_NEW4, R_NEW6)]
    rules.append(rule(40, [f"ct(zone=1,commit,nat(dst={spec}))", "output:inside"],
                      dict(m, ct_state="+trk+new"), priority=20, table=1))
    return rules


def test_dnat_virtual_ip(ctb):
    """DNAT of 203.0.113.10:80 (VIP, TCP) to 10.0.0.99:8080.
      1 wan: SYNs SERVER:41000 -> VIP:80 and SERVER2:41000 -> VIP:80; a SYN SERVER:41001 ->
             VIP:22 (no rule for it)
      2 lan: the backend's SYN+ACKs 10.0.0.99:8080 -> SERVER:41000 and -> SERVER2:41000
      3 wan: the first client's ACK and 10 bytes    4 lan: 20 bytes back

    Expects the SYNs to VIP:80 on inside with destination 10.0.0.99:8080, source unchanged,
    checksums valid; the SYN to port 22 dropped; the backend's segments on outside with source
    VIP:80; ct.list: two connections, nat "dst", reply tuples from 10.0.0.99:8080, the first
    ESTABLISHED, the second SYN_RECV.
    """
    b = ctb(rules=dnat_rules())
    b.start()
    syn1 = tcp(SERVER, VIP, 41000, 80, "S", 1000)
    syn2 = tcp(SERVER2, VIP, 41000, 80, "S", 3000)
    b.phase([syn1, syn2, tcp(SERVER, VIP, 41001, 22, "S", 1)],
            out={"inside": [rewrite(syn1, dst=BACKEND, dport=8080),
                            rewrite(syn2, dst=BACKEND, dport=8080)]},
            drops={"rule_drop": 1})
    c1 = b.conn(src=SERVER)
    assert c1["nat"] == "dst"
    assert c1["reply"] == {"src": BACKEND, "dst": SERVER, "sport": 8080, "dport": 41000}
    sa1 = tcp(BACKEND, SERVER, 8080, 41000, "SA", 5000, 1001, outbound=True)
    sa2 = tcp(BACKEND, SERVER2, 8080, 41000, "SA", 7000, 3001, outbound=True)
    b.phase([sa1, sa2], out={"outside": [rewrite(sa1, src=VIP, sport=80),
                                         rewrite(sa2, src=VIP, sport=80)]})
    ack = tcp(SERVER, VIP, 41000, 80, "A", 1001, 5001)
    data = tcp(SERVER, VIP, 41000, 80, "PA", 1001, 5001, b"0123456789")
    b.phase([ack, data], out={"inside": [rewrite(ack, dst=BACKEND, dport=8080),
                                         rewrite(data, dst=BACKEND, dport=8080)]})
    sdata = tcp(BACKEND, SERVER, 8080, 41000, "PA", 5001, 1011, b"abcdefghijklmnopqrst",
                outbound=True)
    b.phase([sdata], out={"outside": [rewrite(sdata, src=VIP, sport=80)]})
    assert b.state(src=SERVER) == "ESTABLISHED" and b.state(src=SERVER2) == "SYN_RECV"
    assert [c["nat"] for c in b.conns()] == ["dst", "dst"]
    assert len(b.conns(address=BACKEND)) == 2 and len(b.conns(address=VIP)) == 2
    b.finish()
    b.check_outputs()
    for f in b.outputs["outside"] + b.outputs["inside"]:
        assert_checksums(f)


def test_dnat_with_port_translates_echo_address(ctb):
    """DNAT of everything to VIP (TCP, UDP, ICMP) with nat(dst=10.0.0.99:8080). One echo
    request SERVER -> VIP id 0x77.

    Expects it forwarded to inside with destination 10.0.0.99 and the identifier unchanged
    (a port means nothing to an echo; choose_nat's own comment: "DNAT keeps the echo
    identifier"), and the connection listed with nat "dst".
    """
    b = ctb(rules=dnat_rules(match={"eth_type": "ipv4", "ip_dst": VIP}))
    b.start()
    ping = echo(SERVER, VIP, 0x77)
    b.add_port("wan1", [ping])
    b.wait_counts(rx={"wan1": 1})
    conns = b.conns()
    b.finish()  # once the counters settled
    assert [c["nat"] for c in conns] == ["dst"]
    assert b.outputs["inside"] == [rewrite(ping, dst=BACKEND)]


def test_snat_port_allocation_and_exhaustion(ctb):
    """SNAT to 192.0.2.1:20000-20002 (three ports).
      1 lan: SYNs CLIENT:41001..41004 -> SERVER:80
      2 wan: SYN+ACKs from SERVER:80 to each of the three bound ports
      3 lan: a SYN CLIENT:41004 -> SERVER2:80 (another server)

    Expects three SYNs out with distinct source ports 20000..20002, each the one ct.list binds
    to its client port; the fourth dropped (drops.ct_full 1 on lan1; ct.stats nat_exhausted
    1, no connection for it); each SYN+ACK delivered to its own client port; the SYN to
    SERVER2 bound and forwarded, since a port only has to be unique per server address and
    port (the reply tuple).
    """
    b = ctb(rules=snat_rules(spec4="192.0.2.1:20000-20002"))
    b.start()
    syns = [tcp(CLIENT, SERVER, p, 80, "S", 1000 + p) for p in range(41001, 41005)]
    b.phase(syns, out={"outside": 3}, drops={"ct_full": 1})
    assert b.worker_stat("nat_exhausted") == 1
    bound = {c["orig"]["sport"]: c["reply"]["dport"] for c in b.conns()}
    assert sorted(bound) == [41001, 41002, 41003]
    assert sorted(bound.values()) == [20000, 20001, 20002]
    synacks = [tcp(SERVER, NAT_IP, 80, bound[p], "SA", 9000 + p, 1001 + p)
               for p in (41001, 41002, 41003)]
    b.phase(synacks, out={"inside": [rewrite(f, dst=CLIENT, dport=p)
                                     for f, p in zip(synacks, (41001, 41002, 41003))]})
    other = tcp(CLIENT, SERVER2, 41004, 80, "S", 1)
    b.phase([other], out={"outside": 1})
    addr, p4 = binding(b, sport=41004)
    assert addr == NAT_IP and p4 in (20000, 20001, 20002)
    assert b.worker_stat("nat_exhausted") == 1
    assert all(c["state"] == "SYN_RECV" for c in b.conns(address=SERVER))
    b.finish()
    b.check_outputs()
    assert b.outputs["outside"] == [rewrite(syns[i], src=NAT_IP, sport=bound[41001 + i])
                                    for i in range(3)] + [rewrite(other, src=NAT_IP, sport=p4)]


def test_snat_address_range(ctb):
    """SNAT to the addresses 192.0.2.1-192.0.2.2, port 20000 only. One phase: UDP
    CLIENT:5060, CLIENT:5061 and CLIENT2:5060 -> SERVER:53.

    Expects two datagrams out, one from 192.0.2.1:20000 and one from 192.0.2.2:20000 (the two
    candidates), the third dropped as ct_full with ct.stats nat_exhausted 1.
    """
    b = ctb(rules=snat_rules(spec4="192.0.2.1-192.0.2.2:20000"))
    b.start()
    qs = [udp(CLIENT, SERVER, 5060, 53), udp(CLIENT, SERVER, 5061, 53),
          udp(CLIENT2, SERVER, 5060, 53)]
    b.phase(qs, out={"outside": 2}, drops={"ct_full": 1})
    assert sorted((c["reply"]["dst"], c["reply"]["dport"]) for c in b.conns()) == \
        [("192.0.2.1", 20000), ("192.0.2.2", 20000)]
    assert b.worker_stat("nat_exhausted") == 1
    b.finish()
    b.check_outputs()
    got = [(Ether(f)[IP].src, Ether(f)[UDP].sport) for f in b.outputs["outside"]]
    assert sorted(got) == [("192.0.2.1", 20000), ("192.0.2.2", 20000)]
    for f in b.outputs["outside"]:
        assert_checksums(f)


def test_snat_retransmitted_syn_keeps_binding(ctb):
    """SNAT to 192.0.2.1:20000-20010; the rules say "from the inside" by source MAC, which NAT
    does not change (as an in_port match would).
      1 lan: SYN CLIENT:40080 -> SERVER:80      2 lan: the same SYN again (retransmitted)

    Expects both SYNs out with the same translated source port and one connection in ct.list.
    """
    b = ctb(rules=snat_rules())
    b.start()
    syn = tcp(CLIENT, SERVER, 40080, 80, "S", 1000)
    b.phase([syn], out={"outside": 1})
    b.phase([syn], out={"outside": 1})
    conns = b.conns()
    b.finish()
    first, second = (Ether(f)[TCP].sport for f in b.outputs["outside"])
    assert (first, len(conns)) == (second, 1), conns
