"""Multiqueue vhost-user ports and more than one worker.

Sends: a dpdk-testpmd peer with two virtio-user ports, each with 2 queue pairs, forwarding in
mac mode so each port's frames are addressed to the other port. Expects: ferryd spreads the rx
queues over its workers, every worker switches packets, and ferryd's counters equal the peer's.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from ferry_harness import Ferryd, TestPmd, wait_for  # noqa: E402

PEER_FWD = ["--forward-mode=mac", "--eth-peer=0,02:00:00:00:00:02",
            "--eth-peer=1,02:00:00:00:00:01", "--nb-cores=1"]


def vhost_ports(d, queues):
    return [{"name": f"vm{i}", "type": "vhost-user", "path": d.path(f"vm{i}.sock"),
             "queues": queues} for i in (1, 2)]


def run_traffic(d, peer, seconds=2.0):
    wait_for(lambda: all(p["link"] == "up" for p in d.call("port.list")), 15, what="links up")
    peer.cmd("start tx_first")
    time.sleep(seconds)
    peer.cmd("stop")
    time.sleep(0.2)  # let the last bursts pass through ferryd
    peer.drain()


def assert_counters_agree(d, peer):
    for i, name in enumerate(("vm1", "vm2")):
        ours = d.port_stats(name)
        theirs = peer.port_stats(i)
        assert ours["rx_packets"] > 1000
        assert ours["rx_packets"] == theirs["tx_packets"]
        assert ours["tx_packets"] == theirs["rx_packets"]
        assert ours["rx_bytes"] == theirs["tx_bytes"]


def test_two_queues_one_worker():
    d = Ferryd(workers=(1,), extra={"idle_backoff": {"enabled": False}})
    d.config["ports"] = vhost_ports(d, 2)
    with d:
        assert [p["rx_lcores"] for p in d.call("port.list")] == [[1, 1], [1, 1]]
        with TestPmd([d.path("vm1.sock"), d.path("vm2.sock")], fwd_args=PEER_FWD, queues=2) as peer:
            run_traffic(d, peer)
            assert_counters_agree(d, peer)


def test_two_workers_share_the_queues():
    d = Ferryd(workers=(1, 2), lcores="0@0,1@1,2@0")
    d.config["ports"] = vhost_ports(d, 2)
    with d:
        placed = sorted(lc for p in d.call("port.list") for lc in p["rx_lcores"])
        assert placed == [1, 1, 2, 2]  # least-loaded placement: two queues per worker
        with TestPmd([d.path("vm1.sock"), d.path("vm2.sock")], fwd_args=PEER_FWD, queues=2) as peer:
            run_traffic(d, peer, 3.0)
            assert_counters_agree(d, peer)
        workers = d.call("stats")["workers"]
        assert len(workers) == 2
        assert all(w["packets"] > 0 for w in workers), workers


def test_pinned_queues_follow_rx_pin():
    d = Ferryd(workers=(1, 2), lcores="0@0,1@1,2@0")
    d.config["ports"] = vhost_ports(d, 2)
    d.config["ports"][0]["rx_pin"] = [2, 2]
    with d:
        lcores = {p["name"]: p["rx_lcores"] for p in d.call("port.list")}
        assert lcores["vm1"] == [2, 2]
        assert lcores["vm2"] == [1, 1]
