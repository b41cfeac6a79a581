"""scripts/ferry-exporter: ferryd's counters as Prometheus reads them.

Sends: 6 broadcast frames in on pcap port p0 of a bridge with a silent port p1 (so each is
flooded once), and one runt (dropped as runt), then scrapes the exporter directly and through a
real Prometheus (Debian's prometheus) that scrapes it every second.
Expects: the exporter's per-port packet, byte and drop series equal what port.stats reports, the
worker and conntrack families present; Prometheus's query API returns the same values; with
ferryd gone the scrape still answers, with ferry_up 0.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from pcap_util import BROADCAST, mac, udp_frame, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPORTER = os.path.join(ROOT, "scripts", "ferry-exporter")
PROMETHEUS = "/usr/bin/prometheus"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def samples(text):
    """{(name, frozenset(labels)): value} of an exposition text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        pairs = frozenset(tuple(kv.split("=", 1)) for kv in labels.rstrip("}").split(",") if kv)
        out[(name, frozenset((k, v.strip('"')) for k, v in pairs))] = float(value)
    return out


def value(s, name, **labels):
    return s[(name, frozenset((k, str(v)) for k, v in labels.items()))]


@pytest.fixture
def exporter():
    procs = []

    def start(sock):
        port = free_port()
        p = subprocess.Popen([sys.executable, EXPORTER, "--socket", sock, "--listen",
                              f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True)
        procs.append(p)
        url = f"http://127.0.0.1:{port}/metrics"

        def up():
            try:
                return get(url, timeout=1)[0] == 200
            except OSError:
                return False
        wait_for(up, 10, what="the exporter to answer")
        return url, port
    yield start
    for p in procs:
        p.terminate()
        p.wait(10)


def test_exporter_and_prometheus_report_what_the_control_socket_reports(bridge, exporter,
                                                                         tmp_path):
    frames = [udp_frame(mac(1), BROADCAST, f"frame {i}".encode()) for i in range(6)]
    b = bridge
    b.ferryd.config["conntrack"] = {"capacity": 1024}
    b.port("p0", frames + [bytes(10)])
    b.port("p1")
    b.start()
    b.wait_counts(rx={"p0": 7}, tx={"p1": 6}, drops={("p0", "runt"): 1})
    stats = {p["name"]: p for p in b.call("port.stats")}
    url, port = exporter(b.ferryd.socket)
    status, ctype, text = get(url)
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    s = samples(text)
    assert value(s, "ferry_up") == 1
    described = b.call("stats.describe")
    assert [c["name"] for c in described["port_counters"]] == \
        ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"]
    for name in ("p0", "p1"):
        for c in described["port_counters"]:
            key = c["name"]
            assert value(s, f"ferry_port_{key}_total", port=name) == stats[name][key], key
        for c in described["device_counters"]:
            key = c["name"]
            assert value(s, f"ferry_port_device_{key}_total", port=name) == \
                stats[name]["device"][key], key
        for reason, n in stats[name]["drops"].items():
            assert value(s, "ferry_port_drops_total", port=name, reason=reason) == n
    assert value(s, "ferry_port_drops_total", port="p0", reason="runt") == 1
    assert value(s, "ferry_port_tx_packets_total", port="p1") == 6
    names = {n for n, _ in s}
    assert {"ferry_worker_busy_cycles_total", "ferry_worker_cycles_per_packet",
            "ferry_ct_connections", "ferry_ct_connections_by_state",
            "ferry_dpi_matches_total", "ferry_migration_phase"} <= names
    assert value(s, "ferry_migration_phase", phase="idle") == 1
    # One series per phase ferryd has (migrate/phase.h), no more: 1 for the current one.
    phases = {dict(labels)["phase"] for n, labels in s if n == "ferry_migration_phase"}
    assert phases == set(described["migration_phases"])
    assert sum(value(s, "ferry_migration_phase", phase=ph) for ph in phases) == 1
    # Every per-worker conntrack counter of ferryd's table, under its own name and kind.
    ct = b.call("ct.stats")
    for c in described["ct_counters"]:
        family = f"ferry_ct_{c['name']}" + ("_total" if c["kind"] == "counter" else "")
        for w in ct["workers"]:
            assert value(s, family, worker=w["worker"]) == w[c["name"]], family

    # A real Prometheus scraping the exporter every second.
    assert os.path.exists(PROMETHEUS), "scripts/setup installs prometheus"
    web = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ferry\n"
                   f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}",
                             f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{web}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def query(q):
            u = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            try:
                body = json.loads(get(u, timeout=2)[2])
            except OSError:
                return None
            return {r["metric"].get("port", ""): float(r["value"][1])
                    for r in body["data"]["result"]} or None

        got = wait_for(lambda: query("ferry_port_tx_packets_total"), 60,
                       what="Prometheus to scrape the exporter")
        assert got == {"p0": stats["p0"]["tx_packets"], "p1": 6}
        assert query('ferry_port_drops_total{reason="runt"}') == {"p0": 1, "p1": 0}
        assert query("ferry_port_rx_bytes_total") == {n: stats[n]["rx_bytes"]
                                                      for n in ("p0", "p1")}
        assert query("ferry_up") == {"": 1}
    finally:
        prom.terminate()
        prom.wait(20)
    b.finish()

    # ferryd gone: the scrape answers, saying so.
    s = samples(get(url)[2])
    assert s == {("ferry_up", frozenset()): 0.0}
