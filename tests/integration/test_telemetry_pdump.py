"""ferryd's DPDK telemetry commands and packet capture with dpdk-dumpcap.

Telemetry: ferryd registers /ferry/stats, /ferry/ports, /ferry/port_stats (parameter: a port
name) and /ferry/workers on DPDK's telemetry socket, /var/run/dpdk/<prefix>/dpdk_telemetry.v2
(SOCK_SEQPACKET: a JSON greeting on connect, then one JSON reply per command sent). Their values
must be those of the control socket.

Capture: dpdk-dumpcap is a DPDK secondary process. It cannot attach to a primary running with
--no-huge, so the capture test needs hugepages; it reserves some for its duration when it can
(root, writable /proc/sys/vm/nr_hugepages), gives them back afterwards, and is skipped otherwise.
"""
import json
import os
import socket
import subprocess
import time

import pytest

from ferry_harness import FERRYCTL, RUNTIME
from vhost_util import (Procs, aim_unicast, assert_counters_match, drain, run_traffic,
                        snapshot, start_ferryd, start_peer, wait_links)

PAIRS = [("vm1", 0), ("vm2", 1)]
DUMPCAP = "/usr/bin/dpdk-dumpcap"
NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"


class Telemetry:
    """A client of one DPDK process's telemetry socket (v2 protocol)."""

    def __init__(self, prefix, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.settimeout(timeout)
        self.sock.connect(os.path.join(RUNTIME, prefix, "dpdk_telemetry.v2"))
        self.greeting = json.loads(self.sock.recv(1024))
        self.max_len = self.greeting["max_output_len"]

    def query(self, command, param=None):
        """The value of the reply ({command: value}); None when the command refused."""
        self.sock.send((command if param is None else f"{command},{param}").encode())
        reply = json.loads(self.sock.recv(self.max_len))
        assert list(reply) == [command], reply
        return reply[command]

    def close(self):
        self.sock.close()


def flatten(obj, prefix=""):
    """port.stats' nested objects as telemetry flattens them: {"drops": {"runt": 0}} ->
    {"drops_runt": 0}."""
    out = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}_"))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.fixture(scope="module")
def switched():
    """ferryd with two ports that switched traffic, now stopped and drained: the counters stay
    still while the tests compare them."""
    procs = Procs()
    try:
        d = start_ferryd(procs)
        pmd = start_peer(procs, [d.path("vm1.sock"), d.path("vm2.sock")])
        wait_links(d, "up")
        aim_unicast(pmd)
        run_traffic(pmd, 0.5)
        yield d
    finally:
        procs.stop_all()


@pytest.fixture
def telemetry(switched):
    t = Telemetry(switched.prefix)
    yield t
    t.close()


def test_greeting_and_commands(switched, telemetry):
    """Expects: the greeting names ferryd's pid, and "/" lists the four ferry commands."""
    assert telemetry.greeting["pid"] == switched.proc.pid
    commands = telemetry.query("/")
    for c in ("/ferry/stats", "/ferry/ports", "/ferry/port_stats", "/ferry/workers"):
        assert c in commands
    assert "port name" in telemetry.query("/help", "/ferry/port_stats")["/ferry/port_stats"]


def test_ports_match_port_list(switched, telemetry):
    """Expects: /ferry/ports is the list of port names port.list gives, in the same order."""
    assert telemetry.query("/ferry/ports") == [p["name"] for p in switched.call("port.list")]


def test_port_stats_match(switched, telemetry):
    """Expects: /ferry/port_stats,<port> carries exactly port.stats' counters (flattened), for
    every port, non-zero; an unknown or missing port name gives no data."""
    for name, _ in PAIRS:
        rpc = flatten(switched.port_stats(name))
        tel = telemetry.query("/ferry/port_stats", name)
        assert tel == rpc
        assert tel["rx_packets"] > 0 and tel["tx_packets"] > 0
    assert telemetry.query("/ferry/port_stats", "nosuchport") is None
    assert telemetry.query("/ferry/port_stats") is None


def test_stats_match(switched, telemetry):
    """Expects: /ferry/stats equals the stats method's switch-wide counters (the per-worker
    ones are /ferry/workers'; uptime ticks between the two queries)."""
    rpc = switched.call("stats")
    tel = telemetry.query("/ferry/stats")
    for key in ("ports", "macs", "mac_capacity", "mac_table_full", "mbufs_in_use",
                "table_generation"):
        assert tel[key] == rpc[key], key
    assert tel["ports"] == 2 and tel["macs"] == 2
    assert abs(tel["uptime_s"] - rpc["uptime_s"]) <= 1
    assert "workers" not in tel


def test_workers_match(switched, telemetry):
    """Expects: /ferry/workers has every worker's counters as flat keys lcore<N>_<counter>
    (DPDK 22.11 telemetry nests only arrays), equal to those of the stats method (traffic is
    stopped, so they do not move)."""
    workers = switched.call("stats")["workers"]
    tel = telemetry.query("/ferry/workers")
    expected = {f"lcore{w['lcore']}_{k}": v for w in workers for k, v in w.items()}
    assert set(tel) == set(expected)
    for w in workers:
        assert tel[f"lcore{w['lcore']}_packets"] == w["packets"] > 0
        assert tel[f"lcore{w['lcore']}_learn_events"] == w["learn_events"]


# --- capture


def _free_hugepages():
    with open("/proc/mounts") as f:
        if not any(line.split()[2] == "hugetlbfs" for line in f if len(line.split()) > 2):
            return 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("HugePages_Free:"):
                return int(line.split()[1])
    return 0


@pytest.fixture
def hugepages():
    """At least 128 free 2 MiB hugepages for ferryd and dumpcap, or a skip saying why. What
    this fixture reserves or mounts it gives back afterwards."""
    want_free = 128
    if _free_hugepages() >= want_free:
        yield
        return
    if os.geteuid() != 0 or not os.access(NR_HUGEPAGES, os.W_OK):
        pytest.skip("hugepages unavailable (not root or nr_hugepages read-only): dpdk-dumpcap "
                    "cannot attach to a --no-huge ferryd; scripts/setup reserves them")
    with open(NR_HUGEPAGES) as f:
        before = int(f.read())
    mounted = False
    try:
        with open(NR_HUGEPAGES, "w") as f:
            f.write(str(before + 256))
        if not any(line.split()[2] == "hugetlbfs" for line in open("/proc/mounts")):
            os.makedirs("/dev/hugepages", exist_ok=True)
            mounted = subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "nodev",
                                      "/dev/hugepages"], capture_output=True).returncode == 0
        free = _free_hugepages()
        if free < want_free:
            pytest.skip(f"hugepages unavailable: only {free} free after asking the kernel for "
                        f"256 more; dpdk-dumpcap cannot attach to a --no-huge ferryd")
        yield
    finally:
        with open(NR_HUGEPAGES, "w") as f:
            f.write(str(before))  # pages still in use become surplus, freed when released
        if mounted:
            subprocess.run(["umount", "/dev/hugepages"], capture_output=True)


@pytest.mark.skipif(not os.access(DUMPCAP, os.X_OK), reason=f"{DUMPCAP} not installed")
def test_dumpcap_captures_port_traffic(hugepages, procs, tmp_path):
    # hugepages first: it is then torn down last, after ferryd has given its pages back.
    """Sends: unicast both ways between vm1 and vm2 while dpdk-dumpcap captures vm1.
    Expects: dumpcap lists both ports, captures at least 200 packets of vm1, each between the
    two peer MACs and in both directions, exits 0, and the capture does not disturb switching:
    afterwards the counters of both sides still agree exactly."""
    from scapy.all import Ether, rdpcap

    d = start_ferryd(procs)
    if "--no-huge" in d.read_log():
        pytest.skip("ferryd fell back to --no-huge (hugepages taken by another process)")
    pmd = start_peer(procs, [d.path("vm1.sock"), d.path("vm2.sock")])
    wait_links(d, "up")
    mac0, mac1 = aim_unicast(pmd)
    before = snapshot(d, pmd, PAIRS)

    listing = subprocess.run([DUMPCAP, f"--file-prefix={d.prefix}", "-D"], capture_output=True,
                             text=True, timeout=30)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "net_vhost_vm1" in listing.stdout and "net_vhost_vm2" in listing.stdout

    pcap = tmp_path / "vm1.pcap"
    pmd.cmd("start tx_first")
    try:
        cap = subprocess.run([DUMPCAP, f"--file-prefix={d.prefix}", "-i", "net_vhost_vm1",
                              "-c", "200", "-P", "-q", "-w", str(pcap)],
                             capture_output=True, text=True, timeout=30)
    finally:
        pmd.cmd("stop")
    assert cap.returncode == 0, cap.stdout + cap.stderr

    packets = rdpcap(str(pcap))
    assert len(packets) >= 200
    pairs = {(p[Ether].src, p[Ether].dst) for p in packets}
    assert pairs == {(mac0, mac1), (mac1, mac0)}, pairs  # received on vm1 and sent out of it

    drain(pmd)
    time.sleep(0.2)
    assert_counters_match(before, snapshot(d, pmd, PAIRS), min_packets=200)


@pytest.mark.skipif(not os.access(DUMPCAP, os.X_OK), reason=f"{DUMPCAP} not installed")
def test_ferryctl_capture_by_port_name(hugepages, procs, tmp_path):
    """Sends: unicast both ways between vm1 and vm2 while `ferryctl capture vm1 file=F
    count=100` runs (ferryctl finds the device and ferryd's file prefix itself).
    Expects: exit 0 and at least 100 packets in F, all between the two peer MACs; `stats`
    reports the file prefix and that ferryd runs on hugepages."""
    from scapy.all import Ether, rdpcap

    d = start_ferryd(procs)
    if "--no-huge" in d.read_log():
        pytest.skip("ferryd fell back to --no-huge (hugepages taken by another process)")
    assert d.call("stats")["eal"] == {"file_prefix": d.prefix, "hugepages": True}
    pmd = start_peer(procs, [d.path("vm1.sock"), d.path("vm2.sock")])
    wait_links(d, "up")
    mac0, mac1 = aim_unicast(pmd)
    pcap = tmp_path / "vm1.pcapng"
    pmd.cmd("start tx_first")
    try:
        cap = subprocess.run([FERRYCTL, "-s", d.socket, "capture", "vm1", f"file={pcap}",
                              "count=100"], capture_output=True, text=True, timeout=60)
    finally:
        pmd.cmd("stop")
    assert cap.returncode == 0, cap.stdout + cap.stderr
    packets = rdpcap(str(pcap))
    assert len(packets) >= 100
    assert {(p[Ether].src, p[Ether].dst) for p in packets} <= {(mac0, mac1), (mac1, mac0)}


def test_ferryctl_capture_says_why_not_without_hugepages(procs):
    """A ferryd started with --no-huge: `ferryctl capture vm1` exits 1 and says that
    dpdk-dumpcap cannot attach to it and what to do; an unknown port is named."""
    d = start_ferryd(procs, eal_extra=("--no-huge", "-m", "512"))
    assert d.call("stats")["eal"]["hugepages"] is False
    r = subprocess.run([FERRYCTL, "-s", d.socket, "capture", "vm1"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "without hugepages (--no-huge)" in r.stderr and "cannot attach" in r.stderr
    r = subprocess.run([FERRYCTL, "-s", d.socket, "capture", "vm1", "bogus=1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 64 and "bogus" in r.stderr
