"""ferry's live demo (run by scripts/demo): a real guest moves between two ferryd and keeps its
TCP connection through both stateful firewalls.

Host A and host B are two ferryd on this machine, each with a vhost-user port vm1 and an uplink
on a shared bridge (see migration_scene.py). A QEMU guest on A streams numbered lines over TCP to a
peer on the bridge; scripts/vm-migrate moves the guest to B with QEMU and ferry together, and the
stream goes on. At the end: the stream checked byte for byte, its interruption, and the CPU the
two ferryd took while the guest ran.

    python3 tests/e2e/live_demo.py [--stream-seconds N] [--workdir DIR]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import migration_scene as ms


def say(text):
    print(text, flush=True)


def connection(d):
    for c in d.call("ct.list")["connections"]:
        if c["proto"] == "tcp" and c["orig"]["dport"] == ms.STREAM_PORT:
            return (f"{c['orig']['src']}:{c['orig']['sport']} -> {c['orig']['dst']}:"
                    f"{c['orig']['dport']} {c['state']}, packets {c['packets'][0]}/"
                    f"{c['packets'][1]}, ports {'/'.join(c['ports'])}")
    return "no connection of the stream"


def received(out):
    points, end = ms.arrivals(out)
    return (points[-1][1] if points else 0), end


def watch(out, seconds, hosts):
    for _ in range(seconds):
        time.sleep(1)
        total, end = received(out)
        say(f"   peer has {total:6d} bytes | A: {connection(hosts['a'])}\n"
            f"                      | B: {connection(hosts['b'])}")
        if end:
            return


def main():
    p = argparse.ArgumentParser(description="ferry live demo")
    p.add_argument("--stream-seconds", type=int, default=30)
    p.add_argument("--workdir")
    p.add_argument("--no-idle-backoff", action="store_true",
                   help="ferryd's workers busy-poll (to compare what the back-off leaves QEMU)")
    p.add_argument("--connections", type=int, default=0,
                   help="also give the guest's port on A this many synthetic established "
                   "connections (make_migration_stream) that move with it")
    p.add_argument("--worker-cpus", default="1,1",
                   help="the cpus of host A's and host B's worker (default 1,1; main lcores on 0)")
    p.add_argument("--no-precopy", action="store_true",
                   help="vm-migrate --no-precopy: the flows move only once the guest stopped")
    a = p.parse_args()
    if a.stream_seconds < 10:  # it must outlast the 3 s shown on A and the move
        p.error("--stream-seconds must be at least 10")
    workdir = a.workdir or tempfile.mkdtemp(prefix="ferry-demo-")
    say(f"== building the guest (Debian kernel + busybox initramfs) and starting host A and host B;"
        f" files in {workdir}")
    rc = 1
    try:
        rc = run(a, workdir)
    finally:
        if rc == 0 and not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        elif rc != 0:
            say(f"== logs, consoles and the stream kept in {workdir}")
    return rc


def run(a, workdir):
    scene = ms.Scene(workdir, idle_backoff=not a.no_idle_backoff,
                     ct_capacity=max(4096, 2 * a.connections + 4096),
                     worker_cpus=[int(c) for c in a.worker_cpus.split(",")])
    try:
        scene.start()
        for label, d in scene.hosts.items():
            ports = ", ".join(f"{x['name']} ({x['type']})" for x in d.call("port.list"))
            say(f"   host {label.upper()}: ferryd pid {d.proc.pid}, ports {ports}")
        if a.connections:
            say(f"   host A: {scene.load_connections('a', a.connections)} synthetic connections "
                f"of port vm1 loaded (migrate.load)")
        out = scene.start_peer(a.stream_seconds + 120)
        say(f"== booting the guest on host A (QEMU, TCG); it streams to {ms.PEER_IP}:"
            f"{ms.STREAM_PORT} for {a.stream_seconds} s")
        t_boot = ms.now()
        source = scene.guest("a", ms.stream_script(a.stream_seconds))
        ms.wait_bytes(out, 200, 300)
        say(f"   the guest's stream reached the peer {ms.now() - t_boot:.1f} s after QEMU started")
        cpu0 = {k: ms.cpu_seconds(d.proc.pid) for k, d in scene.hosts.items()}
        t_cpu = ms.now()
        watch(out, 3, scene.hosts)

        say("== a QEMU waits on host B (-incoming); moving the guest with scripts/vm-migrate")
        target = scene.guest("b", ms.stream_script(a.stream_seconds), incoming=True)
        refused0 = scene.hosts["b"].port_stats("uplink")["drops"]["rule_drop"]
        t_start = ms.now()
        r = subprocess.run([sys.executable, ms.VM_MIGRATE, "--qmp", source.qmp, "--uri",
                            target.incoming, "--target-qmp", target.qmp, "--from",
                            scene.hosts["a"].socket, "--to", scene.hosts["b"].socket,
                            "--port", "vm1", *(["--no-precopy"] if a.no_precopy else [])],
                           capture_output=True, text=True, timeout=120)
        t_done = ms.now()
        say("   " + (r.stdout.strip() or r.stderr.strip()))
        if r.returncode != 0:
            return 1
        source.stop()
        watch(out, a.stream_seconds, scene.hosts)
        target.wait_exit(a.stream_seconds + 60)
        scene.peer.wait(30)
        cpu = {k: round(100 * (ms.cpu_seconds(d.proc.pid) - cpu0[k]) / (ms.now() - t_cpu), 1)
               for k, d in scene.hosts.items()}

        points, end = ms.arrivals(out)
        with open(out) as f:
            data = f.read()
        gap, gap_at = ms.longest_gap(points, t_start, t_done + 5.0)
        exact = ms.expected_stream(data)
        say(f"== the stream {end}: {len(data.splitlines())} lines, "
            f"{'byte-exact' if exact else 'NOT as sent'}; the longest pause in it around the move:"
            f" {gap * 1000:.0f} ms")
        installed = sum(w["installed"] for w in scene.hosts["b"].call("ct.stats")["workers"])
        refused = scene.hosts["b"].port_stats("uplink")["drops"]["rule_drop"] - refused0
        say(f"   host B: {installed} connections installed by the move; packets its firewall "
            f"refused on the uplink since: {refused}")
        say(f"   CPU of the two ferryd while the guest ran, % of one core: A {cpu['a']}, B {cpu['b']}"
            f" (idle back-off {'on' if scene.idle_backoff else 'OFF'})")
        return 0 if exact and end == "closed" else 1
    finally:
        scene.stop()
        say("== stopped: both ferryd, QEMU, the peer and the network namespace")


if __name__ == "__main__":
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
