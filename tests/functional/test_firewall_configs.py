"""Every shipped configuration that is a stateful firewall filters IPv4 and IPv6 alike.

A configuration in config/ is a firewall when a rule commits new connections from one port only
(`ct_state: +trk+new`, `in_port`, a `ct(...commit...)` action): that port is its inside. Its rules
and conntrack section run with pcap ports: the inside port only captures, an outside port sends
unsolicited traffic towards an inside host.

Sends (from outside, nothing ever sent from inside): IPv4 and IPv6 TCP SYNs, UDP datagrams and
ICMP echo requests, and a TCP ACK that belongs to no connection.
Expects: nothing reaches the inside port; every frame dropped by a rule (rule_drop); no
connection tracked.
"""
import glob
import json
import os

import pytest

from ct_util import CLIENT, CLIENT6, SERVER, SERVER6, bridges, echo, tcp, udp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def inside_port(rules):
    """The in_port of the rule that commits new connections, or None: not a firewall."""
    for r in rules:
        m = r.get("match", {})
        if ("+new" in m.get("ct_state", "") and "in_port" in m and
                any(a.startswith("ct(") and "commit" in a for a in r.get("actions", []))):
            return m["in_port"]
    return None


def firewalls():
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "config", "*.json"))):
        with open(path) as f:
            cfg = json.load(f)
        if isinstance(cfg, dict) and inside_port(cfg.get("rules", [])):
            found.append(os.path.basename(path))
    return found


def test_the_shipped_firewalls_are_found():
    assert {"stateful-firewall.json", "migration-host.json"} <= set(firewalls())


@pytest.fixture
def ctb():
    yield from bridges()


@pytest.mark.parametrize("name", firewalls())
def test_unsolicited_ipv4_and_ipv6_are_dropped(ctb, name):
    with open(os.path.join(ROOT, "config", name)) as f:
        cfg = json.load(f)
    inside = inside_port(cfg["rules"])
    b = ctb(rules=cfg["rules"], conntrack=cfg.get("conntrack"), capture=(inside,))
    unsolicited = []
    for server, client in ((SERVER, CLIENT), (SERVER6, CLIENT6)):
        unsolicited += [tcp(server, client, 40000, 22, "S", 1),
                        udp(server, client, 53, 5999, b"x"),
                        echo(server, client, 0x99),
                        tcp(server, client, 80, 44999, "A", 1, 1)]
    b.start()
    b.phase(unsolicited, drops={"rule_drop": len(unsolicited)}, side="wan")
    assert b.conns() == []
    out = b.finish()
    assert out[inside] == [], f"{name}: {len(out[inside])} unsolicited frames reached {inside}"
