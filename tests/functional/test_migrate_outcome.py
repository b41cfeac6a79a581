"""Every live migration ends with each connection on exactly one ferryd, whatever the timing:
a target whose control thread is too slow for its deadline refuses and leaves nothing behind
(no dormant entry, no late install).
The target's slow control thread is FERRY_TEST_SLOW_TASK=NAME:MS (test only, off by default).
"""
import os
import time

import pytest

from ct_util import bridges
from test_migrate_file import source_with_connection, srv, target
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
