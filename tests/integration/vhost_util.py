"""Helpers of the integration tests: ferryd with vhost-user ports, dpdk-testpmd virtio-user peers.

A peer is one testpmd process whose virtio-user ports stand for VMs, port i attached to the i-th
socket it was given. Traffic runs in testpmd's "mac" mode (each port forwards what it receives to
its paired port), seeded by "start tx_first". Counters are compared only after the traffic is
stopped and drained, so that no packet is still in a ring and the two sides agree exactly.
"""
import re
import shutil
import time

from ferry_harness import Ferryd, TestPmd, wait_for

BROADCAST = "ff:ff:ff:ff:ff:ff"
MAC_FWD = ["--forward-mode=mac", "--eth-peer=0,02:00:00:00:00:02", "--eth-peer=1,02:00:00:00:00:01"]
COUNTERS = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")


class Procs:
    """Everything a test started; stopped in reverse order at teardown, whatever happened."""

    def __init__(self):
        self.items = []

    def add(self, obj):
        self.items.append(obj)
        return obj

    def stop_all(self):
        while self.items:
            obj = self.items.pop()
            try:
                obj.stop()
            except Exception as e:  # keep stopping the others
                print(f"teardown: stopping {type(obj).__name__} failed: {e}")
            if isinstance(obj, Ferryd):
                # pytest shows captured output only for a failed test: the log is there then.
                print(f"--- ferryd log ({obj.log_path}), last lines:")
                print("\n".join(obj.read_log().splitlines()[-40:]))
                shutil.rmtree(obj.dir, ignore_errors=True)


def vhost_port(d, name, mode="server", **extra):
    """A config port object for a vhost-user socket in the ferryd's directory."""
    return {"name": name, "type": "vhost-user", "path": d.path(f"{name}.sock"), "mode": mode,
            **extra}


def start_ferryd(procs, names=("vm1", "vm2"), mode="server", **kwargs):
    """A running ferryd with one vhost-user port per name (no peer attached yet)."""
    d = Ferryd(**kwargs)
    d.config["ports"] = [vhost_port(d, n, mode) for n in names]
    procs.add(d)
    return d.start()


def start_peer(procs, sockets, fwd_args=MAC_FWD, **kwargs):
    """A testpmd peer with one virtio-user port per socket."""
    return procs.add(TestPmd(list(sockets), fwd_args=fwd_args, **kwargs)).start()


def links(d):
    """{port name: "up" | "down"} from port.list."""
    return {p["name"]: p["link"] for p in d.call("port.list")}


def wait_links(d, state, names=None, timeout=20.0):
    """Waits until port.list shows every named port (default: all) with link state."""
    def ok():
        now = links(d)
        return all(now.get(n) == state for n in (names or now))
    wait_for(ok, timeout, interval=0.1, what=f"links {names or 'all'} {state}; last: {links(d)}")


def peer_mac(pmd, port):
    """The MAC address of a testpmd port, lower case."""
    m = re.search(r"MAC address:\s*([0-9A-Fa-f:]{17})", pmd.cmd(f"show port info {port}"))
    assert m, f"no MAC address in 'show port info {port}'"
    return m.group(1).lower()


def aim_unicast(pmd):
    """Makes each of the two ports of a mac-mode peer send to the other one's MAC address,
    so that ferryd switches known unicast. Returns (mac of port 0, mac of port 1)."""
    mac0, mac1 = peer_mac(pmd, 0), peer_mac(pmd, 1)
    # mac mode sends what port 0 receives out of port 1 to eth-peer 1, and the reverse.
    pmd.cmd(f"set eth-peer 0 {mac1}")
    pmd.cmd(f"set eth-peer 1 {mac0}")
    return mac0, mac1


def drain(pmd, ports=(0, 1), timeout=10.0):
    """Receives what is still in the peer's rings after a stop, so every packet ferryd sent is
    counted by the peer too: receives until the peer's rx counters have not moved for 0.3 s
    (at least 0.5 s, at most timeout, so a starved CPU only makes it slower). Leaves the peer
    in mac mode, stopped."""
    pmd.cmd("set fwd rxonly")
    pmd.cmd("start")
    start = time.monotonic()
    last, still_since = None, time.monotonic()
    while time.monotonic() - start < timeout:
        time.sleep(0.1)
        now = [pmd.port_stats(p)["rx_packets"] for p in ports]
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= 0.3 and time.monotonic() - start >= 0.5:
            break
    pmd.cmd("stop")
    pmd.cmd("set fwd mac")


def run_traffic(pmd, seconds=1.0, ports=(0, 1)):
    """Bounded bidirectional traffic from a mac-mode peer, then stopped and drained."""
    pmd.cmd("start tx_first")
    time.sleep(seconds)
    pmd.cmd("stop")
    drain(pmd, ports)


def snapshot(d, pmd, pairs):
    """Counters of both sides: pairs is [(ferryd port name, peer port index)]."""
    return {name: (d.port_stats(name), pmd.port_stats(idx)) for name, idx in pairs}


def delta(after, before):
    return {k: after[k] - before[k] for k in COUNTERS}


def assert_counters_match(before, after, min_packets=1000):
    """Between two snapshots every ferryd port received exactly what its peer port sent and
    sent exactly what it received, traffic flowed both ways, and ferryd dropped nothing."""
    for name in after:
        f = delta(after[name][0], before[name][0])
        p = delta(after[name][1], before[name][1])
        assert f["rx_packets"] == p["tx_packets"] and f["rx_bytes"] == p["tx_bytes"], \
            f"{name}: ferryd rx {f} != peer tx {p}"
        assert f["tx_packets"] == p["rx_packets"] and f["tx_bytes"] == p["rx_bytes"], \
            f"{name}: ferryd tx {f} != peer rx {p}"
        assert f["rx_packets"] >= min_packets and f["tx_packets"] >= min_packets, \
            f"{name}: too little traffic: ferryd {f}"
        drops = {k: v - before[name][0]["drops"][k] for k, v in after[name][0]["drops"].items()}
        assert not any(drops.values()), f"{name}: ferryd dropped packets: {drops}"
