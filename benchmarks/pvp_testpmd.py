"""benchmarks/pvp's dpdk-testpmd parts: the generator (two virtio-user ports), testpmd as the
io-forwarding baseline switch (two net_vhost ports), and reading testpmd's text output."""
import os
import re
import time

import ferry_harness as fh


def port_mtu(a):
    """ferryd's port MTU: the default 1500, or what frames of --pkt-size (with FCS) need."""
    return max(1500, a.pkt_size - 4 - 14)


def vhost_socket_paths(workdir):
    """The two vhost-user sockets of a switch that serves them in the run's directory."""
    return [os.path.join(workdir, f"vm{i}.sock") for i in (1, 2)]


_STATS_RX = re.compile(r"RX-packets:\s*(\d+)\s+RX-missed:\s*(\d+)\s+RX-bytes:\s*(\d+)")
_STATS_TX = re.compile(r"TX-packets:\s*(\d+)\s+TX-errors:\s*(\d+)\s+TX-bytes:\s*(\d+)")
_PPS = re.compile(r"Rx-pps:\s*(\d+).*?Tx-pps:\s*(\d+)", re.S)
_MAC = re.compile(r"MAC address:\s*([0-9A-Fa-f:]{17})")


def pmd_port_stats(pmd, port):
    text = pmd.cmd(f"show port stats {port}")
    rx, tx = _STATS_RX.search(text), _STATS_TX.search(text)
    if not rx or not tx:
        raise RuntimeError(f"unexpected `show port stats` output:\n{text}")
    pps = _PPS.search(text)  # testpmd's own rate since the previous `show port stats` of the port
    return {"rx": int(rx.group(1)), "rx_missed": int(rx.group(2)),
            "tx": int(tx.group(1)), "tx_errors": int(tx.group(2)),
            "rx_pps": int(pps.group(1)) if pps else 0, "tx_pps": int(pps.group(2)) if pps else 0}


def pmd_mac(pmd, port):
    m = _MAC.search(pmd.cmd(f"show port info {port}"))
    if not m:
        raise RuntimeError(f"no MAC address for testpmd port {port}")
    return m.group(1)


def burst_summary(text):
    """Per-stream burst stats (--record-burst-stats) of a `stop` output, as short strings."""
    return [" ".join(l.split()) for l in text.splitlines() if "-bursts" in l]


_CYCLES = re.compile(r"(?:busy|total) cycles=(\d+) / total \S+ packets=(\d+)\) at (\d+) MHz")


def fwd_cycles(text):
    """(cycles, packets, tsc MHz) from `show fwd stats all` with --record-core-cycles. In io and
    mac modes testpmd 22.11 does not count empty polls, so cycles / elapsed cycles is the share
    of time spent on packets and cycles / packets the cost of one."""
    m = _CYCLES.search(text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else (0, 0, 0)


class TestpmdSwitch:
    name = "testpmd"
    fwd_thread = "rte-worker"
    socket_paths = staticmethod(vhost_socket_paths)

    def __init__(self, a, sockets, workdir):
        eal = ["-m", "1024", "--log-level", "lib.vhost.*:error", "--log-level", "pmd.net.vhost:error"]
        for i, s in enumerate(sockets):
            eal += ["--vdev", f"net_vhost{i},iface={s},queues=1"]
        self.p = fh.TestPmd([], lcores=f"0@{a.switch_main_cpu},1@{a.switch_cpu}",
                            fwd_args=["--forward-mode=io", "--no-lsc-interrupt", "--no-rmv-interrupt",
                                      "--disable-link-check", "--record-core-cycles"],
                            mbufs=a.mbufs, extra_eal=eal)
        self.sockets = sockets

    def start(self):
        self.p.start()
        fh.wait_for(lambda: all(os.path.exists(s) for s in self.sockets), 10, what="vhost sockets")

    @property
    def pids(self):
        return [self.p.proc.pid] if self.p.proc else []

    def links_up(self):
        return self.p.link_up(0) and self.p.link_up(1)

    def begin(self):
        self.p.cmd("start")

    def counters(self):
        text = self.p.cmd("show fwd stats all")
        acc = text[text.find("Accumulated"):]
        rx = re.search(r"RX-dropped:\s*(\d+)", acc)
        tx = re.search(r"TX-dropped:\s*(\d+)", acc)
        if not rx or not tx:
            raise RuntimeError(f"unexpected `show fwd stats all` output:\n{text}")
        cyc, pk, mhz = fwd_cycles(text)
        return {"t": time.monotonic(), "rx_dropped": int(rx.group(1)), "tx_dropped": int(tx.group(1)),
                "cycles": cyc, "packets": pk, "mhz": mhz}

    @staticmethod
    def delta(c0, c1):
        d = {"tx_full": c1["tx_dropped"] - c0["tx_dropped"], "rx_missed": c1["rx_dropped"] - c0["rx_dropped"]}
        cyc, pk = c1["cycles"] - c0["cycles"], c1["packets"] - c0["packets"]
        wall = (c1["t"] - c0["t"]) * c1["mhz"] * 1e6
        return {"dropped": sum(d.values()), "drops": {k: v for k, v in d.items() if v},
                "worker_busy": round(cyc / wall, 4) if wall else None,
                "busy_cycles_per_packet": round(cyc / pk, 1) if pk else None}

    def finish(self):
        self.p.cmd("stop")
        return {}

    def stop(self):
        self.p.stop()


def generator(a, mode, sockets):
    # --disable-link-check: testpmd would otherwise busy-wait up to 9 s for links at start
    fwd = ["--no-lsc-interrupt", "--no-rmv-interrupt", "--disable-link-check", "--record-burst-stats",
           "--record-core-cycles"]
    if a.pkt_size > 1518:
        # txonly/flowgen build one-segment frames: mbufs that hold one whole (with headroom;
        # testpmd checks --txpkts against the mbuf size given before it), and a port MTU that
        # lets the frames that come back in.
        fwd += [f"--mbuf-size={a.pkt_size + 128}", f"--max-pkt-len={a.pkt_size}"]
    fwd += [f"--txpkts={a.pkt_size - 4}"]
    if mode == "closed":
        fwd += ["--forward-mode=mac"]
    else:
        fwd += ["--forward-mode=flowgen", f"--flowgen-flows={a.flows}"]
    return fh.TestPmd(sockets, lcores=f"0@{a.gen_cpu},1@{a.gen_cpu}", fwd_args=fwd,
                      mbufs=a.gen_mbufs, extra_eal=["--log-level", "pmd.net.virtio.*:error"])


def gen_busy_cycles(gen):
    """(forwarding busy cycles, tsc MHz) of the generator; see fwd_cycles."""
    c = fwd_cycles(gen.cmd("show fwd stats all"))
    return c[0], c[2]


def gen_counters(gen):
    """(time, per-port stats, span): time is the middle of the two commands and span their
    duration, which stays small unless this script itself was starved of cpu."""
    t0 = time.monotonic()
    s = [pmd_port_stats(gen, i) for i in (0, 1)]
    t1 = time.monotonic()
    return (t0 + t1) / 2, s, t1 - t0
