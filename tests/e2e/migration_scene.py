"""Two hosts on one machine for live-migrating a real guest: ferryd A and ferryd B, each with a
vhost-user port `vm1` for the guest and an uplink (a DPDK tap port) on one L2 segment, a Linux
bridge in a network namespace of its own. The far end of the guest's connections lives on that
bridge (10.0.0.2), outside both switches' stateful firewalls: the guest (10.0.0.1) may open
connections, and only their return traffic comes in. So after a move, the target ferryd must
already track the guest's connections, or their return traffic is dropped.

A guest may have a second NIC (Scene(guest_ports=2)): port vm2 on each host, inside the firewall
like vm1, the guest's eth1 (10.0.1.1) on another subnet, whose peer (10.0.1.2) is on the same
bridge.

Used by tests/e2e/test_live_migration.py and by scripts/demo. tests/e2e/test_live_upgrade.py
uses host A alone (labels=("a",)), upgrades its ferryd in place (Scene.upgrade) and gives it an
uplink that outlives a ferryd (uplink="veth", as a NIC does) and a vhost-user port in either mode.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
import ferry_harness as fh  # noqa: E402
import guest as g  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
VM_MIGRATE = os.path.join(fh.ROOT, "scripts", "vm-migrate")
GUEST_DIR = os.path.join(fh.BUILD, "e2e-guest")
PEER_IP = "10.0.0.2"
# The peer's address on the bridge, set rather than inherited: a Linux bridge created without
# one takes the lowest address among its ports and changes it when that port leaves. A
# ferryd that dies takes its tap off the bridge, and when that tap had the lowest address the
# peer moved to another MAC under the guest's ARP entry: its segments went to a MAC nobody
# had until the entry expired and the guest asked again (about 60 s).
PEER_MAC = "02:fe:00:00:00:02"
GUEST_IP = "10.0.0.1"
GUEST_MAC = "52:54:00:00:00:01"
STREAM_PORT = 5000
# The guest's second NIC (Scene(guest_ports=2)): port vm2, its own subnet and peer address on
# the bridge, and the port its stream goes to.
GUEST2_IP = "10.0.1.1"
GUEST2_MAC = "52:54:00:00:00:02"
PEER2_IP = "10.0.1.2"
STREAM2_PORT = 5001

# A host's configuration for moving VMs, the same on both hosts: a stateful firewall where the
# guest's port vm1 is inside (it may open connections) and every other port outside (only the
# return traffic of connections vm1 opened comes in). The scene takes its rules and gives each
# host its own ports, sockets, EAL prefix and table size.
HOST_CONFIG = os.path.join(fh.ROOT, "config", "migration-host.json")
with open(HOST_CONFIG) as _f:
    FIREWALL = json.load(_f)["rules"]
# With a second guest port: vm2 is inside the firewall too (it may open connections).
FIREWALL_VM2 = [{"id": 13, "table": 1, "priority": 20,
                 "match": {"in_port": "vm2", "ct_state": "+trk+new"},
                 "actions": ["ct(zone=1,commit)", "normal"]}]


def stream_script(seconds, period_us=20000, tcp_counters=False, peer=PEER_IP, port=STREAM_PORT):
    """The guest's job: after ARP settles, numbered lines to the peer for `seconds`;
    tcp_counters: then the guest's TCP counters on the console (guest_tcp_counters)."""
    return (f"sleep 1; ping -c 1 -W 5 {peer} >/dev/null; i=0; end=$(($(date +%s)+{seconds}))\n"
            f"while [ $(date +%s) -lt $end ]; do echo line-$i; i=$((i+1)); usleep {period_us}; done"
            f" | nc {peer} {port}\n" + ("grep Tcp: /proc/net/snmp\n" if tcp_counters else ""))


def two_streams_script(seconds):
    """A guest with two NICs: a stream through each at once (eth0 to PEER_IP:STREAM_PORT, eth1
    to PEER2_IP:STREAM2_PORT); fails when either does."""
    return (f"( {stream_script(seconds)} ) & first=$!\n"
            f"( {stream_script(seconds, peer=PEER2_IP, port=STREAM2_PORT)} ) & second=$!\n"
            "wait $first; a=$?; wait $second; b=$?; exit $((a | b))\n")


def guest_tcp_counters(console):
    """The guest's TCP counters (/proc/net/snmp's Tcp lines) from its console output:
    {"RetransSegs": n, ...}, or {} when it did not print them."""
    rows = [line.split()[1:] for line in console.splitlines() if line.startswith("Tcp: ")]
    if len(rows) < 2 or not rows[-1][0].lstrip("-").isdigit():
        return {}
    return dict(zip(rows[-2], (int(v) for v in rows[-1])))


def expected_stream(text):
    """True when text is exactly line-0 .. line-N, each ending in a newline."""
    lines = text.split("\n")
    return lines[-1] == "" and lines[:-1] == [f"line-{i}" for i in range(len(lines) - 1)]


def cpu_seconds(pid):
    """utime + stime of a process and its threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """The CPU some processes use from now on, in percent of one core."""

    def __init__(self, pids):
        self.pids = pids
        self.t0 = time.monotonic()
        self.before = {k: cpu_seconds(p) for k, p in pids.items()}

    def percent(self):
        wall = time.monotonic() - self.t0
        return {k: round(100.0 * (cpu_seconds(p) - self.before[k]) / wall, 1)
                for k, p in self.pids.items()}


def stream_connection(d, port=STREAM_PORT):
    """The guest's stream connection (to that peer port) in a ferryd's ct.list, or None."""
    for c in d.call("ct.list")["connections"]:
        if c["proto"] == "tcp" and c["orig"]["dport"] == port:
            return c
    return None


def vm_migrate_module():
    """scripts/vm-migrate as a module, for its QMP client."""
    return fh.load_script(VM_MIGRATE, "vm_migrate")


# ethtool -K IFACE tx off, without ethtool: ETHTOOL_STXCSUM through SIOCETHTOOL.
TX_CHECKSUM_OFF = """
import ctypes, fcntl, socket, struct, sys
value = bytearray(struct.pack("II", 0x17, 0))  # struct ethtool_value {ETHTOOL_STXCSUM, off}
data = (ctypes.c_char * len(value)).from_buffer(value)
fcntl.ioctl(socket.socket(), 0x8946, struct.pack("16sP", sys.argv[1].encode(),  # SIOCETHTOOL
                                                 ctypes.addressof(data)))
"""


class Netns:
    """A network namespace holding the bridge that is both hosts' L2 segment, and the peer."""

    def __init__(self):
        self.name = f"ferry-e2e-{os.getpid()}"
        self._remove_stale()
        for cmd in (["ip", "netns", "add", self.name], ["link", "set", "lo", "up"],
                    ["link", "add", "br0", "address", PEER_MAC, "type", "bridge"],
                    ["addr", "add", f"{PEER_IP}/24", "dev", "br0"], ["link", "set", "br0", "up"]):
            full = cmd if cmd[0] == "ip" else ["ip", "-n", self.name, *cmd]
            subprocess.run(full, check=True, capture_output=True)
        self.prefix = ["ip", "netns", "exec", self.name]

    def _remove_stale(self):
        """Namespaces of runs that were killed: their pid is gone (and this run's own)."""
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for line in listing.splitlines():
            name = line.split()[0] if line.split() else ""
            pid = name[len("ferry-e2e-"):]
            if name.startswith("ferry-e2e-") and pid.isdigit() and (
                    name == self.name or not os.path.exists(f"/proc/{pid}")):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def attach(self, iface, timeout=10.0):
        """Puts a host's uplink (created by its ferryd) on the bridge."""
        def present():
            return subprocess.run(["ip", "-n", self.name, "link", "show", iface],
                                  capture_output=True).returncode == 0
        fh.wait_for(present, timeout, what=f"{iface} in {self.name}")
        subprocess.run(["ip", "-n", self.name, "link", "set", iface, "master", "br0", "up"],
                       check=True, capture_output=True)

    def veth(self, iface):
        """A veth pair in the namespace: iface, up and on no bridge, for a ferryd's af_packet
        port, and its twin br-<iface> on the bridge. The twin computes the checksums of what
        it sends: af_packet hands frames over as they are, and the peer's own segments leave
        it with their checksums still to fill (offloaded), which the guest would drop."""
        for cmd in (["link", "add", iface, "type", "veth", "peer", "name", f"br-{iface}"],
                    ["link", "set", f"br-{iface}", "master", "br0", "up"],
                    ["link", "set", iface, "up"]):
            subprocess.run(["ip", "-n", self.name, *cmd], check=True, capture_output=True)
        subprocess.run([*self.prefix, sys.executable, "-c", TX_CHECKSUM_OFF, f"br-{iface}"],
                       check=True, capture_output=True)

    def delete(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


class Scene:
    """Hosts A and B, the bridge, the peer and the guest's QEMU processes; stop() ends them all."""

    def __init__(self, workdir, idle_backoff=True, ct_capacity=4096, worker_cpus=(1, 1),
                 device_state=True, zones=None, labels=("a", "b"), vhost_mode="server",
                 uplink="tap", reconnect_ms=None, guest_ports=1):
        """device_state=False: the ferryd do not offer their ports' state to QEMU's migration
        (VHOST_USER_PROTOCOL_F_DEVICE_STATE), as a switch that keeps no state across hosts.
        zones: per host label, its conntrack zone settings ({"b": [{"zone": 1, "limit": 1}]}).
        labels: the hosts to start. vhost_mode: port vm1's mode in ferry's terms ("server":
        ferryd makes the socket; "client": QEMU does and ferryd connects). uplink: "tap" (a
        net_tap that ferryd makes, attached to the bridge when it appears) or "veth" (an
        af_packet port on a veth pair made here, whose other end is on the bridge: it stays
        there while ferryd is replaced). reconnect_ms: QEMU reconnects to a server-mode socket
        that went away after this many ms (None: it does not). guest_ports: 2 gives each host
        a port vm2 (inside the firewall, like vm1) and the guest a second NIC on it, eth1,
        GUEST2_IP, whose peer is PEER2_IP on the same bridge."""
        self.dir = workdir
        self.labels = labels
        self.vhost_mode = vhost_mode
        self.uplink = uplink
        self.reconnect_ms = reconnect_ms
        self.guest_ports = guest_ports
        self.retired = []  # ferryd that handed over to a successor (Scene.upgrade)
        self.device_state = device_state
        self.zones = zones or {}
        self.worker_cpus = dict(zip("ab", worker_cpus))  # each host's worker (main: cpu 0)
        self.idle_backoff = idle_backoff  # False: the workers busy-poll, for comparison
        self.ct_capacity = ct_capacity
        self.kernel, self.initrd = g.build(GUEST_DIR)
        self.ns = None
        self.hosts = {}
        self.qemus = []
        self.peer = None  # the last peer started
        self.peers = {}  # each peer by the file its stream goes to
        self.qemu_seq = 0

    def start(self):
        self.ns = Netns()
        if self.guest_ports == 2:
            subprocess.run(["ip", "-n", self.ns.name, "addr", "add", f"{PEER2_IP}/24",
                            "dev", "br0"], check=True, capture_output=True)
        for label in self.labels:
            conntrack = {"capacity": self.ct_capacity}
            if label in self.zones:
                conntrack["zones"] = self.zones[label]
            rules = FIREWALL + (FIREWALL_VM2 if self.guest_ports == 2 else [])
            d = fh.Ferryd(extra={"rules": rules, "conntrack": conntrack,
                                 "idle_backoff": {"enabled": self.idle_backoff}},
                          lcores=f"0@0,1@{self.worker_cpus[label]}",
                          tmpdir=self._subdir(f"host-{label}"))
            d.config["ports"] = [
                {"name": f"vm{i}", "type": "vhost-user", "path": d.path(f"vm{i}.sock"),
                 "mode": self.vhost_mode} for i in range(1, self.guest_ports + 1)] + [
                {"name": "uplink", "type": "dpdk", "devargs": (
                    f"net_af_packet0,iface=up-{label}" if self.uplink == "veth"
                    else f"net_tap0,iface=up-{label}")}]
            if self.uplink == "veth":
                self.ns.veth(f"up-{label}")
            d.wrap = self.ns.prefix
            if not self.device_state:
                d.env = {**os.environ, "FERRY_VHOST_DEVICE_STATE": "off"}
            self.hosts[label] = d
            d.start()
            if self.uplink == "tap":
                self.ns.attach(f"up-{label}")
        return self

    def upgrade(self, label, timeout=60.0):
        """A live upgrade of host label's ferryd, as the systemd unit's reload does it: a new
        ferryd with the same configuration and `--takeover <control socket>.takeover`. Returns
        once the new one serves (it said DONE and logged ready) and the old one has exited;
        scene.hosts[label] is the new one from then on. @return (new ferryd, old ferryd)"""
        old = self.hosts[label]
        new = fh.Ferryd(tmpdir=old.dir)
        new.config = json.loads(json.dumps(old.config))  # the same file, as after an upgrade
        new.prefix = old.prefix  # the same --file-prefix; ferryd appends its pid to it
        n = len(self.retired) + 2
        new.config_path, new.log_path = old.path(f"ferryd-{n}.json"), old.path(f"ferryd-{n}.log")
        new.args = ["--takeover", old.socket + ".takeover"]
        new.wrap, new.env = old.wrap, old.env
        new.start(timeout)
        fh.wait_for(lambda: old.proc.poll() is not None, timeout, interval=0.01,
                    what="the old ferryd to exit")
        self.retired.append(old)
        self.hosts[label] = new
        return new, old

    def _subdir(self, name):
        path = os.path.join(self.dir, name)
        os.makedirs(path, exist_ok=True)
        return path

    def start_peer(self, timeout_s, ip=PEER_IP, port=STREAM_PORT):
        """The far end of a guest's stream, listening at ip:port. @return the file it writes"""
        out = os.path.join(self.dir, "stream.bin" if port == STREAM_PORT else f"stream-{port}.bin")
        self.peer = fh.spawn([*self.ns.prefix, sys.executable, os.path.join(HERE, "stream_peer.py"),
                              ip, str(port), out, str(timeout_s)])
        self.peers[out] = self.peer
        fh.wait_for(lambda: os.path.exists(out + ".times"), 10, what="the stream peer")
        return out

    def guest(self, host, run, incoming=False):
        """Boots the guest on a host's vm1 port, or (incoming) a QEMU waiting for it there."""
        self.qemu_seq += 1
        name = f"qemu{self.qemu_seq}-{host}"
        # QEMU's end of port vm1: the listener when ferryd is the client.
        chardev = ",server=on,wait=off" if self.vhost_mode == "client" else (
            f",reconnect-ms={self.reconnect_ms}" if self.reconnect_ms else "")
        more_nics = []
        if self.guest_ports == 2:
            more_nics.append((self.hosts[host].path("vm2.sock"), GUEST2_MAC))
            # Each address answers ARP on its own NIC only: both NICs see the other's requests
            # (ferry floods them to every port), and eth0 answering for eth1's address would
            # take eth1's traffic through vm1.
            run = (f"ip addr add {GUEST2_IP}/24 dev eth1; ip link set eth1 up\n"
                   "echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore\n"
                   "echo 2 > /proc/sys/net/ipv4/conf/all/arp_announce\n" + run)
        q = g.Guest(self.kernel, self.initrd, self.hosts[host].path("vm1.sock"), GUEST_MAC,
                    f"{GUEST_IP}/24", run, os.path.join(self.dir, f"{name}.console"),
                    qmp=os.path.join(self.dir, f"{name}.qmp"),
                    incoming=f"unix:{os.path.join(self.dir, name + '.incoming')}" if incoming else None,
                    chardev=chardev, more_nics=more_nics)
        self.qemus.append(q)
        fh.wait_for(lambda: os.path.exists(q.qmp), 10, what=f"{name}'s QMP socket")
        if incoming:  # QEMU listens for the migration a little after its QMP socket appears
            fh.wait_for(lambda: os.path.exists(q.incoming[len("unix:"):]), 10,
                        what=f"{name}'s incoming migration socket")
        return q

    def load_connections(self, host, n):
        """n synthetic established connections of port vm1 (make_migration_stream), as if the
        guest had them, loaded with migrate.load. @return how many were installed"""
        stream = os.path.join(self.dir, f"synthetic-{n}.bin")
        subprocess.run([os.path.join(fh.BUILD, "benchmarks", "make_migration_stream"), str(n),
                        "vm1", stream], check=True, stdout=subprocess.DEVNULL)
        return self.hosts[host].call("migrate.load", {"file": stream})["connections"]

    def vm_migrate(self, source, target, src_host, dst_host, extra=(), as_json=True):
        """scripts/vm-migrate, as an operator runs it. @return the CompletedProcess"""
        cmd = [sys.executable, VM_MIGRATE, "--qmp", source.qmp, "--uri", target.incoming,
               "--target-qmp", target.qmp, "--from", self.hosts[src_host].socket,
               "--to", self.hosts[dst_host].socket, "--port", "vm1", "--timeout", "60",
               *(["--json"] if as_json else []), *extra]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def stop(self):
        for q in self.qemus:
            q.stop()
        for peer in self.peers.values():
            fh.stop_process(peer, timeout=2)
        for d in [*self.hosts.values(), *self.retired]:
            d.stop()
        if self.ns is not None:
            self.ns.delete()


def stream_completes(scene, guest, out, timeout, after=None, what="the move"):
    """Waits until the guest's streaming script ended and the peer saw the stream close;
    asserts that it arrived byte for byte, and (after: a monotonic time) that more than 500
    lines came after that time. @return (points, data): the arrivals and the bytes"""
    assert guest.wait_exit(timeout) == 0, guest.output()[-2000:]
    scene.peers[out].wait(30)
    points, end = arrivals(out)
    assert end == "closed", end
    with open(out) as f:
        data = f.read()
    assert expected_stream(data), data[-300:]
    if after is not None:
        later = [p for p in points if p[0] > after]
        assert later and later[-1][1] - later[0][1] > 500, f"too little after {what}"
    return points, data


def arrivals(out):
    """The peer's (time, total bytes) per read, and how the stream ended ('closed', 'error ...')."""
    points, end = [], None
    with open(out + ".times") as f:
        for line in f:
            t, what = line.split(" ", 1)
            what = what.strip()
            if what.isdigit():
                points.append((float(t), int(what)))
            elif what != "listening":
                end = what
    return points, end


def longest_gap(points, start, stop):
    """The longest time without data in [start, stop], in seconds: (gap, when it began)."""
    times = [t for t, _ in points if start <= t <= stop]
    before = [t for t, _ in points if t < start]
    if before:
        times.insert(0, before[-1])
    best = (0.0, start)
    for a, b in zip(times, times[1:]):
        if b - a > best[0]:
            best = (b - a, a)
    return best


def first_arrival_after(points, t):
    """Seconds from t until the peer next received data, or None."""
    later = [p for p, _ in points if p > t]
    return later[0] - t if later else None


def drops(hosts):
    """Every ferryd's drop counters: {"a uplink rule_drop": n, ...}, the non-zero ones."""
    out = {}
    for label, d in hosts.items():
        for port in d.call("port.stats"):
            for reason, n in port["drops"].items():
                if n:
                    out[f"{label} {port['name']} {reason}"] = n
    return out


def drops_since(before, hosts):
    """What drops() counted since `before`: the non-zero differences."""
    now = drops(hosts)
    return {k: n - before.get(k, 0) for k, n in now.items() if n != before.get(k, 0)}


def received(out):
    """(bytes the peer has received, how the stream ended or None)"""
    points, end = arrivals(out)
    return (points[-1][1] if points else 0), end


def wait_bytes(out, at_least, timeout):
    """Waits until the peer has received at_least bytes. @return the total"""
    fh.wait_for(lambda: received(out)[0] >= at_least, timeout, interval=0.2,
                what=f"{at_least} bytes of the guest's stream")
    return received(out)[0]


def port_link(d, name):
    """A ferryd's port's link ("up"/"down") as port.list reports it, or None without the port."""
    for p in d.call("port.list"):
        if p["name"] == name:
            return p["link"]
    return None
