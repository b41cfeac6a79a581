"""benchmarks/pvp's ferry parts: ferryd as the switch under test, and the rules of each --rules
(the same policy OVS gets as OpenFlow flows, pvp_ovs.OVS_FLOWS)."""
import os
import random
import signal
import subprocess

import ferry_harness as fh
from pvp_host import renice
from pvp_testpmd import port_mtu, vhost_socket_paths

HERE = os.path.dirname(os.path.abspath(__file__))


PORTFWD_RULES = [
    {"id": 1, "priority": 10, "match": {"in_port": "vm1"}, "actions": ["output:vm2"]},
    {"id": 2, "priority": 10, "match": {"in_port": "vm2"}, "actions": ["output:vm1"]},
]
# A stateful firewall in which both VMs are inside: whatever a VM opens is committed (one ct
# action per packet, with commit), the other VM's packets of that connection pass, invalid ones
# and anything else are dropped. The flowgen generator sends the same 5-tuples from both ports
# and never a reply, so every IPv4 packet costs one conntrack lookup and --flows is the number
# of connections. (config/stateful-firewall.json is the inside/outside variant: its established
# traffic costs the same single lookup per packet.)
FIREWALL_RULES = [
    {"id": 1, "priority": 10, "match": {"in_port": "vm1", "eth_type": "ipv4"},
     "actions": ["ct(zone=1,commit,table=1)"]},
    {"id": 2, "priority": 10, "match": {"in_port": "vm2", "eth_type": "ipv4"},
     "actions": ["ct(zone=1,commit,table=1)"]},
    {"id": 3, "priority": 0, "actions": ["normal"]},
    {"id": 10, "table": 1, "priority": 10, "match": {"in_port": "vm1", "ct_state": "+trk-inv"},
     "actions": ["output:vm2"]},
    {"id": 11, "table": 1, "priority": 10, "match": {"in_port": "vm2", "ct_state": "+trk-inv"},
     "actions": ["output:vm1"]},
    {"id": 19, "table": 1, "priority": 0, "actions": ["drop"]},
]
# The firewall with payload inspection of every packet that passes it. The depth is ferryd's
# largest, so that no connection stops being scanned during the window.
DPI_RULES = FIREWALL_RULES[:3] + [
    {"id": 10, "table": 1, "priority": 10, "match": {"in_port": "vm1", "ct_state": "+trk-inv"},
     "actions": ["dpi", "output:vm2"]},
    {"id": 11, "table": 1, "priority": 10, "match": {"in_port": "vm2", "ct_state": "+trk-inv"},
     "actions": ["dpi", "output:vm1"]},
    FIREWALL_RULES[-1]]


def dpi_patterns(n, seed=7):
    """n IDS-like signatures (literals, classes, quantifiers; some caseless), deterministic.
    None matches the generator's payload, so every packet is scanned to its end."""
    rng = random.Random(seed)
    words = ["admin", "passwd", "select", "union", "script", "eval", "shell", "login", "token",
             "cmd", "exec", "upload", "config", "backup", "wp-", "php", "cgi", "xss", "sql"]
    out = []
    for i in range(n):
        w = rng.choice(words) + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz")
                                        for _ in range(rng.randint(4, 10)))
        kind = i % 4
        regex = (w if kind == 0 else f"/{w}/[a-z]+\\.php\\?id=[0-9]+" if kind == 1
                 else f"{w}\\s*=\\s*[0-9a-f]{{8}}" if kind == 2 else f"{w}.{{0,16}}{rng.choice(words)}")
        p = {"id": i + 1, "regex": regex, "action": "alert"}
        if i % 5 == 0:
            p["flags"] = ["caseless"]
        out.append(p)
    return out


# More distinct masks than ferryd looks up directly (Classifier::kDirectSubtables), none of
# which the generator's traffic matches.
CACHE_FORCING_RULES = [
    {"id": 100 + n, "priority": 20, "match": {"eth_type": "ipv4", "ip_dst": f"192.0.2.0/{24 + n}"},
     "actions": ["drop"]} for n in range(5)]


class FerrySwitch:
    name = "ferry"
    fwd_thread = "rte-worker"

    socket_paths = staticmethod(vhost_socket_paths)

    def __init__(self, a, sockets, workdir):
        ports = [{"name": n, "type": "vhost-user", "path": s, "mode": "server",
                  "mtu": port_mtu(a)} for n, s in zip(("vm1", "vm2"), sockets)]
        extra = {"idle_backoff": {"enabled": False}, "mbufs": a.mbufs}
        if a.rules == "portfwd":
            extra["rules"] = PORTFWD_RULES
        elif a.rules == "portfwd-cached":
            extra["rules"] = PORTFWD_RULES + CACHE_FORCING_RULES
        elif a.rules == "firewall":
            extra["rules"] = FIREWALL_RULES
            extra["conntrack"] = {"capacity": max(262144, 2 * a.flows)}
        elif a.rules == "dpi":
            extra["rules"] = DPI_RULES
            extra["conntrack"] = {"capacity": max(262144, 2 * a.flows)}
            extra["dpi"] = {"depth_kib": 1 << 20, "streams_per_worker": max(16384, 2 * a.flows),
                            "memory_mb": 4096, "patterns": dpi_patterns(a.dpi_patterns)}
        if a.flow_cache:
            extra["flow_cache"] = {"entries": a.flow_cache}
        self.churn = a.churn
        self.churn_thread = None
        self.d = fh.Ferryd(ports=ports, workers=(1,), lcores=f"0@{a.switch_main_cpu},1@{a.switch_cpu}",
                           extra=extra, tmpdir=workdir)

    def start(self):
        self.d.start()

    @property
    def pids(self):
        return [self.d.proc.pid] if self.d.proc else []

    def links_up(self):
        return all(p.get("link") == "up" for p in self.d.call("port.list"))

    def begin(self, nice=0):
        if self.churn:
            # A process of its own, so --nice reaches it: a starved client would measure itself.
            self.churn_thread = fh.spawn([os.path.join(HERE, "rule_churn"), self.d.socket,
                                          "--rate", str(self.churn)],
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if nice:
                renice(self.churn_thread.pid, nice)

    def counters(self):
        drops = {}
        for p in self.d.call("port.stats"):
            for k, v in p["drops"].items():
                drops[k] = drops.get(k, 0) + v
        w = self.d.call("stats")["workers"][0]
        return {"drops": drops, "busy": w["busy_cycles"], "idle": w["idle_cycles"],
                "packets": w["packets"], "learn_events": w["learn_events"],
                "learn_ring_full": w["learn_ring_full"],
                "cache_hits": w.get("flow_cache_hits", 0), "cache_misses": w.get("flow_cache_misses", 0),
                "iterations": w.get("iterations", 0)}

    @staticmethod
    def delta(c0, c1):
        drops = {k: c1["drops"][k] - c0["drops"].get(k, 0) for k in c1["drops"]}
        busy, idle = c1["busy"] - c0["busy"], c1["idle"] - c0["idle"]
        pk = c1["packets"] - c0["packets"]
        return {"dropped": sum(drops.values()),
                "drops": {k: v for k, v in drops.items() if v},
                "worker_busy": round(busy / (busy + idle), 4) if busy + idle else None,
                "busy_cycles_per_packet": round(busy / pk, 1) if pk else None,
                "learn_events": c1["learn_events"] - c0["learn_events"],
                "learn_ring_full": c1["learn_ring_full"] - c0["learn_ring_full"],
                "flow_cache_hits": c1["cache_hits"] - c0["cache_hits"],
                "flow_cache_misses": c1["cache_misses"] - c0["cache_misses"],
                "packets_per_iteration": round(pk / (c1["iterations"] - c0["iterations"]), 1)
                if c1["iterations"] > c0["iterations"] else None}

    def finish(self):
        if self.churn_thread is None:
            ct = self.d.call("ct.stats")
            out = {"connections": ct["connections"]} if ct["connections"] else {}
            dpi = self.d.call("dpi.stats")
            if dpi["pattern_count"]:
                out["dpi"] = {k: dpi[k] for k in ("pattern_count", "streams_in_use", "packets",
                                                   "bytes", "matches", "streams_exhausted",
                                                   "depth_reached", "gaps")}
            return out
        self.churn_thread.send_signal(signal.SIGTERM)
        out_text, _ = self.churn_thread.communicate(timeout=10)
        lines = out_text.strip().splitlines()
        if self.churn_thread.returncode != 0 or not lines or not lines[-1].isdigit():
            return {"error": "churn: " + out_text.strip()[-500:]}
        return {"churn_changes_per_s": int(lines[-1])}

    def stop(self):
        self.d.stop()
