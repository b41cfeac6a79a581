"""Helpers of the connection-tracking and NAT functional tests (test_ct_*.py).

The tests put ferryd between an inside network (10.0.0.0/8, 2001:db8:1::/48) and an outside one.
Two silent pcap ports, `inside` and `outside`, only capture: rules send original-direction
packets out of `outside` and reply-direction packets out of `inside` (or the other way round for
DNAT). Each step of a conversation is a phase: a new pcap port (named after the side it stands
for, lan1, wan1, ...) whose rx frames ferryd reads as soon as it is added. A rule cannot name a
port that does not exist yet, and a port's frames are read before a rule could be added for it,
so the rules never match on in_port: "from inside" is a source address in the inside network,
and where a packet goes follows from its ct_state (+rpl or not).

Checksums are verified by an internet-checksum implementation of its own (not scapy's), and
expected frames are built by scapy from scratch, so a byte-exact comparison also checks them.
"""
import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))

from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6  # noqa: E402
from scapy.layers.l2 import Dot1Q, Ether  # noqa: E402

from pcap_util import PcapBridge, assert_frames, describe, mac, rule  # noqa: E402

INSIDE_MAC, OUTSIDE_MAC = mac(0x11), mac(0x22)
CLIENT, CLIENT2 = "10.0.0.1", "10.0.0.2"
SERVER, SERVER2, ROUTER = "198.51.100.7", "198.51.100.8", "203.0.113.1"
NAT_IP = "192.0.2.1"
VIP, BACKEND = "203.0.113.10", "10.0.0.99"
CLIENT6, SERVER6, NAT6 = "2001:db8:1::1", "2001:db8:2::7", "2001:db8:ffff::1"
INSIDE4, INSIDE6 = "10.0.0.0/8", "2001:db8:1::/48"

# Rule ids of stateful_rules(), so tests can read their hit counters.
R_CT4, R_CT6 = 1, 2
R_INV, R_NEW4, R_NEW6 = 10, 11, 12
R_EST_ORIG, R_EST_REPLY, R_REL_ORIG, R_REL_REPLY = 20, 21, 22, 23
R_DEFAULT = 30


def is_inside(addr):
    return addr.startswith("10.") or addr.startswith("2001:db8:1:")


# ---------------------------------------------------------------------------------------------
# Frames


def _eth(outbound, vid=None):
    head = (Ether(src=INSIDE_MAC, dst=OUTSIDE_MAC) if outbound
            else Ether(src=OUTSIDE_MAC, dst=INSIDE_MAC))
    return head / Dot1Q(vlan=vid) if vid is not None else head


def _ip(src, dst, **kw):
    return IPv6(src=src, dst=dst, **kw) if ":" in src else IP(src=src, dst=dst, **kw)


def _bytes(pkt):
    data = bytes(pkt)
    return data + b"\x00" * max(0, 60 - len(data))


def tcp(src, dst, sport, dport, flags, seq=0, ack=0, payload=b"", window=65535, outbound=None,
        vid=None, options=()):
    """A TCP frame, padded to 60 bytes. outbound (default: src is an inside address) picks the
    Ethernet addresses: inside host -> router, or router -> inside host; options: scapy TCP
    options, e.g. [("WScale", 7)]."""
    outbound = is_inside(src) if outbound is None else outbound
    return _bytes(_eth(outbound, vid) / _ip(src, dst) /
                  TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=window,
                      options=list(options)) / payload)


def udp(src, dst, sport, dport, payload=b"udp", outbound=None, chksum=None, vid=None):
    """A UDP frame; chksum=0 sends it without a checksum (IPv4)."""
    outbound = is_inside(src) if outbound is None else outbound
    l4 = UDP(sport=sport, dport=dport) if chksum is None else UDP(sport=sport, dport=dport,
                                                                   chksum=chksum)
    return _bytes(_eth(outbound, vid) / _ip(src, dst) / l4 / payload)


def echo(src, dst, ident, seq=1, reply=False, payload=b"ping", outbound=None):
    """An ICMP (or ICMPv6, for IPv6 addresses) echo request or reply."""
    outbound = is_inside(src) if outbound is None else outbound
    if ":" in src:
        l4 = (ICMPv6EchoReply if reply else ICMPv6EchoRequest)(id=ident, seq=seq)
    else:
        l4 = ICMP(type=0 if reply else 8, id=ident, seq=seq)
    return _bytes(_eth(outbound) / _ip(src, dst) / l4 / payload)


def ip_packet(frame):
    """The IP packet of an untagged frame, Ethernet padding cut off."""
    ip = frame[14:]
    if ip[0] >> 4 == 4:
        return ip[:struct.unpack("!H", ip[2:4])[0]]
    return ip[:40 + struct.unpack("!H", ip[4:6])[0]]


def icmp_error(src, dst, quoted_frame, icmp_type=None, code=None, outbound=None):
    """An ICMP error from src to dst quoting quoted_frame's IP header and the first 8 bytes of
    its payload (as routers do, RFC 792). Default: port unreachable (ICMP 3/3, ICMPv6 1/4);
    IPv6 addresses make it ICMPv6, where icmp_type is an ICMPv6 type."""
    outbound = is_inside(src) if outbound is None else outbound
    quoted = ip_packet(quoted_frame)
    if ":" in src:
        from scapy.layers.inet6 import ICMPv6Unknown
        t, c = (1 if icmp_type is None else icmp_type), (4 if code is None else code)
        # type, code, checksum (scapy's), 4 unused bytes, then the quote
        err = ICMPv6Unknown(type=t, code=c, msgbody=b"\x00" * 4 + quoted[:48])
        return _bytes(_eth(outbound) / IPv6(src=src, dst=dst) / err)
    t, c = (3 if icmp_type is None else icmp_type), (3 if code is None else code)
    quoted = quoted[:(quoted[0] & 0x0F) * 4 + 8]
    return _bytes(_eth(outbound) / IP(src=src, dst=dst) / ICMP(type=t, code=c) / quoted)


# ---------------------------------------------------------------------------------------------
# Checksums, computed here rather than by scapy


def inet_sum(data):
    """The one's-complement sum of data (16-bit big-endian words, odd length zero-padded)."""
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def checksum_problems(frame):
    """Every checksum of an untagged IPv4 or IPv6 frame that does not verify: the IPv4 header,
    TCP, UDP (zero = none, IPv4), ICMP, ICMPv6, and an ICMPv4 error's quoted IPv4 header.
    @return a list of descriptions, empty when all verify"""
    problems = []
    ip = ip_packet(frame)
    if ip[0] >> 4 == 4:
        ihl = (ip[0] & 0x0F) * 4
        if inet_sum(ip[:ihl]) != 0xFFFF:
            problems.append("IPv4 header checksum")
        proto, l4 = ip[9], ip[ihl:]
        pseudo = ip[12:20] + struct.pack("!BBH", 0, proto, len(l4))
    else:
        proto, l4 = ip[6], ip[40:]
        pseudo = ip[8:40] + struct.pack("!IxxxB", len(l4), proto)
    if proto == 6 and inet_sum(pseudo + l4) != 0xFFFF:
        problems.append("TCP checksum")
    if proto == 17 and not (ip[0] >> 4 == 4 and l4[6:8] == b"\x00\x00") and \
            inet_sum(pseudo + l4) != 0xFFFF:
        problems.append("UDP checksum")
    if proto == 1:
        if inet_sum(l4) != 0xFFFF:
            problems.append("ICMP checksum")
        if l4[0] in (3, 11, 12) and inet_sum(l4[8:8 + (l4[8] & 0x0F) * 4]) != 0xFFFF:
            problems.append("quoted IPv4 header checksum")
    if proto == 58 and inet_sum(pseudo + l4) != 0xFFFF:
        problems.append("ICMPv6 checksum")
    return problems


def assert_checksums(frame, where=""):
    problems = checksum_problems(frame)
    assert not problems, f"{where}: bad {', '.join(problems)} in {describe(frame)}: {frame.hex()}"


# ---------------------------------------------------------------------------------------------
# Rules


def stateful_rules(zone=1, table0_ct=None, new4=None, new6=None, orig_out="outside",
                   reply_out="inside", inside_by="address"):
    """A stateful firewall in two tables, with fixed rule ids (R_*).

    Table 0: IPv4 and IPv6 -> table0_ct (default ct(zone=Z,table=1)); anything else misses.
    Table 1: +inv dropped (priority 30); new connections from the inside network -> new4 / new6
    actions (default: ct(zone=Z,commit), output:orig_out) at priority 20, "from the inside"
    meaning a source address in INSIDE4 / INSIDE6, or with inside_by="mac" a frame from
    INSIDE_MAC (as an in_port match would; NAT leaves the MACs alone); +est and +rel of the
    original direction -> orig_out, of the reply direction -> reply_out; the rest dropped
    (priority 0), in particular +new from outside.
    """
    ct = table0_ct or f"ct(zone={zone},table=1)"
    commit = [f"ct(zone={zone},commit)", f"output:{orig_out}"]
    if inside_by == "mac":
        from4 = {"eth_type": "ipv4", "eth_src": INSIDE_MAC}
        from6 = {"eth_type": "ipv6", "eth_src": INSIDE_MAC}
    else:
        from4 = {"eth_type": "ipv4", "ip_src": INSIDE4}
        from6 = {"eth_type": "ipv6", "ipv6_src": INSIDE6}
    return [
        rule(R_CT4, [ct], {"eth_type": "ipv4"}, priority=10),
        rule(R_CT6, [ct], {"eth_type": "ipv6"}, priority=10),
        rule(R_INV, ["drop"], {"ct_state": "+trk+inv"}, priority=30, table=1),
        rule(R_NEW4, new4 or commit, dict(from4, ct_state="+trk+new"), priority=20, table=1),
        rule(R_NEW6, new6 or commit, dict(from6, ct_state="+trk+new"), priority=20, table=1),
        rule(R_EST_ORIG, [f"output:{orig_out}"], {"ct_state": "+trk+est-rpl"}, priority=10,
             table=1),
        rule(R_EST_REPLY, [f"output:{reply_out}"], {"ct_state": "+trk+est+rpl"}, priority=10,
             table=1),
        rule(R_REL_ORIG, [f"output:{orig_out}"], {"ct_state": "+trk+rel-rpl"}, priority=5,
             table=1),
        rule(R_REL_REPLY, [f"output:{reply_out}"], {"ct_state": "+trk+rel+rpl"}, priority=5,
             table=1),
        rule(R_DEFAULT, ["drop"], priority=0, table=1),
    ]


def hit_packets(b):
    """rule.list as {id: packets}, rules without hits left out."""
    return {r["id"]: r["packets"] for r in b.call("rule.list") if r["packets"]}


# ---------------------------------------------------------------------------------------------
# The bridge


class CtBridge(PcapBridge):
    """A PcapBridge with two capturing ports, inside and outside, and phases of traffic.

    phase() adds a port with the next frames and waits until the outputs it expects have
    appeared; the frames expected on each capturing port accumulate, and check_outputs()
    compares them with the tx files byte for byte after finish().
    """

    def __init__(self, rules=None, conntrack=None, capture=("inside", "outside"), workers=(1,),
                 mtu=None):
        super().__init__(workers=workers, mtu=mtu)
        self.ferryd.config["conntrack"] = conntrack or {"capacity": 4096}
        self.ferryd.config["conntrack"].setdefault("capacity", 4096)
        self.ferryd.config["rules"] = list(rules or [])
        for name in capture:
            self.port(name)
        self.expected = {name: [] for name in capture}
        self.unchecked = set()  # capture ports whose frames the test checks itself
        self.phase_drops = {}   # phase port -> {reason: n}
        self.seq = {}

    def phase(self, frames, out=None, drops=None, side=None):
        """Sends frames from a new port and waits until they are handled.

        out: {capture port: [expected frames, in order]} or {port: n} when the test checks
        those frames itself; drops: {reason: n} expected on the new port (and no other drop);
        side: the new port's name prefix, "lan" when the first frame's source is inside,
        else "wan". @return the new port's name
        """
        if side is None:
            side = "lan" if Ether(frames[0]).src == INSIDE_MAC else "wan"
        n = self.seq[side] = self.seq.get(side, 0) + 1
        name = f"{side}{n}"
        for port, want in (out or {}).items():
            if isinstance(want, int):
                self.unchecked.add(port)
                self.expected[port].extend([None] * want)
            else:
                self.expected[port].extend(want)
        drops = {r: c for r, c in (drops or {}).items() if c}
        self.phase_drops[name] = drops
        self.add_port(name, frames)
        self.wait_counts(rx={name: len(frames)},
                         tx={p: len(f) for p, f in self.expected.items()},
                         drops={(name, r): c for r, c in drops.items()})
        return name

    def replace_port(self, name, rx=()):
        """Deletes port `name` and adds a new pcap port of the same name reading rx (a phase
        for a port that rules name). What the old port sent stays readable after finish() as
        outputs["name@N"] (N = 1, 2, ...); its counters are gone with it, so they are returned
        (port.stats just before the deletion)."""
        before = self.call("port.stats", {"name": name})[0]
        self.del_port(name)
        old = self.ports.pop(name)
        k = 1 + sum(1 for n in self.ports if n.startswith(name + "@"))
        kept = self.ferryd.path(f"{name}@{k}-tx.pcap")
        if os.path.exists(old["tx_path"]):
            os.rename(old["tx_path"], kept)  # the device is closed: its file is complete
        old["tx_path"] = kept
        self.ports[f"{name}@{k}"] = old
        self.add_port(name, rx)
        return before

    def conns(self, **flt):
        """ct.list with filters, every page."""
        out, cursor = [], 0
        while True:
            page = self.call("ct.list", dict(flt, cursor=cursor) if cursor else flt)
            out += page["connections"]
            if page["next"] is None:
                return out
            cursor = page["next"]

    def conn(self, **match):
        """The one connection whose original tuple has the given fields (src, dst, sport,
        dport) and whose proto / zone / state, if given, are those."""
        def fits(c):
            return all((c[k] if k in ("proto", "zone", "state") else c["orig"][k]) == v
                       for k, v in match.items())
        found = [c for c in self.conns() if fits(c)]
        assert len(found) == 1, f"{len(found)} connections with {match}: {self.conns()}"
        return found[0]

    def state(self, **match):
        return self.conn(**match)["state"]

    def ct_stats(self):
        return self.call("ct.stats")

    def worker_stat(self, key):
        """A ct.stats per-worker counter summed over the workers."""
        return sum(w[key] for w in self.call("ct.stats")["workers"])

    def zone_stats(self, zone):
        return next((z for z in self.call("ct.stats")["zones"] if z["zone"] == zone), None)

    def check_outputs(self):
        """After finish(): every capture port sent exactly the expected frames, in order (ports
        with placeholders only their count), and every phase port dropped exactly what its
        phase said."""
        for port, want in self.expected.items():
            got = self.outputs[port]
            if port in self.unchecked:
                assert len(got) == len(want), f"{port}: {len(got)} frames, want {len(want)}"
                for i, w in enumerate(want):
                    if w is not None:
                        assert got[i] == w, f"{port} frame {i}: {describe(got[i])}\n " \
                                            f"{got[i].hex()}\n want {w.hex()}"
            else:
                assert_frames(got, want, where=port)
        for port, want in self.phase_drops.items():
            have = {r: n for r, n in self.final_stats[port]["drops"].items() if n}
            assert have == want, f"{port}: drops {have}, want {want}"


def bridges(cls=None):
    """The body of the test modules' bridge fixtures: yields a maker of CtBridges (or of cls, a
    subclass; started by the test) and stops them afterwards; a bridge's directory is kept when
    the test failed before reading its outputs."""
    made = []

    def make(**kw):
        b = (cls or CtBridge)(**kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()
        if b.outputs is not None:
            shutil.rmtree(b.ferryd.dir, ignore_errors=True)
