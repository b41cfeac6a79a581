"""ferryd under a service manager: the systemd unit, and the sd_notify protocol ferryd speaks.

systemd is not PID 1 here, so the protocol is tested from the manager's side: each test binds a
unix datagram socket with SO_PASSCRED (as systemd does, so every datagram carries its sender's
pid), points NOTIFY_SOCKET at it and starts ferryd with a vhost-user port.

Sends: nothing to the switch; starts, upgrades in place (--takeover, as the unit's ExecReload
runs it) and stops ferryd.
Expects: STATUS=starting first; READY=1 once the port's socket exists, with
"1 ports, 1 workers forwarding", and never when a port cannot be made (STATUS=failed: then); WATCHDOG=1 at half of WATCHDOG_USEC (none without it);
STOPPING=1 on shutdown; a successor's MAINPID equal to the pid that sent it, with READY=1, and
its predecessor exiting without STOPPING=1; WATCHDOG=1 going on while a successor stalls in the
middle of a hand-over.
"""
import array
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from ferry_harness import (FERRYD, ROOT, Ferryd, RpcClient, cleanup_prefix,  # noqa: E402
                           wait_for)
from takeover_peer import TakeoverPeer  # noqa: E402

UNIT_IN = os.path.join(ROOT, "config", "systemd", "ferry.service.in")


class NotifyListener:
    """The service manager's end of NOTIFY_SOCKET: records (sender pid, {key: value}) pairs."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages = []

    def poll(self):
        """Reads every datagram waiting. @return the messages recorded so far."""
        creds_size = socket.CMSG_SPACE(array.array("i", [0, 0, 0]).itemsize * 3)
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, creds_size)
            except BlockingIOError:
                return self.messages
            pid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = array.array("i", payload[:12])[0]
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            self.messages.append((pid, fields))

    def wait(self, pred, timeout=30.0, what="a notification"):
        """Waits for a message with pred(pid, fields). @return that (pid, fields)."""
        def found():
            for m in self.poll():
                if pred(*m):
                    return m
            return None
        return wait_for(found, timeout, what=what)

    def close(self):
        self.sock.close()


def ferryd_with_port():
    d = Ferryd()
    d.config["ports"] = [{"name": "vm1", "type": "vhost-user", "path": d.path("vm1.sock"),
                          "mode": "server"}]
    return d


@pytest.fixture
def notify(monkeypatch):
    """A NotifyListener whose path is in NOTIFY_SOCKET for every process the test starts."""
    directory = tempfile.mkdtemp(prefix="ferry-notify-")
    listener = NotifyListener(directory)
    monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield listener
    listener.close()
    shutil.rmtree(directory, ignore_errors=True)


def alive(pid):
    """True while pid runs (a zombie nobody reaps yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_unit_verifies(tmp_path):
    """systemd-analyze verify accepts the unit, with its paths pointing at this build."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (scripts/setup installs systemd)")
    bindir = os.path.dirname(FERRYD)
    with open(UNIT_IN) as f:
        unit = f.read().replace("@BINDIR@", bindir).replace("@SYSCONFDIR@", str(tmp_path))
    path = tmp_path / "ferry.service"
    path.write_text(unit)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.strip() == "", r.stderr
    assert "Type=notify" in unit and "NotifyAccess=all" in unit and "WatchdogSec=" in unit
    assert f"ExecReload={bindir}/ferryd" in unit and "--takeover" in unit and "--detach" in unit


def test_ready_status_watchdog_stopping(notify, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    d = ferryd_with_port()
    vhost = d.config["ports"][0]["path"]
    ready_seen_with_port = []
    try:
        d.start()
        pid = d.proc.pid

        def ready(sender, fields):
            if fields.get("READY") == "1":
                ready_seen_with_port.append(os.path.exists(vhost))
                return True
            return False

        notify.wait(ready, what="READY=1")
        msgs = notify.poll()
        assert all(sender == pid for sender, _ in msgs)
        assert msgs[0][1] == {"STATUS": "starting"}
        assert ready_seen_with_port == [True], "READY=1 before the port's socket existed"
        ready_msg = next(f for _, f in msgs if f.get("READY") == "1")
        assert ready_msg["STATUS"] == "1 ports, 1 workers forwarding"
        assert "MAINPID" not in ready_msg
        # Every 0.2 s; allow for a loaded machine.
        t0 = time.monotonic()
        wait_for(lambda: sum(f.get("WATCHDOG") == "1" for _, f in notify.poll()) >= 4, 10,
                 what="four WATCHDOG=1")
        assert time.monotonic() - t0 >= 0.5
        assert d.stop() == 0
        final = notify.poll()[-1][1]
        assert final == {"STOPPING": "1", "STATUS": "stopping"}
    finally:
        d.stop()
        shutil.rmtree(d.dir, ignore_errors=True)


def test_no_ready_when_a_port_cannot_be_made(notify):
    """A port that cannot be created stops ferryd before READY=1: the service manager sees the
    start fail (STATUS=failed: ...) instead of a ready switch without its port."""
    d = ferryd_with_port()
    d.config["ports"].append({"name": "nic", "type": "dpdk", "devargs": "net_nosuchdriver0"})
    try:
        with pytest.raises(RuntimeError):
            d.start()
        msgs = [f for _, f in notify.poll()]
        assert not any("READY" in f for f in msgs), msgs
        assert msgs[0] == {"STATUS": "starting"}
        assert msgs[-1]["STATUS"].startswith("failed: "), msgs
        assert "net_nosuchdriver0" in msgs[-1]["STATUS"]
    finally:
        d.stop()
        shutil.rmtree(d.dir, ignore_errors=True)


def test_no_watchdog_without_watchdog_usec(notify, monkeypatch):
    """And none when WATCHDOG_PID names another process (a variable inherited from a parent)."""
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    d = ferryd_with_port()
    try:
        d.start()
        notify.wait(lambda _, f: f.get("READY") == "1", what="READY=1")
        time.sleep(0.6)
        assert not any("WATCHDOG" in f for _, f in notify.poll())
    finally:
        d.stop()
        shutil.rmtree(d.dir, ignore_errors=True)


def test_watchdog_pings_go_on_while_a_successor_stalls(notify, monkeypatch):
    """A successor (played by the test) reads the state and the control socket, then says
    nothing: the running ferryd waits for its RELEASE with the workers paused. Expects the
    control loop to ping the watchdog meanwhile (WATCHDOG_USEC 0.4 s: every 0.2 s), and after
    the wait ferryd to go on (STATUS unchanged, no STOPPING=1)."""
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    d = ferryd_with_port()
    try:
        d.start()
        notify.wait(lambda _, f: f.get("READY") == "1", what="READY=1")
        peer = TakeoverPeer(d.socket + ".takeover")
        peer.read_state()
        seen = len(notify.poll())
        t0 = time.monotonic()
        time.sleep(1.5)
        during = [f for _, f in notify.poll()[seen:] if f.get("WATCHDOG") == "1"]
        assert "did not say RELEASE" not in d.read_log(), "the wait ended too early to test"
        assert time.monotonic() - t0 < 3.0
        assert len(during) >= 4, notify.poll()[seen:]
        # Reading on, as a service manager does: a full queue would block the sender.
        wait_for(lambda: notify.poll() and "did not say RELEASE" in d.read_log(), 30,
                 what="the wait's end")
        peer.close()
        assert d.proc.poll() is None
        assert not any("STOPPING" in f for _, f in notify.poll())
        assert d.stop() == 0
    finally:
        d.stop()
        shutil.rmtree(d.dir, ignore_errors=True)


def test_takeover_successor_becomes_main_pid(notify, monkeypatch):
    """The reload of the unit: `ferryd --takeover ... --detach` returns once the successor
    forwards; the successor (not the command systemd ran) says MAINPID=<its pid> and READY=1,
    then pings the watchdog (every second: systemd gives the interval only to the process it
    started); the predecessor exits 0 without STOPPING=1."""
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    a = ferryd_with_port()
    successor = None
    try:
        a.start()
        notify.wait(lambda _, f: f.get("READY") == "1", what="A's READY=1")
        # As ExecReload runs it: no WATCHDOG_* variables, NOTIFY_SOCKET set.
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHDOG_")}
        with open(a.path("successor.log"), "w") as log:
            r = subprocess.Popen([FERRYD, "--config", a.config_path, "--takeover",
                                  a.socket + ".takeover", "--detach"], stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            r.wait(90)
        with open(a.path("successor.log")) as f:
            successor_log = f.read()
        assert r.returncode == 0, successor_log + a.read_log()
        sender, fields = notify.wait(lambda _, f: "MAINPID" in f, what="MAINPID=")
        successor = int(fields["MAINPID"])
        assert sender == successor
        assert successor not in (a.proc.pid, r.pid)  # the detached child, not the command
        assert fields["READY"] == "1"
        assert fields["STATUS"] == f"1 ports, 1 workers forwarding (took over from pid {a.proc.pid})"
        assert f"ferryd: pid {successor} forwards" in successor_log
        assert any(p == successor and f.get("STATUS") == f"taking over from pid {a.proc.pid}"
                   for p, f in notify.poll())
        wait_for(lambda: a.proc.poll() is not None, 30, what="the old ferryd to exit")
        assert a.proc.returncode == 0, a.read_log()
        from_a = [f for p, f in notify.poll() if p == a.proc.pid]
        assert not any("STOPPING" in f for f in from_a)
        assert from_a[-1] == {"STATUS": f"handed over to pid {successor}; exiting"}
        notify.wait(lambda p, f: p == successor and f.get("WATCHDOG") == "1", 10,
                    what="the successor's WATCHDOG=1")
        # The successor serves the same control socket.
        client = RpcClient(a.socket)
        assert [p["name"] for p in client.call("port.list")] == ["vm1"]
        client.call("shutdown")
        client.close()
        wait_for(lambda: not alive(successor), 30, what="the successor to exit")
        assert any(p == successor and f.get("STOPPING") == "1" for p, f in notify.poll())
        successor = None
    finally:
        if successor is not None and alive(successor):
            os.kill(successor, 15)
            wait_for(lambda: not alive(successor), 15, what="the successor to stop")
        a.stop()
        for name in os.listdir("/var/run/dpdk") if os.path.isdir("/var/run/dpdk") else []:
            if name.startswith(a.prefix + "-"):
                cleanup_prefix(name)
        shutil.rmtree(a.dir, ignore_errors=True)
