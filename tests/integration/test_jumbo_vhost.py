"""Jumbo frames across vhost-user: ferryd's vhost-user ports with a dpdk-testpmd virtio-user peer
(mergeable receive buffers, as virtio-user and QEMU negotiate by default).

The frames come from a pcap file, so what arrives can be compared byte for byte with what was
sent: ferryd reads them on a net_pcap port `wire` (added once the peer is up), sends them out
of vhost-user port vm1 to the peer, whose testpmd forwards port 0 to port 1 in io mode (scattered
receive into 2 KiB mbufs, multi-segment transmit), back into ferryd on vm2 (the vhost library
copies each frame into a chain of ferryd's 2 KiB mbufs), and out of the pcap port `out`:

    wire.pcap -> wire -> vm1 -> testpmd port 0 -> port 1 -> vm2 -> out -> out.pcap

Rules steer them: in_port vm2 -> out; frames from SRC_MAC (the pcap's) -> vm1.
"""
import os

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from ferry_harness import Ferryd, wait_for

import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "functional"))
from pcap_util import read_pcap, write_pcap  # noqa: E402
from vhost_util import start_peer, vhost_port, wait_links  # noqa: E402

JUMBO = 9000
SRC_MAC, DST_MAC = "02:00:00:00:0a:01", "02:00:00:00:0a:02"
# io forwarding, frames up to 9,018 bytes (MTU 9000 and a VLAN tag), scattered receive, and
# multi-segment transmit (RTE_ETH_TX_OFFLOAD_MULTI_SEGS) to send the chains it received.
PEER_ARGS = ["--forward-mode=io", f"--max-pkt-len={JUMBO + 18}", "--enable-scatter",
             "--tx-offloads=0x8000"]


def frame(ip_len, n):
    """A UDP/IPv4 frame SRC_MAC -> DST_MAC whose IP packet is ip_len bytes; n numbers it."""
    data = bytes((n + i) & 0xff for i in range(ip_len - 28))
    return bytes(Ether(src=SRC_MAC, dst=DST_MAC) / IP(src="10.9.0.1", dst="10.9.0.2", id=n) /
                 UDP(sport=4000 + n, dport=5000) / data)


def start(procs, mtus):
    """ferryd with vm1, vm2 (vhost-user, MTUs from mtus) and the pcap port `out` (MTU 9000),
    the rules, and a running io-forwarding peer with both links up."""
    d = Ferryd()
    write_pcap(d.path("empty.pcap"), [])
    d.config["ports"] = [
        vhost_port(d, "vm1", mtu=mtus["vm1"]),
        vhost_port(d, "vm2", mtu=mtus["vm2"]),
        {"name": "out", "type": "dpdk", "mtu": JUMBO,
         "devargs": f"net_pcap_out,rx_pcap={d.path('empty.pcap')},tx_pcap={d.path('out.pcap')}"},
    ]
    d.config["rules"] = [
        {"id": 1, "priority": 20, "match": {"in_port": "vm2"}, "actions": ["output:out"]},
        {"id": 2, "priority": 10, "match": {"eth_src": SRC_MAC}, "actions": ["output:vm1"]},
    ]
    procs.add(d)
    d.start()
    pmd = start_peer(procs, [d.path("vm1.sock"), d.path("vm2.sock")], fwd_args=PEER_ARGS,
                     mbufs=16384)
    wait_links(d, "up", ["vm1", "vm2"])
    out = pmd.cmd("start")
    assert "rror" not in out, out
    return d, pmd


def send(d, frames):
    """Adds the pcap port `wire` (MTU 9000) whose frames ferryd reads at once."""
    write_pcap(d.path("wire.pcap"), frames)
    d.call("port.add", {"name": "wire", "type": "dpdk", "mtu": JUMBO,
                        "devargs": f"net_pcap_wire,rx_pcap={d.path('wire.pcap')}"})


def drops(d, port):
    return {k: v for k, v in d.port_stats(port)["drops"].items() if v}


def test_1500_and_9000_byte_frames_cross_vhost_user_both_ways_byte_exact(procs):
    """Sends 20 frames carrying IP packets of 1,500 and 9,000 bytes, alternately, and one of
    9,001 bytes, every port with MTU 9000.

    Expects the 20 out of `out` in order and byte for byte, so both through the peer's
    mergeable buffers and back as chains; the 9,001-byte one dropped as mtu_exceeded on
    `wire`; no other drop anywhere; the peer's counters agreeing (20 frames and their bytes
    each way).
    """
    d, pmd = start(procs, {"vm1": JUMBO, "vm2": JUMBO})
    frames = [frame(1500 if n % 2 else JUMBO, n) for n in range(20)]
    send(d, frames + [frame(JUMBO + 1, 99)])
    wait_for(lambda: d.port_stats("out")["tx_packets"] >= 20, 20, what="frames back out")
    assert drops(d, "wire") == {"mtu_exceeded": 1}
    for p in ("vm1", "vm2", "out"):
        assert drops(d, p) == {}, p
    total = sum(map(len, frames))
    assert pmd.port_stats(0)["rx_packets"] == 20 and pmd.port_stats(0)["rx_bytes"] == total
    assert pmd.port_stats(1)["tx_packets"] == 20 and pmd.port_stats(1)["tx_bytes"] == total
    assert d.port_stats("vm2")["rx_bytes"] == total
    pmd.cmd("stop")
    assert d.stop() == 0
    assert read_pcap(d.path("out.pcap")) == frames


@pytest.mark.parametrize("small", ["vm1", "vm2"])
def test_vhost_user_port_drops_frames_above_its_mtu(procs, small):
    """One vhost-user port has MTU 1500, the rest 9000. Sends 10 frames of 1,500 bytes (IP)
    and 10 of 9,000, alternately.

    Expects the 1,500-byte ones out of `out` byte for byte and the 9,000-byte ones dropped as
    mtu_exceeded on the small port: on the way out to the peer when it is vm1, on the way in
    from the peer when it is vm2 (the peer sent them).
    """
    d, pmd = start(procs, {"vm1": JUMBO, "vm2": JUMBO, small: 1500})
    frames = [frame(1500 if n % 2 else JUMBO, n) for n in range(20)]
    send(d, frames)
    wait_for(lambda: sum(d.port_stats(small)["drops"].values()) >= 10 and
             d.port_stats("out")["tx_packets"] >= 10, 20, what="frames out and drops")
    assert drops(d, small) == {"mtu_exceeded": 10}
    for p in {"vm1", "vm2", "out", "wire"} - {small}:
        assert drops(d, p) == {}, p
    sent_by_peer = pmd.port_stats(1)["tx_packets"]
    assert sent_by_peer == (10 if small == "vm1" else 20)
    pmd.cmd("stop")
    assert d.stop() == 0
    assert read_pcap(d.path("out.pcap")) == [f for f in frames if len(f) < 2000]
