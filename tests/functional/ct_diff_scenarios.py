"""Scenarios of the conntrack differential test (test_ct_differential.py), as data.

A scenario is a name, a list of steps (side, IP packet bytes; side "in" sends from the inside
host, "out" from the outside) and the steps where ferry is known to differ from Linux, each
with the key of the reason (DIFFERENCES, which docs/conntrack.md explains). Every scenario has
connections of its own (its own ports or echo identifier), so scenarios do not disturb each
other in either firewall. The random mode mutates base conversations with a seeded generator.
"""
import random

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_LSRR, IPOption_SSRR, fragment
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest,
                                ICMPv6PacketTooBig, IPv6, IPv6ExtHdrFragment)

from ct_diff_worlds import (CLIENT4, CLIENT4B, CLIENT6, HOP4, HOP6, SERVER4, SERVER6)

# Why ferry differs from Linux where it does (docs/conntrack.md, "Agreement with Linux").
DIFFERENCES = {
    "halfopen": "while a connection waits for its SYN-ACK, Linux lets reply segments through "
                "untracked (as ferry does) but then judges that tuple's RSTs and data "
                "differently in some sequences, for reasons not pinned down yet",
    "overshoot": "after a segment that started more than a window past the right edge passed "
                 "(netfilter's 'bytes more than expected'), Linux judges some later segments "
                 "differently, for reasons not pinned down yet",
    "resync": "Linux re-syncs a connection when the server answers an ignored SYN with a "
              "SYN-ACK (both ends restarted); ferry lets the SYN and SYN-ACK through but keeps "
              "the old sequence space, so the new connection's segments are +inv",
}


class Scenario:
    def __init__(self, name, steps, differs=None, notes=None):
        self.name = name
        self.steps = steps
        self.differs = dict(differs or {})  # step index -> key of DIFFERENCES
        self.notes = notes or [{} for _ in steps]  # random mode: each step's mutation

    def __repr__(self):
        return f"Scenario({self.name}, {len(self.steps)} steps)"


def _corrupt(data, what):
    """data with a wrong checksum: what is "ip" (the IPv4 header's) or "l4" (TCP, UDP, ICMP,
    ICMPv6). XOR with 0x0101 never turns a checksum into an equivalent one."""
    b = bytearray(data)
    if b[0] >> 4 == 4:
        ihl = (b[0] & 15) * 4
        proto, l4 = b[9], ihl
        if what == "ip":
            b[10] ^= 1
            b[11] ^= 1
            return bytes(b)
    else:
        proto, l4 = b[6], 40
    off = {6: 16, 17: 6, 1: 2, 58: 2}[proto]
    b[l4 + off] ^= 1
    b[l4 + off + 1] ^= 1
    return bytes(b)


class Tcp:
    """One TCP connection between an inside client and an outside server that keeps each side's
    next sequence number, so steps read like a trace: c("S"), s("SA"), c("A"), c("PA", 100)."""

    def __init__(self, sport, v6=False, dport=80, cisn=1000, sisn=700000):
        self.v6 = v6
        self.client = CLIENT6 if v6 else CLIENT4
        self.server = SERVER6 if v6 else SERVER4
        self.sport, self.dport = sport, dport
        self.isn = {"in": cisn, "out": sisn}
        self.nxt = dict(self.isn)

    def ip(self, side):
        src, dst = (self.client, self.server) if side == "in" else (self.server, self.client)
        return IPv6(src=src, dst=dst) if self.v6 else IP(src=src, dst=dst)

    def seg(self, side, flags, data=0, seq=None, ack=None, dseq=0, dack=0, window=65535,
            options=(), advance=True, bad=None):
        """A segment from side; data: payload length; seq/ack default to the side's next and
        the peer's next; advance=False leaves the trace where it was (a segment the endpoint
        would not have sent in sequence)."""
        other = "out" if side == "in" else "in"
        s = (self.nxt[side] if seq is None else seq) + dseq
        a = (self.nxt[other] if ack is None else ack) + dack
        if "A" not in flags and ack is None and not dack:
            a = 0
        sp, dp = (self.sport, self.dport) if side == "in" else (self.dport, self.sport)
        pkt = self.ip(side) / TCP(sport=sp, dport=dp, flags=flags, seq=s & 0xFFFFFFFF,
                                  ack=a & 0xFFFFFFFF, window=window, options=list(options))
        if data:
            pkt = pkt / (b"d" * data)
        if advance:
            self.nxt[side] = s + data + ("S" in flags) + ("F" in flags)
        raw = bytes(pkt)
        return side, (_corrupt(raw, bad) if bad else raw)

    def c(self, flags, data=0, **kw):
        return self.seg("in", flags, data, **kw)

    def s(self, flags, data=0, **kw):
        return self.seg("out", flags, data, **kw)

    def handshake(self, **kw):
        return [self.c("S", **kw), self.s("SA", **kw), self.c("A")]

    def quoted(self, side, flags="A", data=0):
        """The header of a segment side sent (for an ICMP error to quote), without advancing."""
        other = "out" if side == "in" else "in"
        sp, dp = (self.sport, self.dport) if side == "in" else (self.dport, self.sport)
        return self.ip(side) / TCP(sport=sp, dport=dp, flags=flags, seq=self.nxt[side],
                                   ack=self.nxt[other]) / (b"d" * data)


def udp(sport, side="in", v6=False, dport=53, data=8, length=None, chksum=None, bad=None,
        client=None, server=None):
    client = client or (CLIENT6 if v6 else CLIENT4)
    server = server or (SERVER6 if v6 else SERVER4)
    src, dst = (client, server) if side == "in" else (server, client)
    sp, dp = (sport, dport) if side == "in" else (dport, sport)
    ip = IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)
    u = UDP(sport=sp, dport=dp)
    if length is not None:
        u.len = length
    if chksum is not None:
        u.chksum = chksum
    raw = bytes(ip / u / (b"u" * data))
    return side, (_corrupt(raw, bad) if bad else raw)


def echo(ident, side="in", reply=False, v6=False, seq=1, bad=None):
    client, server = (CLIENT6, SERVER6) if v6 else (CLIENT4, SERVER4)
    src, dst = (client, server) if side == "in" else (server, client)
    if v6:
        msg = (ICMPv6EchoReply if reply else ICMPv6EchoRequest)(id=ident, seq=seq, data=b"ping")
        raw = bytes(IPv6(src=src, dst=dst) / msg)
    else:
        raw = bytes(IP(src=src, dst=dst) / ICMP(type=0 if reply else 8, id=ident, seq=seq) /
                    b"ping")
    return side, (_corrupt(raw, bad) if bad else raw)


def icmp_error(quoted, side="out", src=None, dst=None, v6=False, kind="unreach", bad=None):
    """An ICMP(v6) error from src (a hop on the path, default) to dst (default: the quoted
    packet's source) quoting the packet `quoted` (a scapy packet)."""
    if v6:
        src = src or HOP6
        dst = dst or quoted[IPv6].src
        msg = ICMPv6PacketTooBig(mtu=1280) if kind == "ptb" else ICMPv6DestUnreach(code=1)
        raw = bytes(IPv6(src=src, dst=dst) / msg / bytes(quoted))
    else:
        src = src or HOP4
        dst = dst or quoted[IP].src
        t, c = (11, 0) if kind == "ttl" else (3, 1)
        raw = bytes(IP(src=src, dst=dst) / ICMP(type=t, code=c) / bytes(quoted)[:28])
    return side, (_corrupt(raw, bad) if bad else raw)


def udp_fragments(sport, side="in", v6=False, size=40):
    """A UDP datagram in fragments: IPv4 pieces of 24 bytes of the UDP message (two for the
    default size, three for 60), IPv6 two (the first 24 bytes, then the rest)."""
    client, server = (CLIENT6, SERVER6) if v6 else (CLIENT4, SERVER4)
    src, dst = (client, server) if side == "in" else (server, client)
    sp, dp = (sport, 53) if side == "in" else (53, sport)
    if v6:
        whole = IPv6(src=src, dst=dst) / UDP(sport=sp, dport=dp) / (b"f" * size)
        udp_bytes = bytes(whole[UDP])
        first = IPv6(src=src, dst=dst, nh=44) / IPv6ExtHdrFragment(nh=17, offset=0, m=1,
                                                                    id=0x1234 + sport)
        second = IPv6(src=src, dst=dst, nh=44) / IPv6ExtHdrFragment(nh=17, offset=3, m=0,
                                                                     id=0x1234 + sport)
        return [(side, bytes(first / udp_bytes[:24])), (side, bytes(second / udp_bytes[24:]))]
    whole = IP(src=src, dst=dst, id=0x4000 + sport) / UDP(sport=sp, dport=dp) / (b"f" * size)
    return [(side, bytes(f)) for f in fragment(whole, fragsize=24)]


def scenarios(base_port=31000):
    """The fixed scenarios; each gets ports (or an echo identifier) of its own from base_port."""
    out = []
    port = iter(range(base_port, base_port + 1000))

    def add(name, steps, differs=None):
        out.append(Scenario(name, steps, differs))

    # --- TCP: opening and closing
    t = Tcp(next(port))
    add("tcp handshake, data both ways, FIN close by the client",
        t.handshake() + [t.c("PA", 100), t.s("A"), t.s("PA", 200), t.c("A"), t.c("FA"),
                         t.s("FA"), t.c("A")])
    t = Tcp(next(port))
    add("tcp close by the server first",
        t.handshake() + [t.s("PA", 50), t.c("A"), t.s("FA"), t.c("A"), t.c("FA"), t.s("A")])
    t = Tcp(next(port))
    steps = t.handshake()
    c_fin = t.c("FA", advance=False)
    s_fin = t.s("FA", advance=False)
    t.nxt["in"] += 1
    t.nxt["out"] += 1
    add("tcp simultaneous close", steps + [c_fin, s_fin, t.c("A"), t.s("A")])
    t = Tcp(next(port))
    add("tcp data after both FINs (TIME_WAIT)",
        t.handshake() + [t.c("FA"), t.s("FA"), t.c("A"), t.s("PA", 10, advance=False)])
    t = Tcp(next(port))
    steps = t.handshake() + [t.c("FA"), t.s("FA"), t.c("A")]
    t2 = Tcp(t.sport, cisn=90000000, sisn=123456)
    add("tcp new SYN on a TIME_WAIT tuple reopens", steps + t2.handshake() + [t2.c("PA", 10)])
    t = Tcp(next(port))
    add("tcp simultaneous open (SYN from both sides)",
        [t.c("S"), t.s("S"), t.c("SA", seq=t.isn["in"], advance=False),
         t.s("SA", seq=t.isn["out"], advance=False), t.c("A")])
    t = Tcp(next(port))
    add("tcp ACK before the SYN-ACK", [t.c("S"), t.c("A", ack=5555), t.s("SA"), t.c("A")])
    t = Tcp(next(port))
    add("tcp SYN retransmitted, then handshake",
        [t.c("S", advance=False), t.c("S")] + [t.s("SA"), t.c("A")])

    # --- TCP: RST
    t = Tcp(next(port))
    add("tcp exact RST from the server, then late data",
        t.handshake() + [t.c("PA", 10), t.s("A"), t.s("RA"), t.c("PA", 10)])
    t = Tcp(next(port))
    add("tcp exact RST from the client", t.handshake() + [t.c("R"), t.s("PA", 10)])
    t = Tcp(next(port))
    add("tcp RST in window but inexact keeps the connection",
        t.handshake() + [t.s("PA", 100), t.c("A"), t.s("R", dseq=1000, advance=False),
                         t.c("A"), t.s("PA", 10), t.c("A")])
    t = Tcp(next(port))
    add("tcp old RST below the highest ACK is invalid",
        t.handshake() + [t.s("PA", 100), t.c("A"), t.s("R", dseq=-50, advance=False),
                         t.s("PA", 10), t.c("A")])
    t = Tcp(next(port))
    add("tcp RST far out of window",
        t.handshake() + [t.s("R", dseq=200000, advance=False), t.c("PA", 10), t.s("A")])
    t = Tcp(next(port))
    add("tcp RST ending the sender's data train",
        t.handshake() + [t.s("PA", 100), t.s("RA"), t.c("PA", 10, advance=False)])
    t = Tcp(next(port))
    add("tcp RST+ACK answering a SYN", [t.c("S"), t.s("RA", seq=0, advance=False),
                                        t.c("S", advance=False)])
    t = Tcp(next(port))
    add("tcp RST with a wrong checksum does not close",
        t.handshake() + [t.s("R", advance=False, bad="l4"), t.c("PA", 10), t.s("A")])

    # --- TCP: checksums and flags
    t = Tcp(next(port))
    add("tcp SYN with a wrong checksum opens nothing",
        [t.c("S", bad="l4"), t.s("SA"), t.c("A")])
    t = Tcp(next(port))
    add("tcp data with a wrong IPv4 header checksum",
        t.handshake() + [t.c("PA", 10, advance=False, bad="ip"), t.c("PA", 10)])
    t = Tcp(next(port))
    add("tcp FIN without ACK", t.handshake() + [t.c("F", advance=False), t.c("PA", 5)])
    t = Tcp(next(port))
    add("tcp FIN+PSH+URG without ACK", t.handshake() + [t.c("FPU", advance=False), t.c("A")])
    t = Tcp(next(port))
    add("tcp null and all-flags segments",
        t.handshake() + [t.c("", advance=False), t.c("FSRPAU", advance=False), t.c("A")])
    t = Tcp(next(port))
    add("tcp SYN+FIN", [t.c("SF", advance=False), t.c("S"), t.s("SA"), t.c("A")])
    t = Tcp(next(port))
    add("tcp FIN+ACK+URG and ACK+URG are valid",
        t.handshake() + [t.c("AU", 10), t.s("A"), t.c("FAU"), t.s("FA"), t.c("A")])

    # --- TCP: windows and sequence numbers
    t = Tcp(next(port))
    add("tcp empty ACK far ahead of the window",
        t.handshake() + [t.c("A", dseq=10000000, advance=False), t.c("PA", 10)])
    t = Tcp(next(port))
    steps = [t.c("S"), t.s("SA", window=1000), t.c("A")]
    add("tcp segment straddling the right window edge",
        steps + [t.c("PA", 1000, dseq=500, advance=False), t.c("PA", 100, dseq=1500,
                                                                 advance=False)])
    t = Tcp(next(port))
    add("tcp data far behind the window",
        t.handshake() + [t.c("PA", 10, dseq=-300000, advance=False), t.c("PA", 10)])
    t = Tcp(next(port))
    add("tcp retransmitted data",
        t.handshake() + [t.c("PA", 100, advance=False), t.c("PA", 100), t.s("A")])
    t = Tcp(next(port))
    add("tcp ACK for data never sent",
        t.handshake() + [t.c("A", dack=200000, advance=False), t.c("A", dack=10,
                                                                      advance=False)])
    t = Tcp(next(port))
    sackok = [("SAckOK", b"")]
    steps = [t.c("S", options=sackok), t.s("SA", options=sackok), t.c("A"), t.s("PA", 100)]
    base = t.nxt["out"]
    add("tcp SACK block for data never sent",
        steps + [t.c("A", options=[("SAck", (base + 5000, base + 6000))], advance=False),
                 t.c("A", options=[("SAck", (base - 50, base))], advance=False)])
    t = Tcp(next(port))
    ws = [("WScale", 7)]
    steps = [t.c("S", options=ws), t.s("SA", options=ws, window=1000), t.c("A", window=1000)]
    add("tcp window scaling: data past the unscaled window",
        steps + [t.c("PA", 100, dseq=60000, advance=False),
                 t.c("PA", 100, dseq=200000, advance=False)])

    # --- TCP: SYN and SYN-ACK on a connection
    t = Tcp(next(port))
    steps = t.handshake() + [t.c("PA", 10), t.s("A")]
    restart = Tcp(t.sport, cisn=5000000)
    steps += [restart.c("S", advance=False), t.s("A")]
    challenge_ack = t.nxt["in"]
    steps += [t.c("R", seq=challenge_ack, advance=False)]
    add("tcp SYN on an ESTABLISHED tuple, challenge ACK, RST, new SYN",
        steps + [restart.c("S"), restart.s("SA"), restart.c("A")])
    t = Tcp(next(port))
    steps = t.handshake() + [t.c("PA", 10), t.s("A")]
    restart = Tcp(t.sport, cisn=9000000, sisn=3000000)
    add("tcp SYN on an ESTABLISHED tuple answered by a SYN-ACK (both ends restarted)",
        steps + [restart.c("S"), restart.s("SA"), restart.c("A"), restart.c("PA", 10),
                 restart.s("A")],
        differs={7: "resync", 8: "resync", 9: "resync"})
    t = Tcp(next(port))
    add("tcp SYN-ACK retransmitted after the handshake and after a FIN",
        t.handshake() + [t.s("SA", seq=t.isn["out"], ack=t.isn["in"] + 1, advance=False),
                         t.c("FA"), t.s("SA", seq=t.isn["out"], ack=t.isn["in"] + 1,
                                        advance=False), t.s("FA"), t.c("A")])
    t = Tcp(next(port))
    add("tcp reply ACK before the SYN-ACK (half-open connection)",
        [t.c("S"), t.s("A", seq=t.isn["out"] + 1, advance=False), t.s("SA"), t.c("A")])
    t = Tcp(next(port))
    stale = Tcp(t.sport, cisn=4000000)
    add("tcp half-open: stale SYN, the server's data ignored, the client's RST answering it",
        [stale.c("S"), t.s("PA", 20, seq=t.isn["out"] + 1, ack=t.isn["in"] + 1),
         t.c("R", seq=t.isn["in"] + 1, ack=t.nxt["out"]), stale.c("S", seq=stale.isn["in"] + 7,
                                                                     advance=False)])
    t = Tcp(next(port))
    steps = t.handshake() + [t.c("PA", 10), t.s("A")]
    restart = Tcp(t.sport, cisn=7000000)
    add("tcp SYN on an ESTABLISHED tuple answered by the server's RST",
        steps + [restart.c("S"), t.s("RA", ack=restart.nxt["in"]), restart.c("S", advance=False)])
    t = Tcp(next(port))
    add("tcp overly delayed ACK more than a window behind",
        t.handshake() + [t.s("PA", 1000), t.c("A"), t.c("A", dack=-200000, advance=False),
                         t.c("PA", 10)])
    t = Tcp(next(port))
    add("tcp SYN-ACK acknowledging the wrong number",
        [t.c("S"), t.s("SA", dack=5, advance=False), t.s("SA", dack=-1000, advance=False),
         t.s("SA"), t.c("A")])
    t = Tcp(next(port))
    add("tcp unsolicited from outside: SYN, ACK, SYN-ACK, RST",
        [t.s("S", advance=False), t.s("A", advance=False), t.s("SA", advance=False),
         t.s("R", advance=False)])
    t = Tcp(next(port))
    add("tcp from inside without a SYN", [t.c("A"), t.c("PA", 10), t.c("SA")])

    # --- UDP
    p = next(port)
    add("udp request and response", [udp(p), udp(p, "out"), udp(p), udp(p, "out")])
    p = next(port)
    add("udp unsolicited from outside", [udp(p, "out"), udp(p, "out", dport=123)])
    p = next(port)
    add("udp length larger than the datagram", [udp(p, length=100), udp(p), udp(p, "out",
                                                                               length=9)])
    p = next(port)
    add("udp length below the header", [udp(p, length=4), udp(p)])
    p = next(port)
    add("udp wrong checksums", [udp(p, bad="l4"), udp(p), udp(p, "out", bad="l4"),
                                udp(p, "out")])
    p = next(port)
    add("udp without checksum (IPv4)", [udp(p, chksum=0), udp(p, "out", chksum=0)])

    # --- ICMP
    i = next(port)
    add("icmp echo request and reply", [echo(i), echo(i, "out", reply=True), echo(i, seq=2),
                                        echo(i, "out", reply=True, seq=2)])
    i = next(port)
    add("icmp unsolicited echo reply and request from outside",
        [echo(i, "out", reply=True), echo(i, "out")])
    i = next(port)
    add("icmp echo with a wrong checksum", [echo(i, bad="l4"), echo(i, "out", reply=True)])
    i = next(port)
    add("icmp echo request in the reply direction of a ping going out",
        [echo(i), echo(i, "out"), echo(i, "out", reply=True)])
    t = Tcp(next(port))
    add("icmp error quoting a tracked TCP connection",
        t.handshake() + [icmp_error(t.quoted("in", "PA", 10)),
                         icmp_error(t.quoted("in"), kind="ttl")])
    t = Tcp(next(port))
    add("icmp error sent to another host than the quoted source",
        t.handshake() + [icmp_error(t.quoted("in"), dst=CLIENT4B)])
    t = Tcp(next(port))
    add("icmp error quoting no connection", [icmp_error(t.quoted("in", "S"))])
    p = next(port)
    _, req = udp(p)
    add("icmp port unreachable for a UDP request",
        [("in", req), icmp_error(IP(req), src=SERVER4)])
    t = Tcp(next(port))
    add("icmp error with a wrong checksum",
        t.handshake() + [icmp_error(t.quoted("in"), bad="l4")])
    t = Tcp(next(port))
    add("icmp error from inside about an inside-opened connection",
        t.handshake() + [icmp_error(t.quoted("out"), side="in", src=CLIENT4)])

    # --- IPv4 options
    p = next(port)
    _, plain = udp(p)
    lsrr = IP(src=CLIENT4, dst=SERVER4, options=[IPOption_LSRR(routers=["198.51.100.9"])])
    ssrr = IP(src=CLIENT4, dst=SERVER4, options=[IPOption_SSRR(routers=["198.51.100.9"])])
    add("ipv4 source routes (LSRR, SSRR)",
        [("in", bytes(lsrr / UDP(sport=p, dport=53) / b"x")),
         ("in", bytes(ssrr / UDP(sport=p, dport=53) / b"x")), ("in", plain)])

    # --- IPv6
    t = Tcp(next(port), v6=True)
    add("ipv6 tcp handshake, data, close",
        t.handshake() + [t.c("PA", 100), t.s("A"), t.c("FA"), t.s("FA"), t.c("A")])
    t = Tcp(next(port), v6=True)
    add("ipv6 tcp exact and old RST",
        t.handshake() + [t.s("PA", 100), t.c("A"), t.s("R", dseq=-50, advance=False),
                         t.s("R")])
    p = next(port)
    add("ipv6 udp request and response",
        [udp(p, v6=True), udp(p, "out", v6=True), udp(p, "out", v6=True, bad="l4")])
    p = next(port)
    add("ipv6 udp without checksum", [udp(p, v6=True, chksum=0), udp(p, v6=True)])
    i = next(port)
    add("ipv6 icmpv6 echo", [echo(i, v6=True), echo(i, "out", v6=True, reply=True),
                             echo(i, "out", v6=True)])
    t = Tcp(next(port), v6=True)
    add("ipv6 packet too big quoting a tracked connection",
        t.handshake() + [icmp_error(t.quoted("in", "PA", 1300), v6=True, kind="ptb"),
                         icmp_error(t.quoted("in"), v6=True, dst="2001:db8:1::2")])
    t = Tcp(next(port), v6=True)
    p = next(port)
    i = next(port)
    add("ipv6 unsolicited from outside (TCP, UDP, ICMPv6 echo)",
        [t.s("S", advance=False), udp(p, "out", v6=True), echo(i, "out", v6=True)])
    t = Tcp(next(port), v6=True)
    add("ipv6 tcp SYN with a wrong checksum", [t.c("S", bad="l4"), t.c("S"), t.s("SA")])

    # --- fragments: reassembled for tracking, the fragments forwarded as they came
    p = next(port)
    add("ipv4 udp fragmented from inside", udp_fragments(p) + [udp(p, "out")])
    p = next(port)
    add("ipv6 udp fragmented from inside", udp_fragments(p, v6=True) + [udp(p, "out", v6=True)])
    p = next(port)
    add("ipv4 udp fragments unsolicited from outside", udp_fragments(p, side="out"))
    p = next(port)
    add("ipv6 udp fragments unsolicited from outside", udp_fragments(p, side="out", v6=True))
    p = next(port)
    add("ipv4 udp fragmented from inside, the reply fragmented from outside",
        udp_fragments(p) + udp_fragments(p, side="out", size=60))
    p = next(port)
    add("ipv6 udp fragmented from inside, the reply fragmented from outside",
        udp_fragments(p, v6=True) + udp_fragments(p, side="out", v6=True, size=60))
    p = next(port)
    f = udp_fragments(p, size=60)  # three fragments
    add("ipv4 udp fragments out of order", [f[2], f[0], f[1], udp(p, "out")])
    p = next(port)
    f = udp_fragments(p, v6=True)
    add("ipv6 udp fragments out of order", [f[1], f[0], udp(p, "out", v6=True)])
    p = next(port)
    f = udp_fragments(p)
    add("ipv4 udp fragments with a wrong checksum over the datagram",
        [f[0], (f[1][0], f[1][1][:-1] + bytes([f[1][1][-1] ^ 0x40]))])
    t = Tcp(next(port))
    side, raw = t.c("PA", 200)
    pieces = [(side, bytes(f)) for f in fragment(IP(raw), fragsize=96)]
    add("tcp data segment fragmented, acknowledged whole",
        t.handshake() + pieces + [t.s("A"), t.s("PA", 20), t.c("A")])
    p = next(port)
    f = udp_fragments(p, v6=True)
    add("icmpv6 packet too big quoting a first fragment",
        f + [icmp_error(IPv6(f[0][1]), v6=True, kind="ptb")])
    return out


# ------------------------------------------------------------------------------------------
# Random mode

SEQ_OFFSETS = (-300000, -70000, -66000, -1000, -100, -1, 1, 100, 1000, 65535, 66000, 70000,
               1 << 31)
FLAGS = ("S", "SA", "A", "PA", "FA", "R", "RA", "F", "FPU", "", "SF", "SR", "AU", "FAU", "SAR")


def _random_tcp(rng, port, v6):
    """A TCP conversation, its specs mutated: returns the steps."""
    opts = [("WScale", rng.choice((0, 2, 7)))] if rng.random() < 0.3 else []
    if rng.random() < 0.3:
        opts.append(("SAckOK", b""))
    specs = [("in", "S", 0, {"options": opts}), ("out", "SA", 0, {"options": opts}),
             ("in", "A", 0, {}), ("in", "PA", rng.randint(1, 300), {}), ("out", "A", 0, {}),
             ("out", "PA", rng.randint(1, 300), {}), ("in", "A", 0, {})]
    if rng.random() < 0.5:
        specs += [("in", "FA", 0, {}), ("out", "FA", 0, {}), ("in", "A", 0, {})]
    else:
        specs += [(rng.choice(("in", "out")), "RA", 0, {}), ("in", "PA", 10, {})]
    specs = [list(s) for s in specs]
    for _ in range(rng.randint(1, 3)):
        k = rng.randrange(len(specs))
        what = rng.choice(("flags", "seq", "ack", "len", "csum", "drop", "dup", "window"))
        s = specs[k]
        if what == "flags":
            s[1] = rng.choice(FLAGS)
        elif what == "seq":
            s[3] = dict(s[3], dseq=rng.choice(SEQ_OFFSETS), advance=False)
        elif what == "ack":
            s[3] = dict(s[3], dack=rng.choice(SEQ_OFFSETS), advance=False)
        elif what == "len":
            s[2] = rng.choice((0, 1, 500, 1400))
        elif what == "csum":
            s[3] = dict(s[3], bad="l4", advance=False)
        elif what == "window":
            s[3] = dict(s[3], window=rng.choice((0, 1, 512, 65535)))
        elif what == "drop" and len(specs) > 2:
            del specs[k]
        elif what == "dup":
            specs.insert(k, list(s[:3]) + [dict(s[3], advance=False)])
    t = Tcp(port, v6=v6, cisn=rng.randrange(1 << 32), sisn=rng.randrange(1 << 32))
    return [t.seg(side, flags, data, **kw) for side, flags, data, kw in specs], [
        kw for _, _, _, kw in specs]


def _random_udp(rng, port, v6):
    steps = []
    for _ in range(rng.randint(2, 6)):
        side = rng.choice(("in", "in", "out"))
        kw = {}
        r = rng.random()
        if r < 0.15:
            kw["bad"] = "l4"
        elif r < 0.25:
            kw["length"] = rng.choice((4, 7, 200))
        steps.append(udp(port, side, v6=v6, data=rng.randint(0, 64), **kw))
    return steps, [{} for _ in steps]


def _random_icmp(rng, ident, v6):
    steps = []
    for n in range(rng.randint(2, 5)):
        side = rng.choice(("in", "out"))
        reply = rng.random() < 0.5
        steps.append(echo(ident, side, reply=reply, v6=v6, seq=n,
                          bad="l4" if rng.random() < 0.1 else None))
    return steps, [{} for _ in steps]


def random_scenarios(seed, count, base_port=45000):
    """count mutated conversations drawn from seed: TCP (most), UDP, ICMP echo; IPv4 and IPv6."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        port = base_port + n
        v6 = rng.random() < 0.3
        kind = rng.choices(("tcp", "udp", "icmp"), weights=(6, 2, 1))[0]
        make = {"tcp": _random_tcp, "udp": _random_udp, "icmp": _random_icmp}[kind]
        steps, notes = make(rng, port, v6)
        out.append(Scenario(f"random {seed}/{n} {kind}{6 if v6 else 4}", steps, notes=notes))
    return out


def describe(l3):
    """One line naming a packet (for the report of a disagreement)."""
    if l3[0] >> 4 == 4:
        p = IP(l3)
    else:
        p = IPv6(l3)
    return p.summary() + (f" seq={p[TCP].seq} ack={p[TCP].ack} win={p[TCP].window}"
                          if TCP in p else "") + (f" len={len(l3)}")


def classify_random(case, i, got_linux, got_ferry):
    """The DIFFERENCES key of the first disagreement of a random sequence (at step i, given both
    worlds' verdicts), or None when it is none of the known ones. Random sequences carry no
    fragments; the known differences they reach: `resync` (an earlier SYN from inside and a
    SYN-ACK acknowledging it both passed on a connection past its handshake), `halfopen` (no
    SYN-ACK passed yet, but reply segments did, untracked) and `overshoot` (an earlier segment
    that both let through started more than a window past the right edge)."""
    syns = {}
    synack_passed = reply_passed = overshoot = False
    for j in range(i):
        side, l3 = case.steps[j]
        p = IP(l3) if l3[0] >> 4 == 4 else IPv6(l3)
        if TCP not in p or not (got_linux[j] and got_ferry[j]):
            continue
        flags = int(p[TCP].flags) & 0x17  # FIN, SYN, RST, ACK
        if side == "in" and flags == 0x02:
            syns[(p[TCP].seq + 1) & 0xFFFFFFFF] = j
        elif side == "out" and flags == 0x12:
            synack_passed = True
            if p[TCP].ack in syns and syns[p[TCP].ack] > 2:
                return "resync"
        elif side == "out" and not flags & 0x02:
            reply_passed = True
        if case.notes[j].get("dseq", 0) >= 65535:
            overshoot = True
    if reply_passed and not synack_passed:
        return "halfopen"
    if overshoot:
        return "overshoot"
    return None
