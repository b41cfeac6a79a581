"""benchmarks/pvp's cpu accounting: how much cpu the forwarding threads of the switch and the
generator got, how much went to other processes, and renicing them on a shared host."""
import os
import time

CONTENDED = 0.25  # cpus used by other processes (and the hypervisor) that make a run suspect


CLK_TCK = os.sysconf("SC_CLK_TCK")


def host_cpu_s():
    """(busy, steal) cpu-seconds of the whole host since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def threads_cpu_s(pid, prefix=None):
    """cpu-seconds run by the threads of pid (only those whose name starts with prefix)."""
    total = 0
    base = f"/proc/{pid}/task"
    try:
        tids = os.listdir(base)
    except OSError:
        return 0.0
    for tid in tids:
        try:
            if prefix:
                with open(f"{base}/{tid}/comm") as f:
                    if not f.read().startswith(prefix):
                        continue
            with open(f"{base}/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e9


def renice(pid, nice):
    """Sets the nice value of every thread of pid (nice is per thread on Linux) and of its
    autogroup: with sched_autogroup on, a thread's nice only ranks it inside its session, so each
    process is started in a session of its own (see main) and the session is reniced too."""
    try:
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(nice))
    except OSError:
        pass
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
        except OSError:
            pass


class CpuMeter:
    """How much cpu the forwarding threads got and how much went to other processes."""

    def __init__(self, switch_pids, gen_pid, switch_fwd_thread="rte-worker"):
        self.pids = {"switch": switch_pids, "gen": [gen_pid]}
        self.fwd = {"switch": switch_fwd_thread, "gen": "rte-worker"}

    def sample(self):
        s = {"t": time.monotonic(), "host": host_cpu_s()}
        for k, pids in self.pids.items():
            s[k] = sum(threads_cpu_s(pid) for pid in pids)
            s[k + "_fwd"] = sum(threads_cpu_s(pid, self.fwd[k]) for pid in pids)
        s["self"] = threads_cpu_s(os.getpid())
        return s

    @staticmethod
    def delta(a, b):
        dt = b["t"] - a["t"]
        ours = sum(b[k] - a[k] for k in ("switch", "gen", "self"))
        return {"switch_fwd_cpu": round((b["switch_fwd"] - a["switch_fwd"]) / dt, 3),
                "switch_cpu": round((b["switch"] - a["switch"]) / dt, 3),
                "gen_cpu": round((b["gen"] - a["gen"]) / dt, 3),
                "gen_fwd_cpu": round((b["gen_fwd"] - a["gen_fwd"]) / dt, 3),
                "other_cpu": round(max(0.0, (b["host"][0] - a["host"][0]) - ours) / dt, 3),
                "steal_cpu": round((b["host"][1] - a["host"][1]) / dt, 3)}


def wait_quiet(limit):
    """Waits up to limit seconds for a 1-second stretch with the host (nearly) idle; returns
    the cpus other processes used in the last probe."""
    deadline = time.monotonic() + limit
    while True:
        b0, t0 = host_cpu_s()[0], time.monotonic()
        time.sleep(1.0)
        busy = (host_cpu_s()[0] - b0) / (time.monotonic() - t0)
        if busy < CONTENDED or time.monotonic() >= deadline:
            return round(busy, 3)
