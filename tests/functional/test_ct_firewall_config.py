"""The shipped example config/stateful-firewall.json: it validates, and its rules and conntrack
settings, run with pcap ports of the same names (inside, outside) instead of its vhost-user
ports, make ferryd a stateful firewall: connections opened from `inside` pass, their replies and
related ICMP errors come back, everything unsolicited from outside is dropped.

Its rules name only `inside` (in_port), so `outside` can be replaced between phases by a new pcap
port of the same name (CtBridge.replace_port); `inside` cannot, and a later phase from the inside
network uses a port `inside2`, for which the +new rule does not apply.
"""
import json
import os
import subprocess

import pytest
from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6
from scapy.layers.l2 import Ether

from ferry_harness import FERRYD
from pcap_util import arp_frame, assert_frames

from ct_util import (CLIENT, CLIENT6, INSIDE_MAC, OUTSIDE_MAC, ROUTER, SERVER, SERVER6,
                     bridges, echo, icmp_error, tcp, udp)


@pytest.fixture
def ctb():
    """CtBridge(**kw) maker; the bridges stop after the test (ct_util.bridges)."""
    yield from bridges()

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "config", "stateful-firewall.json")


def load():
    with open(CONFIG) as f:
        return json.load(f)


def test_stateful_firewall_config_is_valid():
    """ferryd --check on the file; its ports, workers and control socket as documented.

    Expects exit 0; two vhost-user ports `inside` and `outside` with sockets under /tmp/ferry/,
    workers [1], the control socket under /tmp/ferry/, zone 1 configured.
    """
    r = subprocess.run([FERRYD, "--config", CONFIG, "--check"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = load()
    assert [(p["name"], p["type"]) for p in cfg["ports"]] == \
        [("inside", "vhost-user"), ("outside", "vhost-user")]
    assert all(p["path"].startswith("/tmp/ferry/") for p in cfg["ports"])
    assert cfg["workers"] == [1]
    assert cfg["control"]["socket"].startswith("/tmp/ferry/")
    assert [z["zone"] for z in cfg["conntrack"]["zones"]] == [1]


def test_stateful_firewall_behaviour(ctb):
    """The file's rules and conntrack section; pcap ports inside and outside.
      1 inside: TCP SYN CLIENT:44000 -> SERVER:80; UDP CLIENT:5100 -> SERVER:53; UDP
                CLIENT:5101 -> SERVER:33434; echo request id 0x42; an ARP request; an IPv6
                neighbour solicitation
        outside (at the same time): SYN SERVER:40000 -> CLIENT:22; UDP SERVER:53 ->
                CLIENT:5999; an echo reply id 0x99; an ACK SERVER:80 -> CLIENT:44999
      2 outside (replaced): the SYN+ACK, the UDP reply, the echo reply, a port unreachable
                from ROUTER quoting the 33434 datagram, a SYN SERVER:40001 -> CLIENT:23
      3 inside2 (a new port): the handshake's ACK; a SYN CLIENT:44001 -> SERVER:80

    Expects everything from inside in phase 1 flooded to outside (nothing learned yet) and
    committed in zone 1 (ports [inside, -]); the four unsolicited frames dropped (rule_drop 4);
    the replies and the related error unicast to inside, the stray SYN dropped; states
    SYN_RECV, UDP_REPLIED, UDP_UNREPLIED, ICMP_REPLIED; in phase 3 the ACK (+est, from any
    port) unicast to outside and the connection ESTABLISHED, the SYN from inside2 dropped (only
    `inside` may open connections). Frames unchanged, byte for byte.
    """
    cfg = load()
    b = ctb(rules=cfg["rules"], conntrack=cfg["conntrack"], capture=())
    ns = bytes(Ether(src=INSIDE_MAC, dst="33:33:ff:00:00:07") /
               IPv6(src=CLIENT6, dst="ff02::1:ff00:7", hlim=255) / ICMPv6ND_NS(tgt=SERVER6) /
               ICMPv6NDOptSrcLLAddr(lladdr=INSIDE_MAC))
    syn = tcp(CLIENT, SERVER, 44000, 80, "S", 1000)
    query = udp(CLIENT, SERVER, 5100, 53, b"query")
    probe = udp(CLIENT, SERVER, 5101, 33434, b"probe")
    ping = echo(CLIENT, SERVER, 0x42)
    arp = arp_frame(smac=INSIDE_MAC, psrc=CLIENT)
    phase1 = [syn, query, probe, ping, arp, ns]
    unsolicited = [tcp(SERVER, CLIENT, 40000, 22, "S", 1), udp(SERVER, CLIENT, 53, 5999, b"x"),
                   echo(SERVER, CLIENT, 0x99, reply=True),
                   tcp(SERVER, CLIENT, 80, 44999, "A", 1, 1)]
    b.port("inside", phase1)
    b.port("outside", unsolicited)
    b.start()
    b.wait_counts(rx={"inside": 6, "outside": 4}, tx={"outside": 6},
                  drops={("outside", "rule_drop"): 4})
    b.wait_macs({(INSIDE_MAC, 0, "inside")})
    states = {(c["proto"], c["orig"]["sport"]): (c["state"], c["zone"], c["ports"])
              for c in b.conns()}
    assert states == {("tcp", 44000): ("SYN_SENT", 1, ["inside", None]),
                      ("udp", 5100): ("UDP_UNREPLIED", 1, ["inside", None]),
                      ("udp", 5101): ("UDP_UNREPLIED", 1, ["inside", None]),
                      ("icmp", 0x42): ("ICMP_UNREPLIED", 1, ["inside", None])}

    synack = tcp(SERVER, CLIENT, 80, 44000, "SA", 5000, 1001)
    answer = udp(SERVER, CLIENT, 53, 5100, b"answer")
    pong = echo(SERVER, CLIENT, 0x42, reply=True)
    unreach = icmp_error(ROUTER, CLIENT, probe)
    replies = [synack, answer, pong, unreach]
    old_outside = b.replace_port("outside", replies + [tcp(SERVER, CLIENT, 40001, 23, "S", 1)])
    assert {r: n for r, n in old_outside["drops"].items() if n} == {"rule_drop": 4}
    b.wait_counts(rx={"outside": 5}, tx={"inside": 4}, drops={("outside", "rule_drop"): 1})
    b.wait_macs({(INSIDE_MAC, 0, "inside"), (OUTSIDE_MAC, 0, "outside")})
    states = {(c["proto"], c["orig"]["sport"]): c["state"] for c in b.conns()}
    assert states == {("tcp", 44000): "SYN_RECV", ("udp", 5100): "UDP_REPLIED",
                      ("udp", 5101): "UDP_UNREPLIED", ("icmp", 0x42): "ICMP_REPLIED"}

    ack = tcp(CLIENT, SERVER, 44000, 80, "A", 1001, 5001)
    b.add_port("inside2", [ack, tcp(CLIENT, SERVER, 44001, 80, "S", 1)])
    b.wait_counts(rx={"inside2": 2}, tx={"outside": 1}, drops={("inside2", "rule_drop"): 1})
    assert b.state(sport=44000) == "ESTABLISHED"
    assert len(b.conns()) == 4
    out = b.finish()
    assert_frames(out["outside@1"], phase1, where="outside (phase 1)")
    assert out["inside"] == replies
    assert out["outside"] == [ack]
    assert out["inside2"] == []
    for port, reasons in (("inside", {}), ("outside", {"rule_drop": 1}),
                          ("inside2", {"rule_drop": 1})):
        assert {r: n for r, n in b.final_stats[port]["drops"].items() if n} == reasons, port
