"""scripts/vm-migrate, run as an operator runs it, against two real ferryd and a fake QEMU.

The fake QEMU is a QMP server in a thread (FakeQmp): it greets, answers the commands the script
sends as the test scripted them (query-status, query-migrate's succession of statuses), sends
MIGRATION events the script must skip, and records every command in order. Ferryd A tracks an
ESTABLISHED connection through ct_util's stateful firewall whose first packet came in on vm1,
the guest's port; ferryd B has a port vm1 too and, like A, the uplink wan1.

Checked: a move puts the flows on B while the guest is stopped, before QEMU is told to switch
over, and reports its times as JSON; flows that cannot move cancel the QEMU migration and leave
A exactly as it was; a QEMU failure after the hand-over brings the flows back to A, also when
the target QEMU named by --target-qmp died; the pre-flight checks refuse before QEMU migrates
anything; a QEMU failure before the switch-over touches no ferryd and leaves B ready for the
next move; bad arguments are exit 2. The path with a real QEMU is
tests/e2e/test_live_migration.py.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "functional"))

from ferry_harness import ROOT, wait_for  # noqa: E402
from ct_util import bridges, stateful_rules  # noqa: E402
from test_migrate_file import cli, srv  # noqa: E402
from test_migrate_live import comparable  # noqa: E402
from tls_util import make_pki  # noqa: E402

VM_MIGRATE = os.path.join(ROOT, "scripts", "vm-migrate")
CPORT = 40001  # the guest's connection: CLIENT:40001 -> SERVER:80
DOWNTIME = 37  # what the fake QEMU reports as its downtime, ms
GREETING = {"QMP": {"version": {"qemu": {"major": 8, "minor": 2, "micro": 2}, "package": ""},
                    "capabilities": ["oob"]}}
KNOWN = ("qmp_capabilities", "query-status", "migrate-set-capabilities", "migrate",
         "query-migrate", "migrate-continue", "migrate_cancel")


def completed():
    return {"status": "completed", "downtime": DOWNTIME, "total-time": 900}


def failed(desc):
    return {"status": "failed", "error-desc": desc}


class FakeQmp:
    """A QEMU monitor on a unix socket, served by a thread, one client at a time.

    status: the query-status answers in turn, the last one repeating, or a function giving it;
    migrate / resume: the query-migrate answers (status names or dicts) in turn after `migrate`
    and after `migrate-continue`, the last repeating; `migrate_cancel` makes it "cancelled".
    hooks: {command: f()} run when the command arrives, before the answer; their results are
    kept in seen[command]. Every command is recorded in `commands` as (name, arguments); a
    query-migrate answer with a new status is preceded by a MIGRATION event, as QEMU sends them.
    """

    def __init__(self, path, status=("running",), migrate=("active", "active", "pre-switchover"),
                 resume=("active", completed()), hooks=None):
        self.path = path
        self.status = status if callable(status) else list(status)
        self.after = {"migrate": [s if isinstance(s, dict) else {"status": s} for s in migrate],
                      "migrate-continue": [s if isinstance(s, dict) else {"status": s}
                                           for s in resume],
                      "migrate_cancel": [{"status": "cancelled"}]}
        self.migration = [{}]  # query-migrate before any migration: an empty answer
        self.reported = None
        self.hooks = hooks or {}
        self.seen = {}
        self.commands = []
        self.events = 0
        self.error = None
        self.stopping = False
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.listener.settimeout(0.1)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def names(self):
        """The commands received, runs of query-migrate counted as one."""
        out = []
        for name, _ in self.commands:
            if not (name == "query-migrate" and out and out[-1] == name):
                out.append(name)
        return out

    def args(self, name):
        return [a for n, a in self.commands if n == name]

    def serve(self):
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                try:
                    self.session(conn)
                except Exception as e:  # the test sees it in `error`
                    self.error = e

    def session(self, conn):
        conn.settimeout(0.1)
        send = lambda obj: conn.sendall(json.dumps(obj).encode() + b"\r\n")  # noqa: E731
        send(GREETING)
        buf = b""
        while not self.stopping:
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                for obj in self.answer(req["execute"], req.get("arguments", {})):
                    send(obj)

    def answer(self, name, args):
        self.commands.append((name, args))
        if name not in KNOWN:
            return [{"error": {"class": "CommandNotFound",
                               "desc": f"The command {name} has not been found"}}]
        if name in self.hooks:
            self.seen.setdefault(name, []).append(self.hooks[name]())
        if name == "query-status":
            s = (self.status() if callable(self.status)
                 else self.status.pop(0) if len(self.status) > 1 else self.status[0])
            return [{"return": {"status": s, "running": s == "running", "singlestep": False}}]
        if name == "query-migrate":
            info = self.migration.pop(0) if len(self.migration) > 1 else self.migration[0]
            out = []
            if info.get("status") != self.reported:
                self.reported = info.get("status")
                self.events += 1
                out.append({"event": "MIGRATION", "data": {"status": self.reported},
                            "timestamp": {"seconds": 1700000000, "microseconds": 0}})
            return out + [{"return": info}]
        if name in self.after:
            self.migration = list(self.after[name])
        return [{"return": {}}]

    def crash(self):
        """Stops serving at once, the client's connection closed: a QEMU that died."""
        self.stopping = True
        self.thread.join(5)
        self.listener.close()

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.listener.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
        return not self.thread.is_alive()


@pytest.fixture
def ctb(request):
    """ct_util's maker of bridges, stopped after the test; their directories (config, log,
    pcaps) are removed unless the test failed."""
    failed = request.session.testsfailed
    made, bridges_of_test = [], bridges()
    make = next(bridges_of_test)

    def make_kept(**kw):
        made.append(make(**kw))
        return made[-1]

    yield make_kept
    next(bridges_of_test, None)  # stops them
    if request.session.testsfailed == failed:
        for b in made:
            shutil.rmtree(b.ferryd.dir, ignore_errors=True)


@pytest.fixture
def qmp(tmp_path):
    """A maker of FakeQmp servers in tmp_path; all stopped (threads joined, sockets removed)
    after the test, which fails if one of them raised."""
    made = []

    def make(name="src", **kw):
        q = FakeQmp(str(tmp_path / f"{name}.qmp"), **kw)
        made.append(q)
        return q

    yield make
    stopped = [q.stop() for q in made]  # all of them first, then the verdict
    for q, ok in zip(made, stopped):
        assert ok, f"{q.path}: server thread still running"
        assert not os.path.exists(q.path)
        assert q.error is None, f"{q.path}: {q.error!r}"


def source_with_connection(ctb):
    """Ferryd A with CLIENT:40001 -> SERVER:80 ESTABLISHED, 10 bytes sent, its first packet in
    on vm1 (the guest's port); the other phases come in on wan1 and lan1."""
    a = ctb(rules=stateful_rules())
    a.start()
    syn = cli(CPORT, "S", 1000)
    a.phase([syn], out={"outside": [syn]}, side="vm")
    synack = srv(CPORT, "SA", 5000, 1001)
    a.phase([synack], out={"inside": [synack]})
    ack, data = cli(CPORT, "A", 1001, 5001), cli(CPORT, "PA", 1001, 5001, b"0123456789")
    a.phase([ack, data], out={"outside": [ack, data]})
    c = a.conn(sport=CPORT)
    assert c["state"] == "ESTABLISHED" and c["ports"] == ["vm1", "wan1"], c
    return a


def target(ctb, port="vm1"):
    """Ferryd B: the same rules, the guest's port (or another one), the uplink wan1 as on A,
    and no connection; its own phases come in on wan2, ..."""
    b = ctb(rules=stateful_rules())
    b.port(port)
    b.port("wan1")
    b.seq = {"wan": 1}
    return b.start()


def vm_migrate(qmp_path, src_ctl, dst_ctl, *extra, precopy=False):
    """scripts/vm-migrate moving port vm1, as an operator runs it; the flows all at once once the
    guest stopped, or (precopy) their pre-copy during the RAM copy. @return the CompletedProcess"""
    cmd = [sys.executable, VM_MIGRATE, "--qmp", qmp_path, "--uri", "unix:/run/qemu-incoming.sock",
           "--from", src_ctl, "--to", dst_ctl, "--port", "vm1", "--timeout", "15", *extra,
           *([] if precopy else ["--no-precopy"])]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def sports(b):
    return [c["orig"]["sport"] for c in b.conns()]


def as_before(a, b, before):
    """A has its connections exactly as they were, B has none and is not left listening."""
    assert comparable(a.conns()) == before
    assert b.conns() == []  # also nothing B placed ahead, dormant
    assert b.call("migrate.status")["phase"] not in ("listening", "receiving")


def identity(c):
    """What must survive a move: the connection itself, not its worker or timeout."""
    return {k: c[k] for k in ("zone", "proto", "orig", "reply", "state", "ports", "nat", "mark",
                              "packets", "bytes")}


def test_move_puts_the_flows_on_the_target_before_the_switch_over(ctb, qmp):
    a = source_with_connection(ctb)
    b = target(ctb)
    before = a.conn(sport=CPORT)
    src = qmp("src", hooks={"migrate": lambda: sports(b),
                            "migrate-continue": lambda: (sports(a), b.conns(),
                                                         b.call("migrate.status"))})
    # The target QEMU runs the guest once the source switched over.
    dst = qmp("dst", status=lambda: ("running" if "migrate-continue" in src.names()
                                     else "inmigrate"))
    r = vm_migrate(src.path, a.ferryd.socket, b.ferryd.socket, "--target-qmp", dst.path,
                   "--json")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""

    # QEMU's part, in order, MIGRATION events skipped.
    assert src.names() == ["qmp_capabilities", "query-status", "migrate-set-capabilities",
                           "migrate", "query-migrate", "migrate-continue", "query-migrate"]
    assert src.args("migrate-set-capabilities") == [
        {"capabilities": [{"capability": "pause-before-switchover", "state": True}]}]
    assert src.args("migrate") == [{"uri": "unix:/run/qemu-incoming.sock"}]
    assert src.args("migrate-continue") == [{"state": "pre-switchover"}]
    assert src.events >= 3  # active, pre-switchover, completed
    assert set(dst.names()) == {"qmp_capabilities", "query-status"}  # only looked at

    # The flows moved while the guest was stopped, not before: B had nothing when the RAM copy
    # began, and had the connection (A no longer) when QEMU was told to switch over.
    assert src.seen["migrate"] == [[]]
    (_, b_then, b_status), = src.seen["migrate-continue"]  # A retires its copy concurrently
    assert [identity(c) for c in b_then] == [identity(before)]
    assert b_status["role"] == "target" and b_status["phase"] == "committed", b_status

    report = json.loads(r.stdout)
    assert set(report) == {"port", "precopy", "ram_copy_ms", "flows_ms", "ferry_pause_ms",
                           "connections",
                           "macs", "dpi_streams", "qemu_downtime_ms", "total_ms", "ferry_steps_ms",
                           "stopped_to_running_ms", "stopped_at_s", "running_at_s"}, report
    assert report["port"] == "vm1" and report["connections"] == 1, report
    assert report["qemu_downtime_ms"] == DOWNTIME, report
    assert report["ram_copy_ms"] > 0 and report["flows_ms"] > 0, report
    assert 0 < report["ferry_pause_ms"] <= report["flows_ms"], report
    assert report["total_ms"] >= report["ram_copy_ms"] + report["flows_ms"], report
    assert report["stopped_to_running_ms"] >= report["flows_ms"], report

    # Afterwards: on B, not on A, and B forwards the server's reply with no new handshake.
    assert a.conns() == []
    assert [identity(c) for c in b.conns()] == [identity(before)]
    reply = srv(CPORT, "PA", 5001, 1011, b"abcdefghij")
    b.phase([reply], out={"inside": [reply]})


def test_precopy_places_the_flows_ahead_during_the_ram_copy(ctb, qmp):
    a = source_with_connection(ctb)
    b = target(ctb)
    before = a.conn(sport=CPORT)
    # While QEMU copies the RAM, B already has the connection, dormant; A still forwards it.
    src = qmp("src", migrate=("active",) * 40 + ("pre-switchover",), hooks={
        "migrate-continue": lambda: (a.conns(), b.conns(), a.call("migrate.status"))})
    src.hooks["query-migrate"] = lambda: [c["dormant"] for c in b.conns()]
    r = vm_migrate(src.path, a.ferryd.socket, b.ferryd.socket, "--json", precopy=True)
    assert r.returncode == 0, r.stderr
    assert [True] in src.seen["query-migrate"], "never dormant on B during the RAM copy"
    (_, b_then, _), = src.seen["migrate-continue"]
    assert [identity(c) for c in b_then] == [identity(before)]
    assert not b_then[0]["dormant"]  # activated by the commit, before the switch-over
    a_status = a.call("migrate.status")
    assert a_status["phase"] == "committed" and "held" in a_status["steps_ms"], a_status
    assert a.conns() == []
    report = json.loads(r.stdout)
    assert report["precopy"] is True and report["connections_changed_meanwhile"] == 0, report
    reply = srv(CPORT, "PA", 5001, 1011, b"abcdefghij")
    b.phase([reply], out={"inside": [reply]})


def test_precopy_given_up_when_qemu_fails_during_the_ram_copy(ctb, qmp):
    a = source_with_connection(ctb)
    b = target(ctb)
    before = comparable(a.conns())
    src = qmp("src", migrate=("active",) * 20 + (failed("Connection reset by peer"),))
    r = vm_migrate(src.path, a.ferryd.socket, b.ferryd.socket, precopy=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "QEMU migration failed: Connection reset by peer; the guest goes on" in r.stderr
    assert "migrate_cancel" not in src.names() and "migrate-continue" not in src.names()
    st = a.call("migrate.status")
    assert st["phase"] == "failed" and "cancelled" in st["error"], st
    assert wait_for(lambda: b.call("migrate.status")["phase"] == "failed", 10)
    as_before(a, b, before)


def test_precopy_target_that_cannot_listen_stops_before_qemu(ctb, qmp):
    a = source_with_connection(ctb)
    b = target(ctb)
    src = qmp("src")
    r = vm_migrate(src.path, a.ferryd.socket, b.ferryd.socket,
                   "--listen", "unix:/nonexistent-dir/x.sock", precopy=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "migrate.receive" in r.stderr and "QEMU not asked to migrate" in r.stderr, r.stderr
    assert "migrate" not in src.names() and "migrate_cancel" not in src.names()
    assert src.args("migrate-set-capabilities")[-1]["capabilities"][0]["state"] is False
    assert sports(a) == [CPORT] and b.conns() == []


def test_flows_that_cannot_move_cancel_the_qemu_migration(ctb, qmp):
    a = source_with_connection(ctb)
    b = target(ctb)
    before = comparable(a.conns())
    src = qmp("src")
    r = vm_migrate(src.path, a.ferryd.socket, b.ferryd.socket,
                   "--listen", "unix:/nonexistent-dir/x.sock")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "QEMU migration cancelled, the guest goes on on the source" in r.stderr, r.stderr
    assert "migrate.receive" in r.stderr, r.stderr  # the reason: B cannot listen there
    assert src.names() == ["qmp_capabilities", "query-status", "migrate-set-capabilities",
                           "migrate", "query-migrate", "migrate_cancel", "query-migrate",
                           "migrate-set-capabilities"]
    assert src.args("migrate-set-capabilities")[-1]["capabilities"][0]["state"] is False
    assert src.reported == "cancelled"  # waited until QEMU said so
    as_before(a, b, before)


def test_a_source_that_cannot_send_leaves_the_target_free(ctb, qmp):
    a = source_with_connection(ctb)
    b = target(ctb)
    before = comparable(a.conns())
    # A is busy (a migration of its own waits to be received), so its migrate.send fails after
    # B listens: B must not stay listening until its time limit.
    a.call("migrate.receive", {"listen": "unix:" + a.ferryd.path("busy.sock"), "timeout_s": 30})
    src = qmp("src")
    r = vm_migrate(src.path, a.ferryd.socket, b.ferryd.socket)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "migrate.send" in r.stderr and "cancelled" in r.stderr, r.stderr
    assert "migrate_cancel" in src.names() and "migrate-continue" not in src.names()
    assert b.call("migrate.status")["phase"] == "failed"  # its wait ended, not "listening"
    as_before(a, b, before)


@pytest.mark.parametrize("target_qmp", [None, "died"])
def test_qemu_failing_after_the_hand_over_brings_the_flows_back(ctb, qmp, target_qmp):
    """QEMU fails after migrate-continue; with "died", --target-qmp names a target QEMU that dies
    at the switch-over (the guest cannot run there either)."""
    a = source_with_connection(ctb)
    b = target(ctb)
    before = comparable(a.conns())
    extra, dst = [], None
    if target_qmp:
        dst = qmp("dst", status=("inmigrate",))
        extra = ["--target-qmp", dst.path]
    src = qmp("src", resume=("active", failed("Unable to write to socket: Broken pipe")),
              hooks={"migrate-continue": lambda: (sports(b), dst and dst.crash())})
    r = vm_migrate(src.path, a.ferryd.socket, b.ferryd.socket, *extra)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "QEMU migration failed: Unable to write to socket: Broken pipe" in r.stderr, r.stderr
    assert "the flows went back" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert src.seen["migrate-continue"][0][0] == [CPORT]  # they had moved
    assert "migrate_cancel" not in src.names()
    as_before(a, b, before)  # back, as they were
    # And A forwards the connection again.
    reply = srv(CPORT, "PA", 5001, 1011, b"abcdefghij")
    a.phase([reply], out={"inside": [reply]})


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_args(pki):
    """vm-migrate's TLS options: A is ferry-a, B is ferry-b (tls_util's credentials)."""
    return ["--tls-creds-from", pki["a"], "--tls-creds-to", pki["b"],
            "--tls-name-from", "ferry-a", "--tls-name-to", "ferry-b"]


@pytest.mark.parametrize("back", [False, True])
def test_flows_move_over_tls(ctb, qmp, pki, back):
    """--listen tcp: with each host's credentials: the pre-copy and the rest go over TLS, each
    ferryd checking the other's certificate. back: QEMU fails after the hand-over and the
    flows come back to A over TLS as well (--back-listen tcp:, the names the other way)."""
    a = source_with_connection(ctb)
    b = target(ctb)
    before = comparable(a.conns())
    if back:
        src = qmp("src", resume=("active", failed("Unable to write to socket: Broken pipe")))
    else:
        src = qmp("src", migrate=("active",) * 5 + ("pre-switchover",))
    r = vm_migrate(src.path, a.ferryd.socket, b.ferryd.socket, "--listen", "tcp:127.0.0.1:0",
                   "--back-listen", "tcp:127.0.0.1:0", *tls_args(pki), precopy=not back)
    if back:
        assert r.returncode == 1 and "the flows went back" in r.stderr, r.stderr
        as_before(a, b, before)
        assert a.call("migrate.status")["address"].startswith("tcp:127.0.0.1:")
    else:
        assert r.returncode == 0, r.stderr
        assert b.call("migrate.status")["address"].startswith("tcp:127.0.0.1:")
        assert a.conns() == [] and sports(b) == [CPORT]


def test_tcp_without_tls_options_moves_nothing(ctb, qmp):
    """--listen tcp: without the TLS options: B refuses to listen (tcp: is TLS), so QEMU is
    never asked to migrate and nothing moves."""
    a = source_with_connection(ctb)
    b = target(ctb)
    before = comparable(a.conns())
    src = qmp("src")
    r = vm_migrate(src.path, a.ferryd.socket, b.ferryd.socket, "--listen", "tcp:127.0.0.1:0",
                   precopy=True)
    assert r.returncode == 1 and "tls_creds" in r.stderr, r.stderr
    assert "migrate" not in src.names()
    as_before(a, b, before)


@pytest.mark.parametrize("case", ["target_without_port", "source_paused", "target_not_incoming",
                                  "no_control_socket"])
def test_pre_flight_refusals_migrate_nothing(ctb, qmp, case):
    a = source_with_connection(ctb)
    b = target(ctb, port="vm2" if case == "target_without_port" else "vm1")
    before = comparable(a.conns())
    src = qmp("src", status=("paused",) if case == "source_paused" else ("running",))
    extra, src_ctl = [], a.ferryd.socket
    if case == "target_not_incoming":
        dst = qmp("dst", status=("running",))
        extra = ["--target-qmp", dst.path]
    if case == "no_control_socket":
        src_ctl = a.ferryd.path("nosuch.sock")
    r = vm_migrate(src.path, src_ctl, b.ferryd.socket, *extra)
    assert r.returncode == 1, r.stdout + r.stderr
    want = {"target_without_port": "vm-migrate: target ferryd has no port vm1",
            "source_paused": "vm-migrate: the source guest is not running",
            "target_not_incoming": "vm-migrate: the target QEMU is not waiting for an incoming "
                                   "migration",
            "no_control_socket": f"vm-migrate: source ferryd: cannot connect to {src_ctl}: "
                                 f"No such file or directory"}[case]
    assert r.stderr.strip() == want
    assert "migrate" not in src.names() and "migrate-set-capabilities" not in src.names()
    if case == "source_paused":
        assert src.names() == ["qmp_capabilities", "query-status"]
    if case == "target_not_incoming":
        assert dst.names() == ["qmp_capabilities", "query-status"]
    as_before(a, b, before)


def test_qemu_failing_before_the_switch_over_touches_no_ferryd(ctb, qmp):
    a = source_with_connection(ctb)
    b = target(ctb)
    before = comparable(a.conns())
    doomed = qmp("doomed", migrate=("active", failed("Connection refused")))
    r = vm_migrate(doomed.path, a.ferryd.socket, b.ferryd.socket)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip() == ("vm-migrate: QEMU migration failed: Connection refused; "
                                "the guest goes on on the source")
    assert doomed.names() == ["qmp_capabilities", "query-status", "migrate-set-capabilities",
                              "migrate", "query-migrate", "migrate-set-capabilities"]
    assert doomed.args("migrate-set-capabilities")[-1]["capabilities"][0]["state"] is False
    as_before(a, b, before)
    # Nothing left behind on B: the next move (reported as text this time) goes through.
    src = qmp("src")
    r = vm_migrate(src.path, a.ferryd.socket, b.ferryd.socket)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("guest moved: RAM copied in ") and "(1 connections" in r.stdout \
        and f"QEMU downtime {DOWNTIME} ms" in r.stdout, r.stdout
    assert a.conns() == [] and sports(b) == [CPORT]


def test_interrupt_during_the_ram_copy_cancels(ctb, qmp):
    a = source_with_connection(ctb)
    b = target(ctb)
    before = comparable(a.conns())
    src = qmp("src", migrate=("active",))  # the RAM copy never ends by itself
    p = subprocess.Popen([sys.executable, VM_MIGRATE, "--qmp", src.path, "--uri", "unix:/x",
                          "--from", a.ferryd.socket, "--to", b.ferryd.socket, "--port", "vm1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: "query-migrate" in src.names(), 15, what="the RAM copy")
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "interrupted; QEMU migration cancelled, the guest goes on on the source" in err, err
    assert src.names()[-3:] == ["migrate_cancel", "query-migrate", "migrate-set-capabilities"]
    as_before(a, b, before)


def test_a_ram_copy_past_the_time_limit_is_cancelled(ctb, qmp):
    a = source_with_connection(ctb)
    b = target(ctb)
    src = qmp("src", migrate=("active",))
    r = vm_migrate(src.path, a.ferryd.socket, b.ferryd.socket, "--timeout", "2")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "still active at the time limit; QEMU migration cancelled" in r.stderr, r.stderr
    assert src.names()[-3:] == ["migrate_cancel", "query-migrate", "migrate-set-capabilities"]
    assert sports(a) == [CPORT] and b.conns() == []


def test_interrupt_while_the_guest_is_stopped_waits_for_the_move(ctb, qmp):
    a = source_with_connection(ctb)
    b = target(ctb)
    script = []
    # The interrupt arrives when the flows have moved and QEMU is told to switch over.
    src = qmp("src", hooks={"migrate-continue": lambda: script[0].send_signal(signal.SIGINT)})
    script.append(subprocess.Popen(
        [sys.executable, VM_MIGRATE, "--qmp", src.path, "--uri", "unix:/x", "--from",
         a.ferryd.socket, "--to", b.ferryd.socket, "--port", "vm1", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out, err = script[0].communicate(timeout=30)
    assert script[0].returncode == 0, err
    assert "interrupted while the guest was stopped; the move was completed first" in err, err
    assert json.loads(out)["qemu_downtime_ms"] == DOWNTIME
    assert "migrate_cancel" not in src.names()
    assert a.conns() == [] and sports(b) == [CPORT]


@pytest.mark.parametrize("args", [
    [],                                                   # nothing at all
    ["--qmp", "q", "--uri", "u", "--from", "a", "--to", "b"],  # no --port
    ["--qmp", "q", "--uri", "u", "--from", "a", "--to", "b", "--port", "vm1",
     "--timeout", "soon"],                                # not a number
    ["--qmp", "q", "--uri", "u", "--from", "a", "--to", "b", "--port", "vm1", "--bogus"],
    ["--qmp", "q", "--uri", "u", "--from", "a", "--to", "b", "--port", "vm1",
     "--tls-creds-from", "/etc/ferry/tls"],                # TLS options go together
    ["--qmp", "q", "--uri", "unix:/x", "--from", "a", "--to", "b", "--port", "vm1",
     "--listen", "tcp-insecure:0.0.0.0:7700"],            # a wildcard, and no host to send to
    ["--qmp", "q", "--uri", "tcp:hostb:4444", "--from", "a", "--to", "b", "--port", "vm1",
     "--back-listen", "tcp:[::]:7701"],                   # the same for the way back
])
def test_bad_arguments_are_exit_2(args):
    r = subprocess.run([sys.executable, VM_MIGRATE, *args], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("usage: vm-migrate") and "error:" in r.stderr, r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("host_args,host", [(["--target-host", "127.0.0.2"], "127.0.0.2"),
                                            (["--uri", "tcp:127.0.0.3:4444"], "127.0.0.3")])
def test_wildcard_listen_is_sent_to_the_target_host(ctb, qmp, host_args, host):
    """--listen tcp-insecure:0.0.0.0:0 as docs/migration.md shows it: B reports the wildcard
    back, and A is told to send to the host B is reached at (--target-host, or the host of a
    tcp: --uri), not to 0.0.0.0 (which is the source itself on another host)."""
    a = source_with_connection(ctb)
    b = target(ctb)
    src = qmp("src")
    r = vm_migrate(src.path, a.ferryd.socket, b.ferryd.socket, "--listen",
                   "tcp-insecure:0.0.0.0:0", *host_args)
    assert r.returncode == 0, r.stderr
    listened = b.call("migrate.status")["address"]
    assert listened.startswith("tcp-insecure:0.0.0.0:"), listened
    port = listened.rsplit(":", 1)[1]
    assert a.call("migrate.status")["address"] == f"tcp-insecure:{host}:{port}"
    assert a.conns() == [] and sports(b) == [CPORT]


class IdleClosingProxy:
    """A unix socket in front of a ferryd's control socket that closes a client's connection
    after idle_s with no request, as ferryd does after 60 s."""

    def __init__(self, path, upstream, idle_s):
        self.path, self.upstream, self.idle_s = path, upstream, idle_s
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.closed_idle = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.pipe, args=(conn,), daemon=True).start()

    def pipe(self, conn):
        import select
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        up.connect(self.upstream)
        try:
            while True:
                ready, _, _ = select.select([conn, up], [], [], self.idle_s)
                if not ready:
                    self.closed_idle += 1
                    break
                if conn in ready:
                    data = conn.recv(65536)
                    if not data:
                        break
                    up.sendall(data)
                if up in ready:
                    data = up.recv(65536)
                    if not data:
                        break
                    conn.sendall(data)
        except OSError:
            pass
        conn.close()
        up.close()

    def close(self):
        self.sock.close()


def test_control_connections_closed_during_a_long_ram_copy_are_opened_again(ctb, qmp,
                                                                             tmp_path):
    """Both ferryd close vm-migrate's control connections while QEMU copies the RAM (here after
    1 s idle instead of 60 s); QEMU then fails. Expects vm-migrate still to give the held
    pre-copy up (migrate.cancel on A, reaching B's listener), not to leave A held and B with
    dormant entries until the time limit."""
    a = source_with_connection(ctb)
    b = target(ctb)
    before = comparable(a.conns())
    pa = IdleClosingProxy(str(tmp_path / "a-ctl.sock"), a.ferryd.socket, 1.0)
    pb = IdleClosingProxy(str(tmp_path / "b-ctl.sock"), b.ferryd.socket, 1.0)
    try:
        src = qmp("src", migrate=("active",) * 150 + (failed("Connection reset by peer"),))
        src.hooks["query-migrate"] = lambda: time.sleep(0.02)
        r = vm_migrate(src.path, pa.path, pb.path, precopy=True)
    finally:
        pa.close()
        pb.close()
    assert pa.closed_idle >= 1 and pb.closed_idle >= 1  # the RAM copy outlasted the idle time
    assert r.returncode == 1, r.stdout + r.stderr
    assert "QEMU migration failed" in r.stderr, r.stderr
    st = a.call("migrate.status")
    assert st["phase"] == "failed" and "cancelled" in st["error"], st
    assert wait_for(lambda: b.call("migrate.status")["phase"] == "failed", 10)
    as_before(a, b, before)
