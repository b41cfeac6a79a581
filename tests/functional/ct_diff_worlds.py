"""The two firewalls of the conntrack differential test (test_ct_differential.py), and how a
packet is played through one of them.

Each world has an inside and an outside link in network namespaces of its own, and one
AF_PACKET socket on each: a frame is injected on its sender's side, and whether it got through
is read on the other side.

- LinuxRouter: namespaces in -> router -> out joined by veth pairs. The router forwards IPv4
  and IPv6 with static permanent neighbours (no ARP or ND), rp_filter off, and an nftables
  forward chain with the policy; conntrack with nf_conntrack_checksum=1, tcp_loose=0,
  tcp_be_liberal=0. The end namespaces own no address and have IPv6 disabled, so no kernel stack
  answers, resets or solicits anything; their packet sockets still see every frame.
- FerrySwitch: ferryd, started in a namespace of its own, with two net_tap ports (inside,
  outside) whose kernel sides have no address and IPv6 disabled, and the policy as ferry rules.

Ordering: after each packet a barrier datagram (UDP port 9 -> 9, a connection both firewalls
let through) follows it on the same link, and the far side is read until that barrier arrives,
so the packet's effect on the connection table is complete before the next packet, from either
side, is sent. Every other frame read in a scenario is kept; a packet passed when a frame equal
to it (TTL or hop limit, the IPv4 header checksum, and an IPv6 fragment identification aside,
which a router may change) arrived in the scenario. Linux holds fragments until the datagram is
whole, so a first fragment may arrive only after a later one was sent.
"""
import contextlib
import ctypes
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import time

from ct_util import inet_sum
from ferry_harness import Ferryd

NFT = shutil.which("nft") or "/usr/sbin/nft"
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
CLONE_NEWNET = 0x40000000

# Addresses the scenarios use. Inside hosts are behind the firewall's inside port.
CLIENT4, CLIENT4B, BARRIER_IN4 = "10.0.0.1", "10.0.0.2", "10.0.0.250"
SERVER4, SERVER4B, BARRIER_OUT4 = "198.51.100.7", "198.51.100.8", "198.51.100.250"
HOP4 = "203.0.113.1"  # a router on the outside path, source of ICMP errors
CLIENT6, SERVER6, HOP6 = "2001:db8:1::1", "2001:db8:2::7", "2001:db8:3::1"
INSIDE_HOSTS = (CLIENT4, CLIENT4B, BARRIER_IN4, CLIENT6)
OUTSIDE_HOSTS = (SERVER4, SERVER4B, BARRIER_OUT4, SERVER6)

NFT_POLICY = """
table inet ferrydiff {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        ct state invalid drop
        iifname "%(inside)s" ct state new accept
    }
}
"""

CONNTRACK_SYSCTLS = {
    "net.netfilter.nf_conntrack_checksum": "1",
    "net.netfilter.nf_conntrack_tcp_loose": "0",
    "net.netfilter.nf_conntrack_tcp_be_liberal": "0",
}

_libc = ctypes.CDLL(None, use_errno=True)


def run(*args, check=True):
    """Runs a command; raises with its output when check and it fails."""
    res = subprocess.run(args, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


@contextlib.contextmanager
def in_netns(ns):
    """Runs the block with this thread in network namespace ns. A socket keeps the namespace it
    was made in, and /proc/sys/net shows the namespace of the thread that opens it."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {ns}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)


def packet_socket(ns, iface):
    """A non-blocking AF_PACKET socket bound to iface inside namespace ns."""
    with in_netns(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind((iface, 0))
        sock.setblocking(False)
    return sock


def sysctl(ns, name, value):
    """Sets sysctl `name` (dotted) to value inside namespace ns."""
    with in_netns(ns):
        with open("/proc/sys/" + name.replace(".", "/"), "w") as f:
            f.write(value)


def iface_mac(ns, iface):
    info = json.loads(run("ip", "-n", ns, "-j", "link", "show", "dev", iface).stdout)
    return bytes.fromhex(info[0]["address"].replace(":", ""))


def normalise(l3):
    """The bytes of an IP packet that a router must not change: TTL or hop limit, the IPv4
    header checksum and an IPv6 fragment header's identification zeroed; Ethernet padding cut."""
    if not l3:
        return b""
    version = l3[0] >> 4
    b = bytearray(l3)
    if version == 4 and len(b) >= 20:
        b = b[: max(20, struct.unpack_from("!H", b, 2)[0])]
        b[8] = 0
        b[10:12] = b"\0\0"
    elif version == 6 and len(b) >= 40:
        b = b[: 40 + struct.unpack_from("!H", b, 4)[0]]
        b[7] = 0
        if b[6] == 44 and len(b) >= 48:
            b[44:48] = b"\0\0\0\0"
    return bytes(b)


def barrier_l3(outbound, n):
    """The barrier datagram number n from one side: UDP 9 -> 9 between the barrier hosts, with
    the number in its payload."""
    src, dst = (BARRIER_IN4, BARRIER_OUT4) if outbound else (BARRIER_OUT4, BARRIER_IN4)
    payload = b"ferry-barrier" + struct.pack("!I", n)
    udp = struct.pack("!HHHH", 9, 9, 8 + len(payload), 0) + payload
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0, 64, 17, 0,
                               socket.inet_aton(src), socket.inet_aton(dst)))
    csum = ~inet_sum(bytes(ip)) & 0xFFFF
    ip[10:12] = struct.pack("!H", csum)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, len(udp))
    ucsum = ~inet_sum(pseudo + udp) & 0xFFFF or 0xFFFF
    udp = udp[:6] + struct.pack("!H", ucsum) + udp[8:]
    return bytes(ip) + udp


class World:
    """A firewall between an inside and an outside link. Subclasses set name, sock (side ->
    socket: "in" injects from inside, "out" from outside) and eth (side -> the Ethernet header
    of frames injected there)."""

    name = "?"
    timeout = 2.0

    def __init__(self):
        self.sock = {}
        self.eth = {}
        self.barriers = 0

    def _send(self, side, l3):
        ethertype = b"\x86\xdd" if l3[0] >> 4 == 6 else b"\x08\x00"
        self.sock[side].send(self.eth[side] + ethertype + l3)

    def _drain(self):
        for s in self.sock.values():
            while True:
                try:
                    s.recv(65535)
                except BlockingIOError:
                    break

    def _read_until_barrier(self, far, tag):
        """Frames read on side `far` up to the barrier with payload tag (not included)."""
        frames = []
        sock = self.sock[far]
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: barrier {tag!r} did not cross; "
                                   "the world is not forwarding")
            r, _, _ = select.select([sock], [], [], left)
            if not r:
                continue
            while True:
                try:
                    data, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING or len(data) < 15:
                    continue
                l3 = data[14:]
                if tag in l3:
                    return frames
                frames.append(normalise(l3))

    def barrier(self, side):
        """Sends a barrier from side and waits for it on the other side; returns the frames
        that arrived before it."""
        self.barriers += 1
        l3 = barrier_l3(side == "in", self.barriers)
        self._send(side, l3)
        far = "out" if side == "in" else "in"
        return self._read_until_barrier(far, l3[-17:])

    def open_barrier_flow(self):
        """Opens the barrier connection (from inside) so barriers pass both ways."""
        self._drain()
        self.barrier("in")
        self.barrier("out")

    def play(self, steps):
        """Sends the (side, l3 bytes) steps in order; returns one bool per step: it passed."""
        self._drain()
        seen = {"in": [], "out": []}
        for side, l3 in steps:
            self._send(side, l3)
            seen[side] += self.barrier(side)
        verdicts = []
        for side, l3 in steps:
            want = normalise(l3)
            if want in seen[side]:
                seen[side].remove(want)
                verdicts.append(True)
            else:
                verdicts.append(False)
        return verdicts

    def close(self):
        for s in self.sock.values():
            s.close()
        self.sock = {}


class LinuxRouter(World):
    name = "linux"

    def __init__(self):
        super().__init__()
        p = os.getpid() % 100000
        self.ns = {k: f"ferrydiff-{os.getpid()}-{k}" for k in ("in", "rt", "out")}
        self.ifs = {"in": f"fdA{p}", "rt_in": f"fdB{p}", "rt_out": f"fdC{p}", "out": f"fdD{p}"}
        self.created = []

    def start(self):
        ns, ifs = self.ns, self.ifs
        for n in ns.values():
            run("ip", "netns", "add", n)
            self.created.append(n)
        run("ip", "link", "add", ifs["in"], "netns", ns["in"], "type", "veth", "peer", "name",
            ifs["rt_in"], "netns", ns["rt"])
        run("ip", "link", "add", ifs["out"], "netns", ns["out"], "type", "veth", "peer", "name",
            ifs["rt_out"], "netns", ns["rt"])
        for side in ("in", "out"):
            sysctl(ns[side], f"net.ipv6.conf.{ifs[side]}.disable_ipv6", "1")
            sysctl(ns[side], "net.ipv4.ip_forward", "0")
            run("ip", "-n", ns[side], "link", "set", ifs[side], "up")
        rt = ns["rt"]
        res = subprocess.run(["ip", "netns", "exec", rt, NFT, "-f", "-"], capture_output=True,
                             text=True, input=NFT_POLICY % {"inside": ifs["rt_in"]})
        if res.returncode != 0:
            raise RuntimeError(f"nft -f failed: {res.stderr.strip()}")
        sysctls = {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "0",
                   "net.ipv4.conf.default.rp_filter": "0", "net.ipv6.conf.all.forwarding": "1",
                   "net.ipv4.conf.all.accept_source_route": "0",
                   "net.ipv4.conf.all.send_redirects": "0", **CONNTRACK_SYSCTLS}
        for name, value in sysctls.items():
            sysctl(rt, name, value)
        for i in ("rt_in", "rt_out"):
            sysctl(rt, f"net.ipv4.conf.{ifs[i]}.rp_filter", "0")
            sysctl(rt, f"net.ipv6.conf.{ifs[i]}.accept_ra", "0")
            sysctl(rt, f"net.ipv6.conf.{ifs[i]}.accept_dad", "0")
            run("ip", "-n", rt, "link", "set", ifs[i], "up")
        run("ip", "-n", rt, "addr", "add", "10.255.255.254/8", "dev", ifs["rt_in"])
        run("ip", "-n", rt, "addr", "add", "198.51.100.254/24", "dev", ifs["rt_out"])
        run("ip", "-n", rt, "route", "add", "203.0.113.0/24", "dev", ifs["rt_out"])
        run("ip", "-n", rt, "-6", "addr", "add", "2001:db8:1::ffff/48", "dev", ifs["rt_in"],
            "nodad")
        run("ip", "-n", rt, "-6", "addr", "add", "2001:db8:2::ffff/48", "dev", ifs["rt_out"],
               "nodad")
        run("ip", "-n", rt, "-6", "route", "add", "2001:db8:3::/48", "dev", ifs["rt_out"])
        mac = {side: iface_mac(ns[side], ifs[side]) for side in ("in", "out")}
        rt_mac = {"in": iface_mac(rt, ifs["rt_in"]), "out": iface_mac(rt, ifs["rt_out"])}
        for side, hosts in (("in", INSIDE_HOSTS), ("out", OUTSIDE_HOSTS)):
            lladdr = ":".join(f"{x:02x}" for x in mac[side])
            for h in hosts:
                run("ip", "-n", rt, "neigh", "replace", h, "lladdr", lladdr, "dev",
                       ifs["rt_" + side], "nud", "permanent")
        for side in ("in", "out"):
            self.eth[side] = rt_mac[side] + mac[side]
            self.sock[side] = packet_socket(ns[side], ifs[side])
        return self

    def stop(self):
        self.close()
        for n in reversed(self.created):
            run("ip", "netns", "del", n, check=False)
        self.created = []


# The policy as ferry rules: the barrier and conntrack in table 0; in table 1 invalid dropped,
# new from inside committed, established and related both ways, the rest dropped.
def ferry_rules():
    rules = []
    for i, v in enumerate(("ipv4", "ipv6")):
        rules.append({"id": 1 + i, "priority": 100, "match": {"eth_type": v},
                      "actions": ["ct(zone=1,table=1)"]})
    rules.append({"id": 9, "priority": 0, "actions": ["drop"]})
    rules.append({"id": 20, "table": 1, "priority": 300, "match": {"ct_state": "+trk+inv"},
                  "actions": ["drop"]})
    rules.append({"id": 21, "table": 1, "priority": 200,
                  "match": {"in_port": "inside", "ct_state": "+trk+new"},
                  "actions": ["ct(zone=1,commit)", "output:outside"]})
    rid = 22
    for state, prio in (("+trk+est", 110), ("+trk+rel", 100)):
        for src, dst in (("inside", "outside"), ("outside", "inside")):
            rules.append({"id": rid, "table": 1, "priority": prio,
                          "match": {"in_port": src, "ct_state": state},
                          "actions": [f"output:{dst}"]})
            rid += 1
    rules.append({"id": 29, "table": 1, "priority": 0, "actions": ["drop"]})
    return rules


class FerrySwitch(World):
    name = "ferry"

    def __init__(self):
        super().__init__()
        p = os.getpid() % 100000
        self.ns = f"ferrydiff-{os.getpid()}-fy"
        self.ifs = {"in": f"fdT{p}", "out": f"fdU{p}"}
        self.ferryd = None
        self.ns_created = False

    def start(self):
        self.ferryd = Ferryd(
            ports=[{"name": "inside", "type": "dpdk",
                    "devargs": f"net_tap0,iface={self.ifs['in']}"},
                   {"name": "outside", "type": "dpdk",
                    "devargs": f"net_tap1,iface={self.ifs['out']}"}],
            extra={"conntrack": {"capacity": 65536,
                                 "zones": [{"zone": 1, "limit": 60000, "liberal": False}]},
                   "rules": ferry_rules()})
        # ferryd runs in the namespace, so its taps are made there: net_tap reads a tap's link
        # state by the interface's name, which it would not find after a move.
        run("ip", "netns", "add", self.ns)
        self.ns_created = True
        sysctl(self.ns, "net.ipv6.conf.default.disable_ipv6", "1")
        self.ferryd.wrap = ["ip", "netns", "exec", self.ns]
        self.ferryd.start()
        for side in ("in", "out"):
            i = self.ifs[side]
            sysctl(self.ns, f"net.ipv6.conf.{i}.disable_ipv6", "1")
            run("ip", "-n", self.ns, "link", "set", i, "up")
        sysctl(self.ns, "net.ipv4.ip_forward", "0")
        for side in ("in", "out"):
            src = b"\x02\x00\x00\x00\xd1" + (b"\x01" if side == "in" else b"\x02")
            self.eth[side] = b"\x02\x00\x00\x00\xd0\x01" + src
            self.sock[side] = packet_socket(self.ns, self.ifs[side])
        return self

    def stop(self):
        self.close()
        if self.ferryd is not None:
            self.ferryd.stop()
            if not os.environ.get("FERRY_KEEP_TMP"):
                shutil.rmtree(self.ferryd.dir, ignore_errors=True)
            self.ferryd = None
        if self.ns_created:
            run("ip", "netns", "del", self.ns, check=False)
            self.ns_created = False
