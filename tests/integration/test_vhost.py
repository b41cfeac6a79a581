"""ferryd with vhost-user ports and a dpdk-testpmd virtio-user peer standing in for the VMs.

Each test starts its own ferryd (own --file-prefix, own directory) and peers, bounds every wait,
and stops everything it started (the procs fixture), whether it passes or not.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from ferry_harness import FERRYD, RUNTIME, Ferryd, RpcError, wait_for
from vhost_util import (BROADCAST, aim_unicast, assert_counters_match, links,
                        run_traffic, snapshot, start_ferryd, start_peer, vhost_port, wait_links)

PAIRS = [("vm1", 0), ("vm2", 1)]


def sockets(d, names=("vm1", "vm2")):
    return [d.path(f"{n}.sock") for n in names]


def test_traffic_both_ways_counters_match(procs):
    """Sends: unicast both ways between the peer's two ports (each aimed at the other's MAC).
    Expects: ferryd's rx/tx per port equal the peer's tx/rx exactly, no drops, and mac.list
    holds the two peer MACs, each on the port it came from."""
    d = start_ferryd(procs)
    pmd = start_peer(procs, sockets(d))
    wait_links(d, "up")
    assert pmd.link_up(0) and pmd.link_up(1)
    mac0, mac1 = aim_unicast(pmd)

    before = snapshot(d, pmd, PAIRS)
    run_traffic(pmd, 1.0)
    assert_counters_match(before, snapshot(d, pmd, PAIRS))

    macs = {(e["mac"], e["port"]) for e in d.call("mac.list")}
    assert macs == {(mac0, "vm1"), (mac1, "vm2")}
    assert [e["mac"] for e in d.call("mac.list", {"port": "vm2"})] == [mac1]
    assert [e["mac"] for e in d.call("mac.list", {"port": "vm1", "vlan": 0})] == [mac0]


def test_server_ports_survive_peer_restart(procs):
    """Sends: traffic from a first peer, which then quits; a second peer attaches to the same
    server sockets and sends again. Expects: link down (and the first peer's MACs forgotten)
    after the quit, link up again with the new peer, and exact counters for the second round."""
    d = start_ferryd(procs)
    first = start_peer(procs, sockets(d))
    wait_links(d, "up")
    run_traffic(first, 0.5)
    assert d.port_stats("vm1")["rx_packets"] > 0
    first.stop()

    wait_links(d, "down")
    assert d.call("mac.list") == []
    assert all(os.path.exists(s) for s in sockets(d)), "server sockets must stay for a new peer"

    second = start_peer(procs, sockets(d))
    wait_links(d, "up")
    aim_unicast(second)
    before = snapshot(d, second, PAIRS)
    run_traffic(second, 1.0)
    assert_counters_match(before, snapshot(d, second, PAIRS))


def test_client_ports_reconnect(procs):
    """Sends: ferryd's ports are vhost-user clients started before any server exists; a
    server-mode peer appears, sends, quits, and a new one appears on the same paths.
    Expects: link down until the server exists, up once ferryd connects by itself, exact
    counters, link down when the server quits, and automatic reconnection to the new one."""
    d = start_ferryd(procs, mode="client")
    assert links(d) == {"vm1": "down", "vm2": "down"}
    assert {p["mode"] for p in d.call("port.list")} == {"client"}

    for round_ in range(2):
        pmd = start_peer(procs, sockets(d), server=True)
        wait_links(d, "up")  # ferryd retries the connection about once a second
        aim_unicast(pmd)
        before = snapshot(d, pmd, PAIRS)
        run_traffic(pmd, 1.0)
        assert_counters_match(before, snapshot(d, pmd, PAIRS))
        pmd.stop()
        wait_links(d, "down")
        assert d.call("mac.list") == [], f"round {round_}: MACs of a gone peer are kept"


def test_port_add_and_del_while_traffic_runs(procs):
    """Sends: broadcast traffic between vm1 and vm2 without pause; meanwhile vm3 is added, a
    peer attaches to it and only receives, then vm3 is deleted with that peer still attached.
    Expects: vm3 gets the flooded broadcasts (its tx counter grows, its peer receives them);
    after port.del it is gone from port.list, its socket file is removed, a second port.del is
    refused as not found, and vm1 <-> vm2 traffic never stops."""
    d = start_ferryd(procs)
    pmd = start_peer(procs, sockets(d), fwd_args=[
        "--forward-mode=mac", f"--eth-peer=0,{BROADCAST}", f"--eth-peer=1,{BROADCAST}"])
    wait_links(d, "up")
    pmd.cmd("start tx_first")

    port3 = vhost_port(d, "vm3")
    added = d.call("port.add", port3)
    assert added["name"] == "vm3" and added["link"] == "down" and added["mode"] == "server"
    assert os.path.exists(port3["path"])
    assert sorted(links(d)) == ["vm1", "vm2", "vm3"]

    listener = start_peer(procs, [port3["path"]], fwd_args=["--forward-mode=rxonly"])
    listener.cmd("start")
    wait_links(d, "up", ["vm3"])
    wait_for(lambda: d.port_stats("vm3")["tx_packets"] > 100, 10, what="floods out of vm3")
    wait_for(lambda: listener.port_stats(0)["rx_packets"] > 100, 10,
             what="vm3's peer to receive the floods")
    assert d.port_stats("vm3")["rx_packets"] == 0  # the listener sends nothing

    assert d.call("port.del", {"name": "vm3"}) == {"deleted": "vm3"}
    assert sorted(links(d)) == ["vm1", "vm2"]
    assert not os.path.exists(port3["path"]), "port.del must remove the server socket file"
    with pytest.raises(RpcError) as e:
        d.call("port.del", {"name": "vm3"})
    assert e.value.code == -32002

    a = d.port_stats("vm1")["rx_packets"], d.port_stats("vm2")["tx_packets"]
    time.sleep(0.5)
    b = d.port_stats("vm1")["rx_packets"], d.port_stats("vm2")["tx_packets"]
    assert b[0] > a[0] and b[1] > a[1], f"vm1 -> vm2 traffic stopped after port.del: {a} -> {b}"
    assert all(v == "up" for v in links(d).values())

    # The same name and path again: the device name is reused, counters start from zero.
    assert d.call("port.add", port3)["name"] == "vm3"
    listener.stop()  # its connection died with the old port (testpmd may exit on SIGPIPE)
    again = start_peer(procs, [port3["path"]], fwd_args=["--forward-mode=rxonly"])
    again.cmd("start")
    wait_links(d, "up", ["vm3"])
    wait_for(lambda: again.port_stats(0)["rx_packets"] > 100, 10,
             what="the re-added vm3's peer to receive the floods")
    pmd.cmd("stop")


@pytest.mark.parametrize("params,code", [
    pytest.param({"name": "vm1", "path": "other.sock"}, -32003, id="duplicate-name"),
    pytest.param({"name": "vm3", "path": "vm2.sock"}, -32003, id="socket-in-use"),
    pytest.param({"name": "vm3", "path": "vm2.sock", "mode": "client"}, -32003,
                 id="socket-in-use-as-client"),
    pytest.param({"name": "vm3", "path": "plain-file"}, -32003, id="path-is-a-file"),
    pytest.param({"name": "vm3", "path": "live.sock"}, -32003, id="socket-of-another-process"),
    pytest.param({"name": "vm3", "path": "vm3.sock", "colour": "blue"}, -32602, id="unknown-key"),
    pytest.param({"name": "vm3", "path": "vm3.sock", "rx_pin": [0]}, -32602, id="pin-not-worker"),
    pytest.param({"name": "vm3", "path": "vm3.sock", "queues": "x"}, -32602, id="bad-queues"),
    pytest.param({"name": "vm3", "path": "vm3.sock", "mode": "sideways"}, -32602, id="bad-mode"),
    pytest.param({"name": "vm3", "type": "tap", "path": "vm3.sock"}, -32602, id="bad-type"),
])
def test_port_add_refused(procs, params, code):
    """Sends: port.add requests that clash with existing ports or are malformed.
    Expects: the JSON-RPC error code of the case (-32003 conflict, -32602 invalid params) and
    no change: same port.list, no new socket file, and the switch still adds a valid port."""
    d = start_ferryd(procs)
    with open(d.path("plain-file"), "w") as f:
        f.write("not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(d.path("live.sock"))  # someone else's live vhost-user server
        other.listen()
        before_ports = d.call("port.list")
        before_files = sorted(os.listdir(d.dir))
        req = {"type": "vhost-user", "mode": "server", **params}
        req["path"] = d.path(req["path"])

        resp = d.rpc.call_raw("port.add", req)
        assert "error" in resp, f"port.add {req} was accepted: {resp}"
        assert resp["error"]["code"] == code, resp["error"]
        assert resp["error"]["message"]

        assert d.call("port.list") == before_ports
        assert sorted(os.listdir(d.dir)) == before_files
        assert d.call("port.add", vhost_port(d, "vm4"))["name"] == "vm4"


@pytest.mark.parametrize("mutate,key_path", [
    pytest.param(lambda c: c["ports"][0].update(queues="x"), "ports[0].queues", id="queues"),
    pytest.param(lambda c: c["ports"][1].update(mode="sideways"), "ports[1].mode", id="mode"),
    pytest.param(lambda c: c["control"].update(colour="blue"), "control.colour", id="unknown"),
])
def test_config_error_names_key(mutate, key_path):
    """Sends: ferryd started with a configuration holding one error.
    Expects: a non-zero exit before DPDK starts, a message naming the key path, and neither a
    control socket nor a DPDK runtime directory left behind."""
    d = Ferryd()
    d.config["ports"] = [vhost_port(d, "vm1"), vhost_port(d, "vm2")]
    mutate(d.config)
    with open(d.config_path, "w") as f:
        json.dump(d.config, f)
    try:
        r = subprocess.run([FERRYD, "--config", d.config_path], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0
        assert key_path in r.stderr + r.stdout, f"no '{key_path}' in: {r.stderr}{r.stdout}"
        assert not os.path.exists(d.socket)
        assert not os.path.exists(os.path.join(RUNTIME, d.prefix))
    finally:
        shutil.rmtree(d.dir, ignore_errors=True)


def test_sigterm_stops_cleanly(procs):
    """Sends: SIGTERM to a ferryd whose ports have a peer attached and traffic running.
    Expects: exit status 0 within 15 s, "stopped" logged, and its control socket, its vhost-user
    server sockets and its DPDK runtime directory /var/run/dpdk/<prefix> all removed."""
    d = start_ferryd(procs)
    runtime = os.path.join(RUNTIME, d.prefix)
    assert os.path.isdir(runtime) and os.path.exists(d.socket)
    pmd = start_peer(procs, sockets(d))
    wait_links(d, "up")
    pmd.cmd("start tx_first")
    time.sleep(0.3)

    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(15) == 0, d.read_log()
    assert "stopped" in d.read_log()
    assert not os.path.exists(d.socket)
    assert not any(os.path.exists(s) for s in sockets(d))
    assert not os.path.exists(runtime)
    pmd.cmd("stop")
