"""rte_flow offload falling back to software on a net_tap port.

net_tap offloads through the kernel's tc flower classifier; this machine's kernel refuses those
rules, so a rule on the tap port must stay in software, say why in rule.list, and still be
enforced. Sends: UDP datagrams from the kernel side of the tap (the interface moved into a network
namespace of its own, so the host's own traffic stays off it), to port 9999 (the rule's) and to
port 8888. Expects: rule.list shows the rule's offload state starting with "software", the 9999
datagrams count as drops.rule_drop, the 8888 ones reach ferryd without being dropped by the rule.
"""
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from ferry_harness import Ferryd, tap_netns_unavailable, wait_for  # noqa: E402

def _why_unavailable():
    """The reason this test cannot run here, or None."""
    why = tap_netns_unavailable()
    if why is None and subprocess.run([sys.executable, "-c", "import scapy.all"],
                                      capture_output=True).returncode:
        why = f"scapy is not importable by {sys.executable}"
    return why


_UNAVAILABLE = _why_unavailable()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")

SEND = """
import sys
from scapy.all import Ether, IP, UDP, sendp
iface, dport, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
frame = (Ether(src="02:00:00:00:aa:01", dst="02:00:00:00:aa:02") /
         IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=4000, dport=dport) / (b"x" * 32))
sendp(frame, iface=iface, count=count, verbose=False)
"""


def ns_run(ns, *args):
    subprocess.run(["ip", "netns", "exec", ns, *args], check=True, capture_output=True)


def send_udp(ns, iface, dport, count):
    ns_run(ns, sys.executable, "-c", SEND, iface, str(dport), str(count))


@pytest.fixture
def tap_ferryd():
    """ferryd with one net_tap port whose kernel side sits in a namespace; yields (d, ns, iface)."""
    iface = f"ftap{os.getpid() % 100000}"
    ns = f"ferry-offload-{os.getpid()}"
    d = Ferryd(ports=[{"name": "tap", "type": "dpdk", "devargs": f"net_tap0,iface={iface}"}])
    d.start()
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
        subprocess.run(["ip", "link", "set", iface, "netns", ns], check=True, capture_output=True)
        # No IPv6 autoconfiguration noise on the link; best effort.
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        f"net.ipv6.conf.{iface}.disable_ipv6=1"], capture_output=True)
        ns_run(ns, "ip", "link", "set", iface, "up")
        yield d, ns, iface
    finally:
        d.stop()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_tap_rule_falls_back_to_software_and_is_enforced(tap_ferryd):
    d, ns, iface = tap_ferryd
    d.call("rule.add", {"rule": {"id": 1, "priority": 10,
                                 "match": {"in_port": "tap", "eth_type": "ipv4",
                                           "ip_proto": "udp", "l4_dst": 9999},
                                 "actions": ["drop"]}})
    rules = d.call("rule.list")
    assert [r["id"] for r in rules] == [1]
    offload = rules[0]["offload"]
    assert offload.startswith("software"), offload
    print(f"net_tap offload state: {offload}")

    before = d.port_stats("tap")
    send_udp(ns, iface, 9999, 5)
    wait_for(lambda: d.port_stats("tap")["drops"]["rule_drop"] - before["drops"]["rule_drop"] >= 5,
             10, what="5 rule drops")
    after_drop = d.port_stats("tap")
    assert after_drop["drops"]["rule_drop"] - before["drops"]["rule_drop"] == 5
    assert d.call("rule.list")[0]["packets"] == 5

    send_udp(ns, iface, 8888, 5)
    wait_for(lambda: d.port_stats("tap")["rx_packets"] - after_drop["rx_packets"] >= 5, 10,
             what="the 8888 datagrams to reach ferryd")
    final = d.port_stats("tap")
    # One port: the other datagrams are dropped for want of a destination or rule, not by it.
    assert final["drops"]["rule_drop"] == after_drop["drops"]["rule_drop"]
    assert d.call("rule.list")[0]["packets"] == 5
