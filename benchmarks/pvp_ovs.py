"""benchmarks/pvp's OVS-DPDK parts: a private ovsdb-server and ovs-vswitchd per run, as Debian's
openvswitch-switch-dpdk ships them, with the flows of each --rules."""
import os
import re
import subprocess

import ferry_harness as fh
from pvp_testpmd import port_mtu


# OVS-DPDK as Debian's openvswitch-switch-dpdk ships it. The DPDK build of ovs-vswitchd is called
# by its own path: the package's alternative ranks it below the plain build.
OVS_VSWITCHD = os.environ.get("OVS_VSWITCHD", "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk")
OVSDB_SERVER = "/usr/sbin/ovsdb-server"
OVSDB_TOOL = "/usr/bin/ovsdb-tool"
OVS_VSCTL = "/usr/bin/ovs-vsctl"
OVS_OFCTL = "/usr/bin/ovs-ofctl"
OVS_APPCTL = "/usr/bin/ovs-appctl"
OVS_PKGDATADIR = "/usr/share/openvswitch"
UNSHARE = "/usr/bin/unshare"
OVS_SCHEMA = os.path.join(OVS_PKGDATADIR, "vswitch.ovsschema")


def ovs_missing():
    """Why OVS-DPDK cannot run here (a missing file of the package), or None."""
    for path in (OVS_VSWITCHD, OVSDB_SERVER, OVSDB_TOOL, OVS_VSCTL, OVS_OFCTL, OVS_APPCTL, OVS_SCHEMA):
        if not os.path.exists(path):
            return f"{path} not found (scripts/setup installs openvswitch-switch-dpdk)"
    return None


# The flows of each --rules as OpenFlow for OVS's bridge: the same policy as ferryd's rules.
# ferryd's "normal" is OVS's NORMAL (MAC learning); OVS caches flows (EMC, SMC, megaflows) by
# itself, so portfwd-cached is portfwd.
OVS_FLOWS = {
    "none": ["priority=0,actions=NORMAL"],
    "portfwd": ["priority=10,in_port=vm1,actions=output:vm2",
                "priority=10,in_port=vm2,actions=output:vm1"],
    "firewall": ["table=0,priority=10,ip,in_port=vm1,actions=ct(zone=1,commit,table=1)",
                 "table=0,priority=10,ip,in_port=vm2,actions=ct(zone=1,commit,table=1)",
                 "table=0,priority=0,actions=NORMAL",
                 "table=1,priority=10,in_port=vm1,ct_state=+trk-inv,actions=output:vm2",
                 "table=1,priority=10,in_port=vm2,ct_state=+trk-inv,actions=output:vm1",
                 "table=1,priority=0,actions=drop"],
}
OVS_FLOWS["portfwd-cached"] = OVS_FLOWS["portfwd"]

_PMD_FIELDS = {"packets received": "packets", "idle cycles": "idle", "processing cycles": "busy",
               "simple match hits": "simple_match_hits", "emc hits": "emc_hits", "smc hits": "smc_hits",
               "megaflow hits": "megaflow_hits",
               "miss with success upcall": "upcalls", "miss with failed upcall": "failed_upcalls",
               "packet recirculations": "recirculations"}
# OVS 3.1 cannot read a dpdkvhostuser port's packet counters ("?" in dump-ports, "could not
# retrieve stats" in dpctl/show), but its own drop counters of the port (ovs_tx_failure_drops:
# the guest's ring was full; MTU, QoS) come with OpenFlow 1.4 port stats, read when asked (the
# Interface table's copy lags by seconds).
_OF_PORT = re.compile(r"^\s*port\s+(\S+):", re.M)
_OF_CUSTOM = re.compile(r"(ovs_\w+)=(\d+)")
_DP_LOST = re.compile(r"lookups: hit:\d+ missed:\d+ lost:(\d+)")


def hugepages_usable():
    """Whether a DPDK process here would run on hugepages: hugetlbfs mounted and at least as many
    free 2 MiB pages as ferryd asks for before it falls back to --no-huge (control/eal_setup.cc)."""
    with open("/proc/mounts") as f:
        if not any(line.split()[2:3] == ["hugetlbfs"] for line in f):
            return False
    with open("/proc/meminfo") as f:
        free = next((int(l.split()[1]) for l in f if l.startswith("HugePages_Free:")), 0)
    return free >= 64


class OvsSwitch:
    """A private OVS-DPDK per run: its own ovsdb-server and ovs-vswitchd (started and stopped by
    pid) with db, run, log and etc directories under the run's workdir, one netdev bridge with two
    dpdkvhostuser ports (OVS is the vhost-user server; the sockets are in its run directory) and
    one PMD thread on --switch-cpu. ovs-vswitchd runs in a network namespace of its own: the
    netdev datapath makes tap devices (ovs-netdev, the bridge's internal port) that would clash
    with another run's."""
    name = "ovs"
    fwd_thread = "pmd"  # PMD threads are named pmd-c<core>/id:<n>
    bridge = "pvpbr"

    def __init__(self, a, sockets, workdir):
        self.a = a
        self.dir = os.path.join(workdir, "ovs")
        self.run = os.path.join(self.dir, "run")
        self.db = os.path.join(self.dir, "db", "conf.db")
        self.log = os.path.join(self.dir, "log")
        self.sockets = sockets
        self.prefix = fh.unique_prefix("o")
        self.env = dict(os.environ, OVS_RUNDIR=self.run, OVS_DBDIR=os.path.dirname(self.db),
                        OVS_LOGDIR=self.log, OVS_SYSCONFDIR=os.path.join(self.dir, "etc"),
                        OVS_PKGDATADIR=OVS_PKGDATADIR)
        self.dbserver = self.vswitchd = None
        self.outputs = []

    @staticmethod
    def socket_paths(workdir):
        """dpdkvhostuser ports make their sockets in OVS's run directory, named after the port."""
        return [os.path.join(workdir, "ovs", "run", n) for n in ("vm1", "vm2")]

    def _tool(self, *args, timeout=30):
        r = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}\n"
                               f"{self.read_log()}")
        return r.stdout

    def vsctl(self, *args, timeout=60):
        return self._tool(OVS_VSCTL, f"--db=unix:{self.run}/db.sock", f"--timeout={timeout}", *args,
                          timeout=timeout + 10)

    def appctl(self, *args):
        return self._tool(OVS_APPCTL, "-t", os.path.join(self.run, "ovs-vswitchd.ctl"), *args)

    def read_log(self):
        """The end of ovs-vswitchd's log and of its output (where unshare's errors go)."""
        text = ""
        for name in ("ovs-vswitchd.log", "ovs-vswitchd.out"):
            try:
                with open(os.path.join(self.log, name)) as f:
                    text += f.read()[-3000:]
            except OSError:
                pass
        return text

    def _spawn(self, name, args):
        out = open(os.path.join(self.log, f"{name}.out"), "w")
        self.outputs.append(out)
        cpu = self.a.switch_main_cpu
        # The main lcore's cpu, as --lcores 0@main gives ferryd and testpmd: every thread but the
        # PMD (which pins itself to pmd-cpu-mask) stays there.
        return fh.spawn(args, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))

    def start(self):
        for d in (self.run, os.path.dirname(self.db), self.log, self.env["OVS_SYSCONFDIR"]):
            os.makedirs(d)
        self._tool(OVSDB_TOOL, "create", self.db, OVS_SCHEMA)
        self.dbserver = self._spawn("ovsdb-server", [
            OVSDB_SERVER, self.db, f"--remote=punix:{self.run}/db.sock",
            f"--pidfile={self.run}/ovsdb-server.pid", f"--unixctl={self.run}/ovsdb-server.ctl",
            f"--log-file={self.log}/ovsdb-server.log", "-vconsole:off", "--no-chdir"])
        fh.wait_for(lambda: os.path.exists(f"{self.run}/db.sock"), 10, what="ovsdb-server socket")
        a = self.a
        eal = ["--file-prefix=" + self.prefix, "--no-pci", "--log-level=lib.eal:error"]
        if not hugepages_usable():
            # as ferryd falls back to it; --legacy-mem (which --no-huge implies) keeps OVS from
            # adding --in-memory, which EAL refuses beside it
            eal += ["--no-huge", "-m", "1024", "--legacy-mem"]
        self.vsctl("--no-wait", "init")
        self.vsctl("--no-wait", "set", "Open_vSwitch", ".",
                   "other_config:dpdk-init=true",
                   f'other_config:dpdk-extra="{" ".join(eal)}"',
                   f"other_config:dpdk-lcore-mask={1 << a.switch_main_cpu:#x}",
                   f"other_config:pmd-cpu-mask={1 << a.switch_cpu:#x}",
                   # Mempools sized per port from its queues (~20k mbufs each), near --mbufs,
                   # instead of one shared pool of up to 256k mbufs.
                   "other_config:per-port-memory=true")
        self.vswitchd = self._spawn("ovs-vswitchd", [
            UNSHARE, "--net", "--", OVS_VSWITCHD, f"unix:{self.run}/db.sock",
            f"--pidfile={self.run}/ovs-vswitchd.pid", f"--unixctl={self.run}/ovs-vswitchd.ctl",
            f"--log-file={self.log}/ovs-vswitchd.log", "-vconsole:off", "--no-chdir"])

        def dpdk_up():
            self._alive()
            try:
                out = self.vsctl("get", "Open_vSwitch", ".", "dpdk_initialized", timeout=5)
            except (RuntimeError, subprocess.TimeoutExpired):
                return False  # asked again until wait_for's own limit
            return out.strip() == "true"
        fh.wait_for(dpdk_up, 60, 0.2, "ovs-vswitchd DPDK init")
        mtu = port_mtu(a)
        self.vsctl("add-br", self.bridge, "--", "set", "Bridge", self.bridge, "datapath_type=netdev",
                   "fail_mode=secure",
                   "--", "add-port", self.bridge, "vm1", "--", "set", "Interface", "vm1",
                   "type=dpdkvhostuser", "ofport_request=1", f"mtu_request={mtu}",
                   "--", "add-port", self.bridge, "vm2", "--", "set", "Interface", "vm2",
                   "type=dpdkvhostuser", "ofport_request=2", f"mtu_request={mtu}")
        flows = os.path.join(self.dir, "flows.txt")
        with open(flows, "w") as f:
            f.write("\n".join(OVS_FLOWS[a.rules]) + "\n")
        self._tool(OVS_OFCTL, "del-flows", self.bridge)
        self._tool(OVS_OFCTL, "add-flows", self.bridge, flows)
        fh.wait_for(lambda: all(os.path.exists(s) for s in self.sockets), 10, what="vhost sockets")

    @property
    def pids(self):
        return [p.pid for p in (self.vswitchd, self.dbserver) if p is not None]

    def _alive(self):
        if self.vswitchd.poll() is not None:
            raise RuntimeError(f"ovs-vswitchd exited with {self.vswitchd.returncode}:\n"
                               f"{self.read_log()}")

    def links_up(self):
        """Both vhost ports up; False (ask again) also when a loaded host made ovs-vsctl time
        out. Raises when ovs-vswitchd has exited."""
        self._alive()
        try:
            out = self.vsctl("--bare", "--columns=link_state", "list", "Interface", "vm1", "vm2",
                             timeout=5)
        except (RuntimeError, subprocess.TimeoutExpired):
            return False
        return out.split() == ["up", "up"]

    def begin(self):
        self.appctl("dpif-netdev/pmd-stats-clear")

    def counters(self):
        """OVS's counters since pmd-stats-clear: the PMD's (packets, processing and idle cycles,
        where packets were classified) and the vhost ports' drops. Raises when OVS cannot say."""
        pmd = {v: 0 for v in _PMD_FIELDS.values()}
        text = self.appctl("dpif-netdev/pmd-stats-show")
        # Only the PMD thread's block: the main thread's polls no vhost port here.
        block = text.split("main thread")[0]
        for line in block.splitlines():
            k, _, v = line.strip().partition(":")
            if k in _PMD_FIELDS and v.split():
                pmd[_PMD_FIELDS[k]] += int(float(v.split()[0]))
        drops = {}
        text = self._tool(OVS_OFCTL, "--no-names", "-O", "OpenFlow14", "dump-ports", self.bridge)
        heads = list(_OF_PORT.finditer(text))
        for h, nxt in zip(heads, heads[1:] + [None]):
            if h.group(1).rstrip(":") not in ("1", "2"):  # vm1, vm2 (ofport_request)
                continue
            for k, v in _OF_CUSTOM.findall(text[h.end():nxt.start() if nxt else len(text)]):
                k = k[len("ovs_"):]
                drops[k] = drops.get(k, 0) + int(v)
        lost = _DP_LOST.search(self.appctl("dpctl/show"))
        drops["upcall_lost"] = int(lost.group(1)) if lost else 0
        return {"pmd": pmd, "drops": drops}

    @staticmethod
    def delta(c0, c1):
        """The window's figures, with the keys the other switches report (dropped, drops,
        worker_busy, busy_cycles_per_packet) and OVS's own under ovs_pmd."""
        d = {k: c1["pmd"][k] - c0["pmd"][k] for k in c1["pmd"]}
        drops = {k: c1["drops"][k] - c0["drops"].get(k, 0) for k in c1["drops"]}
        d["tx_retries"] = drops.pop("tx_retries", 0)  # retried, not lost
        busy, idle, pk = d["busy"], d["idle"], d["packets"]
        return {"dropped": sum(drops.values()), "drops": {k: v for k, v in drops.items() if v},
                "worker_busy": round(busy / (busy + idle), 4) if busy + idle else None,
                "busy_cycles_per_packet": round(busy / pk, 1) if pk else None,
                "ovs_pmd": {k: v for k, v in d.items() if k not in ("busy", "idle")}}

    def finish(self):
        if self.a.rules != "firewall":
            return {}
        m = re.search(r"Total:\s*(\d+)", self.appctl("dpctl/ct-stats-show"))
        return {"connections": int(m.group(1))} if m and int(m.group(1)) else {}

    def stop(self):
        # ovs-vswitchd first: on SIGTERM it removes its vhost sockets, pid file and control socket.
        for proc in (self.vswitchd, self.dbserver):
            if proc is not None:
                fh.stop_process(proc)
        for out in self.outputs:
            out.close()
        self.outputs = []
        fh.cleanup_prefix(self.prefix)
