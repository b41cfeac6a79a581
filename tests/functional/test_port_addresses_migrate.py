"""A port's observed addresses move with its state: ferryd A sees its guest send from its fixed
address, an address of an allowed pair's prefix and its link-local IPv6 address (and drops a
spoofed one); `migrate.save` writes the port's stream and ferryd B takes it with `migrate.load`.
B lists the addresses A observed, as observed, filtered by B's own port security: an address B's
configuration does not allow the guest is not taken. The configured ones are B's to say.
"""
import os
import sys

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ferry_harness import wait_for  # noqa: E402
from pcap_util import PcapBridge, pad60  # noqa: E402
from test_port_security import BCAST, SECURITY, VICTIM_IP, VM_IP, VM_IP6, VM_LL, VM_MAC  # noqa: E402

PAIR_IP = "192.168.7.33"
SOURCE_SECURITY = dict(SECURITY, allowed_address_pairs=[{"ip": "192.168.7.0/24"}])


def sent():
    return [pad60(bytes(f)) for f in (
        Ether(src=VM_MAC, dst=BCAST) / IP(src=VM_IP, dst="10.0.0.255") / UDP(),
        Ether(src=VM_MAC, dst=BCAST) / ARP(op=1, hwsrc=VM_MAC, psrc=PAIR_IP, pdst="192.168.7.1"),
        Ether(src=VM_MAC, dst="33:33:00:00:00:02") / IPv6(src=VM_LL, dst="ff02::2") / UDP(),
        Ether(src=VM_MAC, dst=BCAST) / IP(src=VICTIM_IP, dst="10.0.0.255") / UDP(),
    )]


def addresses(b, port="vm"):
    """port.addresses without the age: {address: (prefix_len, sorted flags)}."""
    return {a["address"]: (a["prefix_len"], sorted(a["flags"]))
            for a in b.call("port.addresses", {"name": port})["addresses"]}


def saved_stream(tmp_path, port):
    """ferryd A, its guest observed on vm; the stream migrate.save wrote (port: one port's)."""
    a = PcapBridge()
    a.port("other", capture=False)
    a.port("vm", sent(), capture=False)
    a.ferryd.config["ports"][-1]["security"] = SOURCE_SECURITY
    try:
        a.start()
        a.wait_counts(rx={"vm": 4}, drops={("vm", "port_sec_ip"): 1})
        wait_for(lambda: len(addresses(a)) == 4, 5.0, what="observed addresses on A")
        path = str(tmp_path / "vm.bin")
        params = {"file": path} if port is None else {"file": path, "port": port}
        a.call("migrate.save", params)
        return path
    finally:
        a.close()


def target(security):
    b = PcapBridge()
    b.port("other", capture=False)
    b.port("vm", capture=False)
    if security is not None:
        b.ferryd.config["ports"][-1]["security"] = security
    return b.start()


def test_observed_addresses_move_filtered_by_the_targets_security(tmp_path):
    path = saved_stream(tmp_path, "vm")
    # B allows the fixed addresses only: the pair's address A saw is not taken.
    b = target(SECURITY)
    try:
        before = addresses(b)
        assert before == {VM_IP: (24, ["configured"]), VM_IP6: (64, ["configured"])}
        loaded = b.call("migrate.load", {"file": path})
        assert loaded["addresses"] == 2, loaded
        assert addresses(b) == {
            VM_IP: (24, ["configured", "observed"]),
            VM_IP6: (64, ["configured"]),
            VM_LL: (64, ["link_local", "observed"]),
        }
        assert addresses(b, "other") == {}
    finally:
        b.close()


def test_a_target_without_port_security_takes_every_observed_address(tmp_path):
    path = saved_stream(tmp_path, None)  # the whole switch: every port's addresses
    b = target(None)
    try:
        assert addresses(b) == {}
        assert b.call("migrate.load", {"file": path})["addresses"] == 3
        assert addresses(b) == {
            VM_IP: (32, ["observed"]),
            PAIR_IP: (32, ["observed"]),
            VM_LL: (64, ["link_local", "observed"]),
        }
    finally:
        b.close()
