"""benchmarks/pvp works for all three switches: testpmd io-forwarding, ferryd and OVS-DPDK.

Not a measurement (the windows are a second long and the host is shared), only the harness: each
switch starts, its links come up, the generator's packets come back through it, the JSON summary
carries the ratios, and nothing of a run is left behind (processes, files, DPDK runtime dirs).
OVS-DPDK is installed by scripts/setup, so its absence fails these tests instead of skipping them.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import ferry_harness

PVP = os.path.join(ferry_harness.ROOT, "benchmarks", "pvp")
SWITCHES = ("testpmd", "ferry", "ovs")


def load_pvp():
    return ferry_harness.load_script(PVP, "pvp")


@pytest.fixture
def short_tmp(request):
    """A directory for pvp's own temporary one, short enough for the vhost-user socket paths
    under it (108 bytes at most; pytest's tmp_path is too long). Kept when the test failed: pvp
    keeps its logs (every switch's) there then."""
    d = tempfile.mkdtemp(prefix="fpvp-", dir="/tmp")
    failed_before = request.session.testsfailed
    yield d
    if request.session.testsfailed == failed_before and not os.environ.get("FERRY_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)
    else:
        print(f"pvp's directory kept: {d}")


@pytest.fixture(scope="module", autouse=True)
def ovs_installed():
    why = load_pvp().ovs_missing()
    if why:
        pytest.fail(f"OVS-DPDK is not installed: {why}", pytrace=False)


def run_pvp(tmp, *args, timeout=240):
    """Runs benchmarks/pvp for every switch with its temporary directory under tmp; returns
    (stdout, summary). Fails when it fails or leaves a process, a file or a DPDK runtime dir."""
    out_json = os.path.join(tmp, "pvp.json")
    env = dict(os.environ, TMPDIR=tmp, FERRYD=ferry_harness.FERRYD,
               TESTPMD=ferry_harness.TESTPMD)
    proc = subprocess.Popen([sys.executable, PVP, "--switch", "all", "--duration", "1",
                             "--warmup", "0.5", "--repeat", "1", "--json", str(out_json), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGTERM: pvp stops every switch and generator it started; SIGKILL would orphan them.
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"benchmarks/pvp took more than {timeout} s:\n{out}")
    assert proc.returncode == 0, out
    leftovers = [pid for pid in os.listdir("/proc") if pid.isdigit() and in_cmdline(pid, tmp)]
    assert not leftovers, f"processes of the run still running: {leftovers}\n{out}"
    assert not glob.glob(os.path.join(tmp, "ferry-pvp-*")), f"the run's directory was not removed\n{out}"
    assert not glob.glob(os.path.join(ferry_harness.RUNTIME, f"ft?{proc.pid}x*")), \
        "DPDK runtime directories left behind"
    with open(out_json) as f:
        return out, json.load(f)


def in_cmdline(pid, text):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return text.encode() in f.read()
    except OSError:
        return False


def assert_all_switches_moved_packets(out, summary, modes):
    assert summary["ovs"] and summary["ovs"]["version"], out
    runs = summary["runs"]
    assert sorted((r["mode"], r["switch"]) for r in runs) == \
        sorted((m, s) for m in modes for s in SWITCHES), out
    for r in runs:
        assert "error" not in r, (r, out)
        assert r["rx_mpps"] > 0 and r["tx_mpps"] > 0, (r, out)
        assert r["busy_cycles_per_packet"], (r, out)  # every switch reports its cycles per packet
    for r in runs:
        if r["switch"] == "ovs":
            assert r["ovs_pmd"]["packets"] > 0, (r, out)
    for mode in modes:
        res = summary["results"][mode]
        for s in SWITCHES:
            assert res[s]["rx_mpps_median"] > 0, out
            assert res[s]["cycles_per_packet_median"], out
        for key in ("ratio", "pair_ratios", "cycles_per_packet_ratio",  # ferry/testpmd, as always
                    "ratio_ferry_ovs", "pair_ratios_ferry_ovs", "cycles_per_packet_ratio_ferry_ovs",
                    "ratio_ovs_testpmd"):
            assert key in res, (key, out)
        assert "ratio ferry/ovs" in out and "ratio ferry/testpmd" in out, out


def test_port_forwarding_both_modes(short_tmp):
    """Sends: closed-loop and flowgen traffic through each switch with port-forwarding rules
    (ferryd's two rules, OVS's two in_port flows, testpmd io). Expects: packets back from every
    switch in both modes, cycles per packet for each, and the ferry/testpmd, ferry/OVS and
    OVS/testpmd ratios in the JSON summary."""
    out, summary = run_pvp(short_tmp, "--mode", "all", "--rules", "portfwd")
    assert_all_switches_moved_packets(out, summary, ("closed", "flowgen"))


def test_stateful_firewall(short_tmp):
    """Sends: 100 flowgen flows through the stateful firewall (ferryd's FIREWALL_RULES, OVS's
    ct(zone=1,commit,table=1) flows). Expects: packets back from every switch, and both ferryd
    and OVS committed the 100 connections."""
    out, summary = run_pvp(short_tmp, "--mode", "flowgen", "--rules", "firewall", "--flows", "100")
    assert_all_switches_moved_packets(out, summary, ("flowgen",))
    conns = {r["switch"]: r.get("connections") for r in summary["runs"]}
    assert conns["ferry"] == 100 and conns["ovs"] == 100, (conns, out)


def test_dpi_leaves_ovs_out_with_a_note(tmp_path):
    """Sends: nothing; asks for --switch ovs --rules dpi. Expects: pvp refuses, saying OVS has no
    equivalent of the dpi rules."""
    r = subprocess.run([sys.executable, PVP, "--switch", "ovs", "--rules", "dpi"],
                       capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert r.returncode != 0
    assert "OVS has no equivalent of --rules dpi" in r.stderr
