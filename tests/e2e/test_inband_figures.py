"""Figures for in-band migration (docs/migration.md): QEMU's downtime moving a streaming guest
whose port has 10,000 more established connections (synthetic, loaded with migrate.load), with
ferry's state in QEMU's migration and without it (FERRY_VHOST_DEVICE_STATE=off), and how long
the state took on each side (migrate.status in_band). Prints the figures; asserts only that the
moves succeed and that the state carried every connection. FERRY_INBAND_CONNECTIONS=N in the
environment measures with N connections instead (1..1000000; the conntrack capacity per worker is
then at least 2N).
"""
import os
import shutil

import pytest

import migration_scene as ms
from test_inband_migration import qmp_migrate

N = int(os.environ.get("FERRY_INBAND_CONNECTIONS", "10000"))
assert 1 <= N <= 1000000, f"FERRY_INBAND_CONNECTIONS={N}: 1..1000000"
STREAM_S = 40


def one_move(tmp_path, device_state):
    scene = ms.Scene(str(tmp_path), ct_capacity=max(32768, 2 * N),
                     device_state=device_state)
    try:
        scene.start()
        a, b = scene.hosts["a"], scene.hosts["b"]
        out = scene.start_peer(STREAM_S + 120)
        source = scene.guest("a", ms.stream_script(STREAM_S))
        ms.wait_bytes(out, 200, 120)
        assert scene.load_connections("a", N) == N
        target = scene.guest("b", "true", incoming=True)
        status = qmp_migrate(source, target, False)
        fig = {"downtime_ms": status.get("downtime"), "total_ms": status.get("total-time")}
        if device_state:
            ms.fh.wait_for(lambda: ms.stream_connection(b) is not None, 30, interval=0.05,
                           what="B to install the guest's connections")
            save = a.call("migrate.status")["in_band"][-1]
            load = b.call("migrate.status")["in_band"][-1]
            assert save["result"] == "ok" and load["result"] == "ok", (save, load)
            assert load["connections"] >= N, load
            fig.update(state_bytes=save["bytes"], save_ms=round(save["ms"], 1),
                       load_ms=round(load["ms"], 1), connections=load["connections"],
                       save_steps_ms={k: round(v, 1) for k, v in save["steps_ms"].items()},
                       load_steps_ms={k: round(v, 1) for k, v in load["steps_ms"].items()})
        return fig
    finally:
        scene.stop()


def test_downtime_with_and_without_state(tmp_path, capsys):
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is not installed (scripts/setup installs it)")
    with_state = one_move(tmp_path / "with", True)
    without = one_move(tmp_path / "without", False)
    with capsys.disabled():
        print(f"\n  {N} extra connections on the moved port: with ferry's state {with_state}; "
              f"without {without}")
