"""The control thread's pause of the workers, against an idle worker in its longest back-off.

Sends: ct.flush (a command that pauses every worker) to a ferryd whose only worker is idle and
sleeps up to a second at a time (idle_backoff.max_us 1,000,000, the schema's limit), many times.
Expects: every pause succeeds and each takes far less than the 1 s pause timeout: a worker
in its back-off sees a pause request within about a millisecond.
"""
import time

from ferry_harness import Ferryd


def test_pause_of_a_worker_in_a_long_backoff():
    d = Ferryd(extra={"conntrack": {"capacity": 1024},
                      "idle_backoff": {"enabled": True, "min_us": 1000, "max_us": 1000000,
                                       "idle_polls": 1}})  # no ports: the worker stays idle
    with d:
        time.sleep(1.5)  # let the idle worker's sleeps grow to the maximum
        slowest = 0.0
        for _ in range(10):
            t0 = time.monotonic()
            d.call("ct.flush", {})  # refused with "did not pause within 200 ms" before
            slowest = max(slowest, time.monotonic() - t0)
            time.sleep(0.3)
        assert slowest < 0.1, f"slowest pause took {slowest * 1000:.0f} ms"
