"""Pcap-driven functional tests of ferryd: frames, pcap files, and a bridge run in phases.

The net_pcap PMD reads a port's rx_pcap once, as fast as it can, as soon as a worker polls the
port; learning is applied asynchronously by the control thread. A test that needs an address
learned before the next frames arrive therefore runs in phases: each phase adds new pcap ports
(port.add) whose rx files hold the next frames, and waits until the counters and the MAC table
say the phase is over. Output is read from the tx_pcap files after ferryd stopped, when the pcap
writers are closed.
"""
import itertools
import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))

from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.l2 import ARP, Dot1Q, Ether  # noqa: E402
from scapy.utils import RawPcapReader  # noqa: E402

from ferry_harness import Ferryd, wait_for  # noqa: E402

BROADCAST = "ff:ff:ff:ff:ff:ff"
WAIT_S = 10.0


def mac(n):
    """A locally administered unicast address numbered n."""
    return "02:00:00:00:00:%02x" % n


# ---------------------------------------------------------------------------------------------
# Frames


def pad60(frame):
    """Pads a frame to the 60-byte Ethernet minimum (without FCS), as a NIC would."""
    return frame + b"\x00" * max(0, 60 - len(frame))


def udp_frame(src, dst, payload=b"ferry", sport=1000, dport=2000):
    """An untagged IPv4/UDP frame; the payload makes frames of one test distinct."""
    return pad60(bytes(Ether(src=src, dst=dst) / IP(src="10.0.0.1", dst="10.0.0.2") /
                       UDP(sport=sport, dport=dport) / payload))


def arp_request(src, target_ip="10.0.0.2", sender_ip="10.0.0.1"):
    """A broadcast ARP who-has from src."""
    return pad60(bytes(Ether(src=src, dst=BROADCAST) /
                       ARP(op=1, hwsrc=src, psrc=sender_ip, pdst=target_ip)))


def tagged_udp(src, dst, vid, prio=0, payload=b"ferry"):
    """An 802.1Q-tagged IPv4/UDP frame (VID 0 = priority tag), padded to 64 bytes so that it
    is still 60 bytes long once its tag is removed."""
    frame = bytes(Ether(src=src, dst=dst) / Dot1Q(vlan=vid, prio=prio) /
                  IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000, dport=2000) / payload)
    return frame + b"\x00" * max(0, 64 - len(frame))


def tag(frame, vid, pcp=0):
    """The frame with an outer 802.1Q tag inserted after the addresses (TPID 0x8100)."""
    return frame[:12] + struct.pack("!HH", 0x8100, (pcp << 13) | vid) + frame[12:]


def untag(frame):
    """The frame without its outer VLAN tag."""
    assert frame[12:14] == b"\x81\x00", "frame is not 802.1Q tagged"
    return frame[:12] + frame[16:]


def set_vid(frame, vid):
    """The tagged frame with its VID rewritten, PCP and DEI kept."""
    tci = struct.unpack("!H", frame[14:16])[0]
    return frame[:14] + struct.pack("!H", (tci & 0xF000) | vid) + frame[16:]


# ---------------------------------------------------------------------------------------------
# Pcap files

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # LINKTYPE_ETHERNET


def write_pcap(path, frames):
    """Writes frames byte for byte (no scapy re-encoding); no frames = a valid empty pcap."""
    with open(path, "wb") as f:
        f.write(PCAP_HEADER)
        for i, frame in enumerate(frames):
            f.write(struct.pack("<IIII", 1, i, len(frame), len(frame)))
            f.write(frame)


def read_pcap(path):
    """The frames of a pcap file as bytes, in file order ([] if ferryd never wrote it)."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return []
    reader = RawPcapReader(path)
    try:
        return [bytes(data) for data, _meta in reader]
    finally:
        reader.close()


def describe(frame):
    return Ether(frame).summary() + f" ({len(frame)} bytes)"


def assert_frames(got, *streams, where=""):
    """Asserts that got is exactly an interleaving of the streams, each kept in its own order.

    A stream is the output of one ingress port, whose order ferryd keeps; frames of different
    ingress ports may interleave in any order. Frames within a test are assumed distinct.
    """
    heads = [list(s) for s in streams]
    for i, frame in enumerate(got):
        for s in heads:
            if s and s[0] == frame:
                s.pop(0)
                break
        else:
            expected_next = [describe(s[0]) for s in heads if s]
            raise AssertionError(
                f"{where}: frame {i} unexpected: {describe(frame)}\n  {frame.hex()}\n"
                f"  expected one of: {expected_next}")
    missing = [describe(f) for s in heads for f in s]
    assert not missing, f"{where}: {len(missing)} expected frames missing: {missing}"


def assert_phases(got, *phases, where=""):
    """Asserts got is the output of consecutive phases, each a list of streams (assert_frames).

    Phases are separated in time by the test, so their outputs follow one another in the file.
    """
    pos = 0
    for i, streams in enumerate(phases):
        n = sum(len(s) for s in streams)
        assert_frames(got[pos:pos + n], *streams, where=f"{where} phase {i + 1}")
        pos += n
    assert pos == len(got), f"{where}: {len(got) - pos} frames more than expected: " \
                            f"{[describe(f) for f in got[pos:]]}"


# ---------------------------------------------------------------------------------------------
# A bridge of pcap ports, run in phases


class PcapBridge:
    """ferryd with net_pcap ports whose rx files are written and tx files read by the test.

    Ports declared before start() are in the config; ports declared after are added by
    port.add. Each port records the frames it was given so counters can be checked.
    """

    def __init__(self, workers=(1,), mtu=None):
        """mtu: the MTU of every port declared without one (None: the config's default)."""
        self.ferryd = Ferryd(ports=[], workers=workers)
        self.mtu = mtu
        self.ports = {}  # name -> {"rx": [frames], "tx_path": path, "spec": {...}}
        self.devices = itertools.count()
        self.outputs = None

    def _spec(self, name, rx, vlan_mode=None, tag=None, trunks=None, infinite=False,
              capture=True, mtu=None):
        """infinite: the PMD replays the rx frames in a loop until the port goes away;
        capture=False: no tx_pcap, the PMD drops what ferryd sends (counted all the same);
        mtu: the port's MTU (default: the bridge's)."""
        dev = next(self.devices)
        rx_path = self.ferryd.path(f"{name}-rx.pcap")
        tx_path = self.ferryd.path(f"{name}-tx.pcap")
        write_pcap(rx_path, rx)
        devargs = f"net_pcap{dev},rx_pcap={rx_path}"
        if capture:
            devargs += f",tx_pcap={tx_path}"
        if infinite:
            devargs += ",infinite_rx=1"
        spec = {"name": name, "type": "dpdk", "devargs": devargs}
        if vlan_mode is not None:
            spec["vlan_mode"] = vlan_mode
        if tag is not None:
            spec["tag"] = tag
        if trunks is not None:
            spec["trunks"] = list(trunks)
        if mtu is not None or self.mtu is not None:
            spec["mtu"] = mtu if mtu is not None else self.mtu
        self.ports[name] = {"rx": list(rx), "tx_path": tx_path, "spec": spec}
        return spec

    def port(self, name, rx=(), **vlan):
        """Declares a port of the initial config (before start)."""
        assert self.ferryd.proc is None, "use add_port once ferryd runs"
        self.ferryd.config["ports"].append(self._spec(name, rx, **vlan))

    def start(self):
        self.ferryd.start()
        return self

    def add_port(self, name, rx=(), **vlan):
        """Adds a port to the running ferryd: its rx frames are read at once (a new phase)."""
        return self.ferryd.call("port.add", self._spec(name, rx, **vlan))

    def del_port(self, name):
        """Removes a port; its tx file stays readable by finish(), its counters are gone."""
        return self.ferryd.call("port.del", {"name": name})

    def call(self, method, params=None):
        return self.ferryd.call(method, params)

    def stats(self, name):
        return self.ferryd.port_stats(name)

    def wait_counts(self, rx=None, tx=None, drops=None, timeout=WAIT_S):
        """Waits until each named port's rx_packets / tx_packets / drops[reason] equal the
        given counts. drops: {(port, reason): count}."""
        want = {(n, "rx_packets"): c for n, c in (rx or {}).items()}
        want.update({(n, "tx_packets"): c for n, c in (tx or {}).items()})
        want.update({(n, r): c for (n, r), c in (drops or {}).items()})
        last = {}

        def done():
            stats = {s["name"]: s for s in self.call("port.stats")}
            for (name, key) in want:
                st = stats[name]
                last[(name, key)] = st[key] if key in st else st["drops"][key]
            return all(last[k] == c for k, c in want.items())

        try:
            wait_for(done, timeout, what="packet counts")
        except TimeoutError as e:
            raise AssertionError(f"{e}: want {want}, have {last}") from None

    def macs(self, **params):
        """mac.list as a set of (mac, vlan, port)."""
        return {(e["mac"], e["vlan"], e["port"]) for e in self.call("mac.list", params)}

    def wait_macs(self, expected, timeout=WAIT_S):
        """Waits until mac.list holds exactly the expected (mac, vlan, port) entries."""
        expected = set(expected)
        seen = []

        def done():
            seen[:] = [self.macs()]
            return seen[0] == expected

        try:
            wait_for(done, timeout, what="MAC table")
        except TimeoutError as e:
            raise AssertionError(f"{e}: want {sorted(expected)}, have {sorted(seen[0])}") from None

    def check_counters(self, names=None):
        """Asserts port.stats rx/tx packets and bytes match the rx files and the tx files.

        Call after finish(): the tx side is compared with what the tx_pcap files hold, using
        the stats taken just before shutdown.
        """
        for name in names or self.final_stats:
            st = self.final_stats[name]
            rx = self.ports[name]["rx"]
            tx = self.outputs[name]
            got = (st["rx_packets"], st["rx_bytes"], st["tx_packets"], st["tx_bytes"])
            want = (len(rx), sum(map(len, rx)), len(tx), sum(map(len, tx)))
            assert got == want, f"{name}: port.stats (rx pkts, rx bytes, tx pkts, tx bytes) " \
                                f"{got} != pcaps {want}"

    def finish(self):
        """Takes the final port.stats once they stopped moving, shuts ferryd down, returns
        {port: [frames sent]}."""
        def settled():
            before = self.call("port.stats")
            time.sleep(0.05)
            after = self.call("port.stats")
            return {s["name"]: s for s in after} if before == after else None

        self.final_stats = wait_for(settled, WAIT_S, interval=0, what="counters to settle")
        rc = self.ferryd.stop()
        assert rc == 0, f"ferryd exited with {rc}:\n{self.ferryd.read_log()}"
        self.outputs = {n: read_pcap(p["tx_path"]) for n, p in self.ports.items()}
        return self.outputs

    def close(self):
        """Stops ferryd if a test failed before finish()."""
        if self.ferryd.proc is not None and self.ferryd.proc.poll() is None:
            self.ferryd.stop()


# ---------------------------------------------------------------------------------------------
# Helpers of the flow-rule tests (test_rules_*.py)


def frame(pkt, minimum=60):
    """The bytes of a scapy packet, padded with zeros to minimum bytes (60: the Ethernet minimum
    without FCS; 64 for a tagged frame that must stay 60 bytes once its tag is popped)."""
    data = bytes(pkt)
    return data + b"\x00" * max(0, minimum - len(data))


def tally_pcap(path, known):
    """Counts how often each of the known frames (all of one length) occurs in a pcap file that
    may hold millions of frames, without a Python loop per frame.

    Returns ({frame: count}, unknown) where unknown is the number of records that are none of
    the known frames (a record of another length makes every later record unknown too, so the
    total is still the number of records if the file is one record per known frame).
    """
    import numpy as np

    known = list(known)
    size = len(known[0])
    assert all(len(f) == size for f in known), "tally_pcap needs frames of one length"
    if not os.path.exists(path) or os.path.getsize(path) <= len(PCAP_HEADER):
        return {f: 0 for f in known}, 0
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=len(PCAP_HEADER))
    record = 16 + size
    whole = len(raw) // record
    rest = len(raw) - whole * record
    recs = raw[:whole * record].reshape(whole, record)
    lengths = recs[:, 8:16].copy().view("<u4").reshape(whole, 2)
    good_len = (lengths[:, 0] == size) & (lengths[:, 1] == size)
    counts = {}
    matched = np.zeros(whole, dtype=bool)
    for f in known:
        hit = good_len & (recs[:, 16:] == np.frombuffer(f, dtype=np.uint8)).all(axis=1)
        counts[f] = int(hit.sum())
        matched |= hit
    unknown = int(whole - matched.sum()) + (1 if rest else 0)
    return counts, unknown


# Frames of the flow-rule tests: untagged unless a VID is given, padded to 60 bytes, from
# RULE_SRC to RULE_DST unless told otherwise. A distinct payload keeps frames of a test apart.
RULE_SRC, RULE_DST = mac(1), mac(2)


def ipv4_frame(l4=None, src="10.0.0.1", dst="10.0.0.2", smac=RULE_SRC, dmac=RULE_DST, vid=None,
               payload=b"v4", proto=None):
    """An IPv4 frame carrying l4 (a scapy layer; UDP 1000->2000 if None), tagged with vid if
    given; proto overrides the IP protocol number."""
    head = Ether(src=smac, dst=dmac)
    if vid is not None:
        head = head / Dot1Q(vlan=vid)
    ip = IP(src=src, dst=dst) if proto is None else IP(src=src, dst=dst, proto=proto)
    return frame(head / ip / (l4 if l4 is not None else UDP(sport=1000, dport=2000)) / payload)


def ipv6_frame(l4=None, src="2001:db8::1", dst="2001:db8::2", payload=b"v6", ext=None):
    """An IPv6 frame carrying l4 (UDP 1000->2000 if None), after extension header ext if given."""
    from scapy.layers.inet6 import IPv6
    ip = IPv6(src=src, dst=dst)
    if ext is not None:
        ip = ip / ext
    return frame(Ether(src=RULE_SRC, dst=RULE_DST) / ip /
                 (l4 if l4 is not None else UDP(sport=1000, dport=2000)) / payload)


def arp_frame(smac=RULE_SRC, psrc="10.0.0.1", vid=None):
    """A broadcast ARP who-has for 10.0.0.2, tagged with vid if given."""
    head = Ether(src=smac, dst=BROADCAST)
    if vid is not None:
        head = head / Dot1Q(vlan=vid)
    return frame(head / ARP(op=1, hwsrc=smac, psrc=psrc, pdst="10.0.0.2"))


def vlan_frame(vid, pcp=0, inner=None, payload=b"tagged", smac=RULE_SRC, dmac=RULE_DST,
               minimum=60):
    """An IPv4/UDP frame with an 802.1Q tag (vid, pcp) and, if inner is given, a second tag
    inside it; minimum=64 keeps it 60 bytes long once a tag is popped."""
    head = Ether(src=smac, dst=dmac) / Dot1Q(vlan=vid, prio=pcp)
    if inner is not None:
        head = head / Dot1Q(vlan=inner)
    return frame(head / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000, dport=2000) /
                 payload, minimum)


def tcp4_frame(dport=80, sport=40000, flags="A", payload=b"tcp"):
    from scapy.layers.inet import TCP
    return ipv4_frame(TCP(sport=sport, dport=dport, flags=flags), payload=payload)


def udp4_frame(dport=2000, sport=1000, payload=b"udp"):
    return ipv4_frame(UDP(sport=sport, dport=dport), payload=payload)


def rule(rid, actions, match=None, priority=None, table=None):
    """A rule object of docs/rules.md; keys left out take their defaults."""
    r = {"id": rid, "actions": list(actions)}
    if match is not None:
        r["match"] = match
    if priority is not None:
        r["priority"] = priority
    if table is not None:
        r["table"] = table
    return r


def rule_hits(b):
    """rule.list of a PcapBridge as {id: (packets, bytes)}."""
    return {r["id"]: (r["packets"], r["bytes"]) for r in b.call("rule.list")}


def volume(frames):
    """(packets, bytes) of a list of frames, as a rule's counters count them."""
    return (len(frames), sum(map(len, frames)))


def drops(b, port):
    """The non-zero drop counters of a port of a finished PcapBridge."""
    return {r: n for r, n in b.final_stats[port]["drops"].items() if n}


def settled_stats(b):
    """port.stats and the workers' received packets once they stopped moving."""
    def settled():
        def snapshot():
            return b.call("port.stats"), [w["packets"] for w in b.call("stats")["workers"]]

        before = snapshot()
        time.sleep(0.05)
        after = snapshot()
        return after if before == after else None

    return wait_for(settled, WAIT_S, interval=0, what="counters to settle")
