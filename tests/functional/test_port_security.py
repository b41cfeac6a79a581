"""Port security: a VM on a port cannot send from, or claim, another guest's addresses.

ferryd bridges pcap ports with no rules (frames are broadcast, so everything that passes reaches
every port). The `vm` port sends its own traffic and spoofed traffic: another MAC, another IPv4 or
IPv6 source, an ARP reply and a Neighbor Advertisement claiming the victim's address, a Router
Advertisement, and duplicate address detection for the victim's address. The `victim` port only
captures.

Without port security every spoofed frame reaches the victim (the attack works); with the port's
addresses configured (in the config file, or at run time with port.security) only the VM's own
frames do, and each spoofed one is counted under its own drop reason.
"""
import json
import os
import subprocess
import sys
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import (ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6ND_RA, ICMPv6NDOptDstLLAddr,
                                IPv6)
from scapy.layers.l2 import ARP, Ether

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))

from ferry_harness import FERRYCTL, RpcError, wait_for  # noqa: E402
from pcap_util import PcapBridge, assert_frames, pad60  # noqa: E402

VM_MAC, VICTIM_MAC, BCAST = "02:00:00:00:00:01", "02:00:00:00:00:02", "ff:ff:ff:ff:ff:ff"
VM_IP, VICTIM_IP, VM_IP6, VICTIM_IP6 = "10.0.0.5", "10.0.0.6", "2001:db8::5", "2001:db8::6"
VM_LL = "fe80::ff:fe00:1"  # the EUI-64 link-local address of VM_MAC

SECURITY = {"mac": VM_MAC, "ips": [f"{VM_IP}/24", f"{VM_IP6}/64"]}


def own_frames():
    return [pad60(bytes(f)) for f in (
        Ether(src=VM_MAC, dst=BCAST) / IP(src=VM_IP, dst="10.0.0.255") / UDP(sport=1, dport=2),
        Ether(src=VM_MAC, dst=BCAST) / ARP(op=2, hwsrc=VM_MAC, psrc=VM_IP, pdst=VICTIM_IP),
        Ether(src=VM_MAC, dst="33:33:00:00:00:01") / IPv6(src=VM_IP6, dst="ff02::1") /
        ICMPv6ND_NA(tgt=VM_IP6, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=VM_MAC),
        Ether(src=VM_MAC, dst="33:33:00:00:00:01") / IPv6(src=VM_LL, dst="ff02::1") /
        UDP(sport=546, dport=547),
        Ether(src=VM_MAC, dst="33:33:ff:00:00:05") / IPv6(src="::", dst="ff02::1:ff00:5") /
        ICMPv6ND_NS(tgt=VM_IP6),
    )]


# (frame, the drop reason port security counts it under)
def spoofed_frames():
    return [(pad60(bytes(f)), reason) for f, reason in (
        (Ether(src=VICTIM_MAC, dst=BCAST) / IP(src=VICTIM_IP, dst="10.0.0.255") / UDP(),
         "port_sec_mac"),
        (Ether(src=VM_MAC, dst=BCAST) / IP(src=VICTIM_IP, dst="10.0.0.255") / UDP(),
         "port_sec_ip"),
        (Ether(src=VM_MAC, dst="33:33:00:00:00:01") / IPv6(src=VICTIM_IP6, dst="ff02::1") / UDP(),
         "port_sec_ip"),
        (Ether(src=VM_MAC, dst=BCAST) / ARP(op=2, hwsrc=VM_MAC, psrc=VICTIM_IP, pdst=VICTIM_IP),
         "port_sec_arp"),
        (Ether(src=VM_MAC, dst=BCAST) / ARP(op=2, hwsrc=VICTIM_MAC, psrc=VM_IP, pdst=VICTIM_IP),
         "port_sec_arp"),
        (Ether(src=VM_MAC, dst="33:33:00:00:00:01") / IPv6(src=VM_IP6, dst="ff02::1") /
         ICMPv6ND_NA(tgt=VICTIM_IP6, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=VM_MAC),
         "port_sec_nd"),
        (Ether(src=VM_MAC, dst="33:33:ff:00:00:06") / IPv6(src="::", dst="ff02::1:ff00:6") /
         ICMPv6ND_NS(tgt=VICTIM_IP6), "port_sec_nd"),
        (Ether(src=VM_MAC, dst="33:33:00:00:00:01") / IPv6(src=VM_LL, dst="ff02::1") /
         ICMPv6ND_RA(), "port_sec_ra"),
    )]


def counts(reasons):
    out = {}
    for r in reasons:
        out[r] = out.get(r, 0) + 1
    return out


@pytest.fixture
def bridge():
    made = []

    def make(vm_security=None):
        b = PcapBridge()
        b.port("victim")
        frames = own_frames() + [f for f, _ in spoofed_frames()]
        b.port("vm", frames)
        if vm_security is not None:
            b.ferryd.config["ports"][-1]["security"] = vm_security
        made.append(b)
        return b, frames

    yield make
    for b in made:
        b.close()


def test_without_port_security_the_spoofed_frames_reach_the_victim(bridge):
    b, frames = bridge()
    b.start()
    b.wait_counts(rx={"vm": len(frames)}, tx={"victim": len(frames)})
    out = b.finish()
    assert_frames(out["victim"], frames, where="victim")


def test_port_security_from_the_config_drops_each_spoof_under_its_reason(bridge):
    b, frames = bridge(SECURITY)
    b.start()
    spoofed = spoofed_frames()
    want_drops = counts(r for _, r in spoofed)
    b.wait_counts(rx={"vm": len(frames)}, tx={"victim": len(own_frames())},
                  drops={("vm", r): n for r, n in want_drops.items()})
    listed = {p["name"]: p for p in b.call("port.list")}
    assert listed["vm"]["security"] == {"mac": VM_MAC, "ips": SECURITY["ips"],
                                        "allowed_address_pairs": []}
    assert "security" not in listed["victim"]
    out = b.finish()
    assert_frames(out["victim"], own_frames(), where="victim")
    drops = {r: n for r, n in b.final_stats["vm"]["drops"].items() if n}
    assert drops == want_drops


def test_port_security_at_run_time():
    """vm replays a spoofed frame in a loop: it reaches the victim until port.security is set,
    then only counts as a drop, and reaches it again once security is removed."""
    b = PcapBridge()
    b.port("victim", capture=False)
    b.port("vm", [spoofed_frames()[1][0]], infinite=True)
    try:
        b.start()
        stats = lambda name: b.call("port.stats", {"name": name})[0]  # noqa: E731
        assert b.call("port.security", {"name": "vm"}) == {"name": "vm", "security": None}
        wait_growing(lambda: stats("victim")["tx_packets"])

        got = b.call("port.security", {"name": "vm", "security": SECURITY})
        assert got == {"name": "vm", "security": dict(SECURITY, allowed_address_pairs=[])}
        # Every frame read after port.security returned is checked: the victim's count stops.
        reached = stats("victim")["tx_packets"]
        wait_growing(lambda: stats("vm")["drops"]["port_sec_ip"])
        assert stats("victim")["tx_packets"] == reached

        assert b.call("port.security", {"name": "vm", "security": None})["security"] is None
        wait_growing(lambda: stats("victim")["tx_packets"])
    finally:
        b.close()


def wait_growing(read, timeout=10.0):
    """Waits until read() returns more than it did at first (and more than zero)."""
    first = read()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if read() > first:
            return
        time.sleep(0.02)
    raise AssertionError(f"stayed at {first} for {timeout} s")


@pytest.mark.parametrize("security, where", [
    ({"mac": "01:00:5e:00:00:01"}, "params.security.mac"),
    ({"mac": VM_MAC, "ips": ["10.0.0.5/33"]}, "params.security.ips[0]"),
    ({"mac": VM_MAC, "allowed_address_pairs": [{"ip": "10.0.0.5/24"}]},
     "params.security.allowed_address_pairs[0].ip"),
    ({"ips": [VM_IP]}, "params.security.mac"),
    ({"mac": VM_MAC, "bogus": 1}, "params.security.bogus"),
])
def test_bad_security_is_refused_naming_the_key(bridge, security, where):
    b, _ = bridge()
    b.start()
    with pytest.raises(RpcError) as e:
        b.call("port.security", {"name": "vm", "security": security})
    assert e.value.code == -32602 and e.value.message.startswith(where), e.value.message
    with pytest.raises(RpcError) as e:
        b.call("port.security", {"name": "nosuch", "security": SECURITY})
    assert e.value.code == -32002
    assert b.call("port.security", {"name": "vm"})["security"] is None
    b.finish()


def test_observed_addresses_are_kept_beside_the_configured_ones():
    """The guest sends from its fixed IPv4 address, an address of an allowed pair's prefix and
    its link-local IPv6 address, and once from a victim's address (dropped). port.addresses lists
    the configured addresses with their subnets' prefix lengths, marks the ones seen in use, and
    adds the observed ones no entry names: never the spoofed one."""
    security = dict(SECURITY, allowed_address_pairs=[{"ip": "192.168.7.0/24"}])
    sent = [pad60(bytes(f)) for f in (
        Ether(src=VM_MAC, dst=BCAST) / IP(src=VM_IP, dst="10.0.0.255") / UDP(),
        Ether(src=VM_MAC, dst=BCAST) / ARP(op=1, hwsrc=VM_MAC, psrc="192.168.7.33",
                                           pdst="192.168.7.1"),
        Ether(src=VM_MAC, dst="33:33:00:00:00:02") / IPv6(src=VM_LL, dst="ff02::2") / UDP(),
        Ether(src=VM_MAC, dst=BCAST) / IP(src=VICTIM_IP, dst="10.0.0.255") / UDP(),
    )]
    b = PcapBridge()
    b.port("victim", capture=False)
    b.port("vm", sent)
    b.ferryd.config["ports"][-1]["security"] = security
    try:
        b.start()
        b.wait_counts(rx={"vm": len(sent)}, drops={("vm", "port_sec_ip"): 1})
        want = [
            {"address": VM_IP, "prefix_len": 24, "flags": ["configured", "observed"]},
            {"address": VM_IP6, "prefix_len": 64, "flags": ["configured"]},
            {"address": "192.168.7.33", "prefix_len": 24, "flags": ["observed"]},
            {"address": VM_LL, "prefix_len": 64, "flags": ["observed", "link_local"]},
        ]
        got = []

        def listed():
            got[:] = [{k: v for k, v in a.items() if k != "seen_s_ago"}
                      for a in b.call("port.addresses", {"name": "vm"})["addresses"]]
            return len(got) == len(want)

        wait_for(listed, 5.0, what="observed addresses")
        assert sorted(got, key=str) == sorted(want, key=str)
        assert b.call("port.addresses", {"name": "victim"}) == {"name": "victim", "addresses": []}
        with pytest.raises(RpcError) as e:
            b.call("port.addresses", {"name": "nosuch"})
        assert e.value.code == -32002
    finally:
        b.close()


def test_ferryctl_port_security_and_addresses(tmp_path):
    """ferryctl sets port security from JSON or a file, shows it, turns it off, and lists the
    port's addresses; a bad object is ferryd's -32602 (exit 1), a non-object ferryctl's (64)."""
    b = PcapBridge()
    b.port("vm")
    try:
        b.start()

        def ctl(*args):
            return subprocess.run([FERRYCTL, "-s", b.ferryd.socket, "--json", *args],
                                  capture_output=True, text=True, timeout=30)

        r = ctl("port", "security", "vm", json.dumps(SECURITY))
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["security"]["ips"] == SECURITY["ips"]
        r = ctl("port", "addresses", "vm")
        assert r.returncode == 0, r.stderr
        assert [a["address"] for a in json.loads(r.stdout)["addresses"]] == [VM_IP, VM_IP6]
        assert ctl("port", "security", "vm", "off").returncode == 0
        assert json.loads(ctl("port", "security", "vm").stdout)["security"] is None
        f = tmp_path / "sec.json"
        f.write_text(json.dumps(SECURITY))
        assert ctl("port", "security", "vm", f"@{f}").returncode == 0
        assert json.loads(ctl("port", "security", "vm").stdout)["security"]["mac"] == VM_MAC
        bad = ctl("port", "security", "vm", '{"mac": "nope"}')
        assert bad.returncode == 1 and json.loads(bad.stdout)["error"]["code"] == -32602
        assert ctl("port", "security", "vm", "[1]").returncode == 64
    finally:
        b.close()
