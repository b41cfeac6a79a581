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
import json
import shutil
import sys
import tempfile
import time

import migration_scene as ms


def say(text):
    print(text, flush=True)


def connection(d):
    c = ms.stream_connection(d)
    if c is None:
        return "no connection of the stream"
    return (f"{c['orig']['src']}:{c['orig']['sport']} -> {c['orig']['dst']}:{c['orig']['dport']} "
            f"{c['state']}, packets {c['packets'][0]}/{c['packets'][1]}, ports "
            f"{'/'.join(c['ports'])}")


def watch(out, seconds, hosts):
    for _ in range(seconds):
        time.sleep(1)
        total, end = ms.received(out)
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
        t_boot = time.monotonic()
        source = scene.guest("a", ms.stream_script(a.stream_seconds))
        ms.wait_bytes(out, 200, 300)
        say(f"   the guest's stream reached the peer {time.monotonic() - t_boot:.1f} s after QEMU "
            f"started")
        cpu = ms.CpuMeter({k: d.proc.pid for k, d in scene.hosts.items()})
        watch(out, 3, scene.hosts)

        say("== a QEMU waits on host B (-incoming); moving the guest with scripts/vm-migrate")
        target = scene.guest("b", ms.stream_script(a.stream_seconds), incoming=True)
        dropped = ms.drops(scene.hosts)
        t_start = time.monotonic()
        r = scene.vm_migrate(source, target, "a", "b", ["--no-precopy"] if a.no_precopy else [])
        t_done = time.monotonic()
        if r.returncode != 0:
            say("   " + r.stderr.strip())
            return 1
        report = json.loads(r.stdout)
        say("   " + ms.vm_migrate_module().describe(report))
        source.stop()
        watch(out, a.stream_seconds, scene.hosts)
        target.wait_exit(a.stream_seconds + 60)
        scene.peer.wait(30)
        used = cpu.percent()

        points, end = ms.arrivals(out)
        with open(out) as f:
            data = f.read()
        gap, _ = ms.longest_gap(points, t_start, t_done + 5.0)
        exact = ms.expected_stream(data)
        resumed = ms.first_arrival_after(points, report["running_at_s"])
        say(f"== the stream {end}: {len(data.splitlines())} lines, "
            f"{'byte-exact' if exact else 'NOT as sent'}; the longest pause in it around the move:"
            f" {gap * 1000:.0f} ms, of which {resumed * 1000:.0f} ms after the guest ran on B")
        installed = sum(w["installed"] for w in scene.hosts["b"].call("ct.stats")["workers"])
        lost = ms.drops_since(dropped, scene.hosts)
        nowhere = sum(n for k, n in lost.items() if k.endswith("no_destination"))
        other = {k: n for k, n in lost.items() if not k.endswith("no_destination")}
        say(f"   host B: {installed} connections installed by the move; drops since the move "
            f"began: {other or 'none'} (and {nowhere} flooded frames with no port to go to, such "
            f"as the guest's announcements reaching A)")
        say(f"   CPU of the two ferryd while the guest ran, % of one core: A {used['a']}, "
            f"B {used['b']} (idle back-off {'on' if scene.idle_backoff else 'OFF'})")
        return 0 if exact and end == "closed" else 1
    finally:
        scene.stop()
        say("== stopped: both ferryd, QEMU, the peer and the network namespace")


if __name__ == "__main__":
    sys.exit(main())
