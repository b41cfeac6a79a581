"""Live upgrade of ferryd under a real guest (see migration_scene.py): one host, its ferryd with
the stateful firewall of config/migration-host.json, a guest streaming numbered lines over TCP
to a peer outside the firewall. While it streams, a new ferryd with the same configuration
takes over (`ferryd --takeover <control socket>.takeover`, as the systemd unit's reload does).
Expects the old ferryd to exit cleanly, the new one to track the guest's connection, and the
stream to go on byte for byte. Prints the stream's pause around the upgrade, the guest's TCP
retransmissions and the new ferryd's drops: figures, not assertions (the README reports them).

Two variants of the guest's port:
- client: ferryd is the vhost-user client and QEMU the server (`server=on,wait=off`).
- server: ferryd makes the socket; QEMU would reconnect to it (`reconnect-ms=`) if it closed.
In both the old ferryd hands the connection itself to the new one, which adopts it (asserted):
QEMU never sees it close, and the guest's link stays up (docs/migration.md, "What a guest
sees").

The uplink is an af_packet port on a veth pair whose other end is on the peer's bridge: like a
NIC, it stays while ferryd is replaced (a net_tap uplink is deleted with the ferryd that made it).
"""
import datetime
import re
import statistics
import time

import pytest

import migration_scene as ms

STREAM_S = 16
RECONNECT_MS = 100  # QEMU's retry period to a server-mode socket that went away


def log_times(log, t0_wall, patterns):
    """Seconds after t0_wall at which each pattern's first log line was written, or None."""
    out = {}
    for name, pattern in patterns.items():
        m = re.search(r"^(\S+Z) ferryd .*" + pattern, log, re.M)
        if m:
            stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ")
            out[name] = round(stamp.replace(tzinfo=datetime.timezone.utc).timestamp() - t0_wall, 3)
        else:
            out[name] = None
    return out


@pytest.mark.parametrize("mode", ["client", "server"])
def test_live_upgrade_under_a_streaming_guest(tmp_path, capsys, mode):
    scene = ms.Scene(str(tmp_path), labels=("a",), vhost_mode=mode, uplink="veth",
                     reconnect_ms=RECONNECT_MS if mode == "server" else None)
    try:
        upgrade_under_stream(scene.start(), mode, capsys)
    finally:
        scene.stop()


def upgrade_under_stream(scene, mode, capsys):
    out = scene.start_peer(STREAM_S + 120)
    guest = scene.guest("a", ms.stream_script(STREAM_S, tcp_counters=True))
    ms.wait_bytes(out, 200, 120)
    before = ms.stream_connection(scene.hosts["a"])
    assert before is not None and before["state"] == "ESTABLISHED", before
    ms.wait_bytes(out, ms.received(out)[0] + 500, 30)  # streaming steadily
    dropped_before = ms.drops(scene.hosts)

    t_start, t_start_wall = time.monotonic(), time.time()
    new, old = scene.upgrade("a")
    t_done = time.monotonic()
    assert old.proc.returncode == 0, old.read_log()[-2000:]
    assert "the successor runs; " in old.read_log(), old.read_log()[-2000:]
    assert re.search(r"took over [1-9]\d* connections", new.read_log()), new.read_log()[-2000:]
    assert "port vm1: adopted the predecessor's vhost-user connection" in new.read_log(), \
        new.read_log()[-2000:]
    # The new ferryd tracks the guest's connection: the same one, its counters going on.
    kept = ms.stream_connection(new)
    assert kept is not None and kept["state"] == "ESTABLISHED", kept
    assert kept["orig"] == before["orig"] and kept["ports"] == ["vm1", "uplink"], kept
    at_done = ms.received(out)[0]
    ms.wait_bytes(out, at_done + 500, 30)  # the stream goes on through the new ferryd
    assert ms.stream_connection(new)["packets"][0] > before["packets"][0]

    # The stream ends when the guest's script does: every byte, in order, once.
    points, data = ms.stream_completes(scene, guest, out, STREAM_S + 60, after=t_done,
                                       what="the upgrade")

    gap, gap_at = ms.longest_gap(points, t_start, t_done + 3.0)
    normal = statistics.median(t2 - t1 for (t1, _), (t2, _) in zip(points, points[1:]))
    tcp = ms.guest_tcp_counters(guest.output())
    lost = ms.drops({"new": new})  # the new ferryd counts from zero
    steps = {**log_times(old.read_log(), t_start_wall, {
        "old: asked": "asks to take over", "old: released": "ports released",
        "old: exiting": "the successor runs"}),
        **log_times(new.read_log(), t_start_wall, {"new: took over": "took over ",
                                                   "new: ready": "ready: ",
                                                   "new: vm1 up": "port vm1: link up",
                                                   "new: vm1 adopted": "port vm1: adopted"})}
    # The gap the hand-over itself made: from the last arrival before the old ferryd paused its
    # workers to the first one after the new ferryd ran.
    across = None
    if steps["old: asked"] is not None and steps["new: ready"] is not None:
        last = [t for t, _ in points if t <= t_start + steps["old: asked"]]
        first = [t for t, _ in points if t >= t_start + steps["new: ready"]]
        if last and first:
            across = first[0] - last[-1]
    with capsys.disabled():
        print(f"\n  live upgrade, vhost-user port in {mode} mode"
              f"{f' (QEMU reconnect-ms={RECONNECT_MS})' if mode == 'server' else ''}: "
              f"upgrade took {t_done - t_start:.2f} s (new ferryd started until the old exited)"
              f"\n  stream pause {gap * 1000:.0f} ms (starting {gap_at - t_start:.2f} s into the "
              f"upgrade; median gap between arrivals {normal * 1000:.0f} ms); "
              f"{len(data.splitlines())} lines, byte-exact; connection kept"
              f"\n  gap across the hand-over (last arrival before the old ferryd paused to the first "
              f"after the new one ran) "
              f"{'unknown' if across is None else f'{across * 1000:.0f} ms'}"
              f"\n  guest TCP segments retransmitted {tcp.get('RetransSegs')}; drops: old ferryd "
              f"before the upgrade {dropped_before}, new ferryd {lost}"
              f"\n  log, s after the new ferryd started: {steps}")
