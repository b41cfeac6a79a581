"""Live migration of a real guest between two ferryd (see migration_scene.py): the guest streams
numbered lines over TCP to a peer outside the stateful firewall of both hosts; scripts/vm-migrate
moves it from host A to host B with QEMU and ferry together. The stream goes on byte for byte,
its interruption is measured from the peer's arrival times and printed, and B never refuses the
connection's return traffic. Before that, a move whose flows cannot go (the target cannot listen)
is cancelled: the guest goes on on A with A's tables unchanged. And the control: QEMU's
migration alone (as with a switch that keeps no state across hosts) loses the connection, since
B's firewall refuses both directions of a connection it does not know.
"""
import json
import statistics
import time

import migration_scene as ms

STREAM_S = 30


def identity(c):
    return {k: c[k] for k in ("zone", "proto", "orig", "reply", "state", "ports", "nat", "mark")}


def test_guest_moves_to_another_host_with_its_tcp_stream(scene, capsys):
    a, b = scene.hosts["a"], scene.hosts["b"]
    out = scene.start_peer(STREAM_S + 120)
    source = scene.guest("a", ms.stream_script(STREAM_S))
    ms.wait_bytes(out, 200, 90)
    assert ms.stream_connection(b) is None

    # ferryd's idle back-off leaves the cores to QEMU: both switches, one guest streaming. The
    # share is printed; what is asserted is that A's worker, forwarding the stream, did sleep.
    sleeps = a.call("stats")["workers"][0]["sleeps"]
    cpu = ms.CpuMeter({"ferryd_a": a.proc.pid, "ferryd_b": b.proc.pid, "qemu": source.proc.pid})
    time.sleep(3)
    share = cpu.percent()
    assert a.call("stats")["workers"][0]["sleeps"] > sleeps

    # A move whose flows cannot go once the guest stopped (without pre-copy, the flows go only
    # then): QEMU's migration is cancelled from pre-switchover, the guest goes on on A, A as it
    # was.
    before = ms.stream_connection(a)
    doomed = scene.guest("b", "true", incoming=True)
    r = scene.vm_migrate(source, doomed, "a", "b",
                         ["--no-precopy", "--listen", "unix:/nonexistent-dir/ferry-migrate.sock"])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "cancelled, the guest goes on on the source" in r.stderr, r.stderr
    doomed.stop()
    after = ms.stream_connection(a)
    assert after is not None and identity(after) == identity(before)
    assert ms.stream_connection(b) is None
    ms.wait_bytes(out, ms.received(out)[0] + 100, 30)  # the stream goes on on A

    # The move: QEMU and the flows together.
    target = scene.guest("b", ms.stream_script(STREAM_S), incoming=True)
    dropped = ms.drops(scene.hosts)  # the bridge's own IGMP on the uplinks, say
    t_start = time.monotonic()
    r = scene.vm_migrate(source, target, "a", "b")
    t_done = time.monotonic()
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["connections"] >= 1, report
    moved = ms.stream_connection(b)
    assert moved is not None and moved["ports"] == ["vm1", "uplink"], moved
    assert moved["packets"][0] >= after["packets"][0], (moved, after)  # counters continue
    assert ms.stream_connection(a) is None  # retired on the source
    source.stop()

    # The stream ends when the guest's script does, on B: every byte, in order, once.
    points, data = ms.stream_completes(scene, target, out, STREAM_S + 60, after=t_done)
    assert sum(w["installed"] for w in b.call("ct.stats")["workers"]) >= 1
    # B dropped nothing from the move on: no return traffic refused, nothing placed ahead that
    # packets hit (frames flooded with no port to go to aside). A may drop what still reaches it
    # for the guest's gone port.
    lost = ms.drops_since(dropped, scene.hosts)
    assert {k: n for k, n in lost.items()
            if k.startswith("b ") and not k.endswith("no_destination")} == {}, lost

    gap, gap_at = ms.longest_gap(points, t_start, t_done + 5.0)
    normal = statistics.median(t2 - t1 for (t1, _), (t2, _) in zip(points, points[1:]))
    with capsys.disabled():
        print(f"\n  live migration of a guest with a TCP stream: {json.dumps(report)}"
              f"\n  stream interruption {gap * 1000:.0f} ms (starting {gap_at - t_start:.2f} s "
              f"into the move; median gap between arrivals {normal * 1000:.0f} ms); "
              f"{len(data.splitlines())} lines, byte-exact; the first data after the guest ran"
              f" on B {ms.first_arrival_after(points, report['running_at_s']) * 1000:.0f} ms later"
              f"\n  CPU, % of one core while the guest streams: {share}")


def test_without_the_flows_the_connection_is_lost(tmp_path):
    """QEMU's migration alone, with ferryd offering no state to it."""
    scene = ms.Scene(str(tmp_path), device_state=False)
    try:
        lost_without_state(scene.start())
    finally:
        scene.stop()


def lost_without_state(scene):
    b = scene.hosts["b"]
    out = scene.start_peer(STREAM_S + 120)
    source = scene.guest("a", ms.stream_script(STREAM_S))
    ms.wait_bytes(out, 200, 90)
    target = scene.guest("b", ms.stream_script(STREAM_S), incoming=True)
    refused = {p: b.port_stats(p)["drops"]["rule_drop"] for p in ("vm1", "uplink")}

    qmp = ms.vm_migrate_module().Qmp(source.qmp, "source QEMU", 30)
    qmp.call("migrate", uri=target.incoming)
    deadline = time.monotonic() + 60
    while (status := qmp.call("query-migrate")).get("status") != "completed":
        assert status.get("status") != "failed" and time.monotonic() < deadline, status
        time.sleep(0.05)
    t_done = time.monotonic()
    source.stop()

    time.sleep(4)  # the guest retransmits; B's firewall refuses it and the peer's ACKs
    points, end = ms.arrivals(out)
    assert end is None  # not closed: stalled
    assert not [p for p in points if p[0] > t_done + 1.0], "data arrived after the move"
    assert ms.stream_connection(b) is None
    assert b.port_stats("vm1")["drops"]["rule_drop"] > refused["vm1"]
