"""End to end with real guests: two QEMU guests (built at test time from Debian packages, see
guest.py) on ferryd's vhost-user ports, behind a stateful firewall: vm1 is inside (it may open
connections), vm2 outside (only traffic of connections vm1 opened comes back). The inside guest
pings the outside one and sends it a TCP stream with busybox nc; the outside guest receives the
stream byte for byte, and its own ping to the inside guest is dropped by the firewall.
"""
import os
import shutil

import pytest

import guest as g
from migration_scene import FIREWALL, GUEST_DIR
from ferry_harness import Ferryd, wait_for

MESSAGE = "ferry-carries-this-stream-end-to-end"


@pytest.fixture(scope="module")
def images():
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is not installed (scripts/setup installs it)")
    os.makedirs(GUEST_DIR, exist_ok=True)
    return g.build(GUEST_DIR)


def test_two_guests_through_a_stateful_firewall(images, tmp_path):
    kernel, initrd = images
    d = Ferryd(extra={"rules": FIREWALL, "conntrack": {"capacity": 4096}})
    d.config["ports"] = [{"name": n, "type": "vhost-user", "path": d.path(f"{n}.sock"),
                          "mode": "server"} for n in ("vm1", "vm2")]
    guests = []
    try:
        d.start()
        outside = g.Guest(kernel, initrd, d.path("vm2.sock"), "52:54:00:00:00:02", "10.0.0.2/24",
                          "nc -l -p 5000; ping -c 2 -W 2 10.0.0.1", str(tmp_path / "vm2.txt"))
        guests.append(outside)
        # The inside guest's fixed sleep covers its own boot, not the outside one's: on a busy
        # host a TCG guest can take long to boot, so the inside one starts once nc listens.
        wait_for(lambda: "FERRY-GUEST-RUN" in outside.output(), 180,
                 what="the outside guest to run its command")
        inside = g.Guest(kernel, initrd, d.path("vm1.sock"), "52:54:00:00:00:01", "10.0.0.1/24",
                         f"sleep 8; ping -c 3 -W 3 10.0.0.2; echo {MESSAGE} | nc 10.0.0.2 5000; "
                         "sleep 8",  # up while the outside guest tries to ping in
                         str(tmp_path / "vm1.txt"))
        guests.append(inside)
        assert inside.wait_exit(120) == 0, inside.output()
        outside.wait_exit(60)
        vm1, vm2 = inside.output(), outside.output()
        assert "3 packets transmitted, 3 packets received" in vm1, vm1
        assert MESSAGE in vm2, vm2  # nc -l prints what it received
        assert "2 packets transmitted, 0 packets received" in vm2, vm2  # the firewall
        drops = {p["name"]: p["drops"] for p in d.call("port.stats")}
        assert drops["vm2"].get("rule_drop", 0) >= 2, drops
        assert any(c["proto"] == "tcp" and c["orig"]["dport"] == 5000
                   for c in d.call("ct.list")["connections"])
    finally:
        for x in guests:
            x.stop()
        d.stop()
