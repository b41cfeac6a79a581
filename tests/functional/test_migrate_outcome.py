"""Every live migration ends with each connection on exactly one ferryd, whatever the timing:
a target whose control thread is too slow for its deadline refuses and leaves nothing behind
(no dormant entry, no late install), and a commit the source never hears of is asked for
again, so the source retires its copies and a move back (A -> B -> A) goes through at once.
The target's slow control thread is FERRY_TEST_SLOW_TASK=NAME:MS (test only, off by default).
"""
import os
import socket
import threading
import time

import pytest

from ct_util import bridges
from test_migrate_file import cli, source_with_connection, srv, target
from test_migrate_live import comparable, wait_phase


@pytest.fixture
def ctb():
    yield from bridges()


def slow_target(ctb, task, ms):
    b = target(ctb)
    b.ferryd.env = dict(os.environ, FERRY_TEST_SLOW_TASK=f"{task}:{ms}")
    b.start()
    return b


def a_goes_on(a):
    reply = srv(40001, "PA", 5011, 1011, b"still on A")
    a.phase([reply], out={"inside": [reply]})


def test_staging_after_the_deadline_leaves_nothing(ctb):
    """Sends a pre-copy to a target whose staging task starts 3 s late, its deadline at 2 s.
    Expects a refusal, the source as it was, and on the target no entry once the late task
    had its turn (before: a dormant entry dropping the connection's packets forever)."""
    a = source_with_connection(ctb)
    before = comparable(a.conns())
    b = slow_target(ctb, "stage", 3000)
    address = b.call("migrate.receive", {"listen": f"unix:{b.ferryd.path('s.sock')}",
                                         "timeout_s": 2})["address"]
    a.call("migrate.send", {"to": address, "precopy": True, "timeout_s": 10})
    src = wait_phase(a)
    assert src["phase"] in ("refused", "failed"), src
    time.sleep(2)  # the late task has run on B by now
    assert wait_phase(b)["phase"] in ("refused", "failed")
    assert b.conns() == []
    assert comparable(a.conns()) == before
    a_goes_on(a)


def test_trailer_just_before_the_deadline_with_a_slow_install(ctb):
    """Holds a pre-copy (staged dormant on the target), continues 2.5 s into the target's 3 s,
    and the target's install task starts 3 s late. Expects the target to refuse at its
    deadline and never install afterwards: the connection stays on the source only, no
    dormant or active copy on the target."""
    a = source_with_connection(ctb)
    before = comparable(a.conns())
    b = slow_target(ctb, "install", 3000)
    t0 = time.monotonic()
    address = b.call("migrate.receive", {"listen": f"unix:{b.ferryd.path('i.sock')}",
                                         "timeout_s": 3})["address"]
    a.call("migrate.send", {"to": address, "precopy": True, "hold": True, "timeout_s": 20})
    wait_phase(a, ("ready",))
    assert [c["dormant"] for c in b.conns()] == [True]
    time.sleep(max(0.0, 2.5 - (time.monotonic() - t0)))
    a.call("migrate.continue")
    src = wait_phase(a)
    assert src["phase"] in ("refused", "failed"), src
    time.sleep(4)  # the late install task has had its turn on B
    assert wait_phase(b)["phase"] in ("refused", "failed")
    assert b.conns() == []
    assert comparable(a.conns()) == before
    a_goes_on(a)


def test_slow_install_without_precopy_is_never_installed_late(ctb):
    """The whole stream at once; the target's install task starts 3 s late, its deadline at
    2 s. Expects a refusal and no connection on the target afterwards."""
    a = source_with_connection(ctb)
    before = comparable(a.conns())
    b = slow_target(ctb, "install", 3000)
    address = b.call("migrate.receive", {"listen": f"unix:{b.ferryd.path('n.sock')}",
                                         "timeout_s": 2})["address"]
    a.call("migrate.send", {"to": address, "timeout_s": 10})
    assert wait_phase(a)["phase"] in ("refused", "failed")
    time.sleep(2)
    assert wait_phase(b)["phase"] in ("refused", "failed")
    assert b.conns() == []
    assert comparable(a.conns()) == before
    a_goes_on(a)


class AnswerDropper:
    """A unix socket proxy in front of a target: the first connection's bytes go to the target,
    the target's answer is swallowed and the source's side closed once the target closes
    (a lost COMMIT); with delay_s the answer is held that long instead (a late COMMIT). Later
    connections pass untouched."""

    def __init__(self, path, target_path, delay_s=None):
        self.path, self.target_path, self.delay_s = path, target_path, delay_s
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.connections = 0
        self.stop = False
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            first = self.connections == 1
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            up.connect(self.target_path)
            threading.Thread(target=self.pipe, args=(conn, up, False), daemon=True).start()
            threading.Thread(target=self.pipe, args=(up, conn, first), daemon=True).start()

    def pipe(self, src, dst, drop):
        held = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if drop:
                    held += data
                else:
                    dst.sendall(data)
        except OSError:
            pass
        if drop and self.delay_s is not None:
            time.sleep(self.delay_s)
            try:
                dst.sendall(held)
            except OSError:
                pass
        for s in (dst, src):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.sock.close()


@pytest.mark.parametrize("late", [False, True])
def test_lost_or_late_commit_is_resolved_and_a_move_back_works(ctb, tmp_path, late):
    """The target's COMMIT never reaches the source (dropped by a proxy), or arrives after the
    source's time limit. Expects exactly one owner afterwards: the target has the connection,
    the source retired its copy (it asked the target for the outcome); the move back
    (B -> A) goes through at once, and the connection continues on A."""
    a = source_with_connection(ctb)
    b = target(ctb)
    b.start()
    b_sock = b.ferryd.path("b.sock")
    b.call("migrate.receive", {"listen": f"unix:{b_sock}", "timeout_s": 20})
    proxy = AnswerDropper(str(tmp_path / "proxy.sock"), b_sock, delay_s=4 if late else None)
    try:
        a.call("migrate.send", {"to": f"unix:{proxy.path}", "timeout_s": 2})
        dst = wait_phase(b)
        assert dst["phase"] == "committed", dst
        src = wait_phase(a, timeout=30)
        assert src["phase"] == "committed", src
    finally:
        proxy.close()
    assert a.conns() == []
    assert [c["orig"]["sport"] for c in b.conns()] == [40001]
    reply = srv(40001, "PA", 5011, 1011, b"on B")
    b.phase([reply], out={"inside": [reply]})
    back = a.call("migrate.receive", {"listen": f"unix:{a.ferryd.path('a.sock')}"})["address"]
    b.call("migrate.send", {"to": back, "port": "lan1"})
    assert wait_phase(b)["phase"] == "committed"
    assert wait_phase(a)["phase"] == "committed"
    assert b.conns() == []
    assert [c["orig"]["sport"] for c in a.conns()] == [40001]
    more = cli(40001, "PA", 1011, 5015, b"back on A")
    a.phase([more], out={"outside": [more]})
