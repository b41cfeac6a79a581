"""Test harness: start ferryd and dpdk-testpmd peers, talk to the control socket, clean up.

Every DPDK process gets its own --file-prefix and its runtime directory is removed when it
stops; every process is stopped by its pid, politely first. Used by tests/functional,
tests/integration and benchmarks/pvp.
"""
import atexit
import importlib.machinery
import importlib.util
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("FERRY_BUILD", os.path.join(ROOT, "build"))
FERRYD = os.environ.get("FERRYD", os.path.join(BUILD, "control", "ferryd"))
FERRYCTL = os.environ.get("FERRYCTL", os.path.join(BUILD, "control", "ferryctl"))
TESTPMD = os.environ.get("TESTPMD", shutil.which("dpdk-testpmd") or "/usr/bin/dpdk-testpmd")
RUNTIME = "/var/run/dpdk"

_seq = itertools.count()
_live = []  # every process started here, stopped at interpreter exit if a test did not



def load_script(path, name):
    """A Python script of this tree without a .py suffix (benchmarks/pvp, scripts/vm-migrate)
    as a module, to call its functions."""
    loader = importlib.machinery.SourceFileLoader(name, path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    loader.exec_module(module)
    return module

def _stop_leftovers():
    for proc in _live:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


atexit.register(_stop_leftovers)


def spawn(args, **kwargs):
    """subprocess.Popen that is killed at exit if nobody stopped it."""
    proc = subprocess.Popen(args, **kwargs)
    _live.append(proc)
    return proc


def unique_prefix(kind):
    """A DPDK --file-prefix no other process of this run uses."""
    return f"ft{kind}{os.getpid()}x{next(_seq)}"


def cleanup_prefix(prefix):
    shutil.rmtree(os.path.join(RUNTIME, prefix), ignore_errors=True)
    for name in os.listdir("/dev/hugepages") if os.path.isdir("/dev/hugepages") else []:
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join("/dev/hugepages", name))
            except OSError:
                pass


def stop_process(proc, timeout=10.0):
    """SIGTERM, wait, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


class RpcError(Exception):
    def __init__(self, error):
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.message = error.get("message")


class RpcClient:
    """A JSON-RPC client of ferryd's control socket (one JSON object per line)."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.ids = itertools.count(1)

    def send_raw(self, data):
        self.sock.sendall(data)

    def read_line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("control socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call_raw(self, method, params=None):
        req = {"jsonrpc": "2.0", "id": next(self.ids), "method": method}
        if params is not None:
            req["params"] = params
        self.send_raw((json.dumps(req) + "\n").encode())
        return self.read_line()

    def call(self, method, params=None):
        resp = self.call_raw(method, params)
        if "error" in resp:
            raise RpcError(resp["error"])
        return resp["result"]

    def close(self):
        self.sock.close()


def counter_catalog(ferryd=None):
    """ferryd's own list of drop reasons and conntrack counters (`ferryd --print-counters`, as
    the stats.describe method answers): {"drop_reasons": [{name, description}], "ct_counters":
    [{name, kind, description}]}. Tests take the names from here instead of keeping a copy."""
    out = subprocess.run([ferryd or FERRYD, "--print-counters"], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    return json.loads(out)


def tap_netns_unavailable(tools=("ip",)):
    """Why net_tap ports in network namespaces cannot be used here (root, /dev/net/tun, the
    programs `tools`, `ip netns add`), or None when they can. Tests skip with the reason."""
    if os.geteuid() != 0:
        return "net_tap and network namespaces need root"
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        return "/dev/net/tun is not usable"
    for tool in tools:
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/setup installs it)"
    probe = f"ferry-nsprobe-{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        return "ip netns add failed (no network namespace support)"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def build_kind(build=BUILD):
    """Which instruction set the build in `build` targets, from meson's record of its options:
    "native" (-Dnative=true: this machine's CPU, for benchmarks), "portable" (DPDK's baseline),
    or "unknown" (not a meson build directory). Benchmarks print it beside their figures."""
    try:
        with open(os.path.join(build, "meson-info", "intro-buildoptions.json")) as f:
            options = {o["name"]: o["value"] for o in json.load(f)}
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"
    if "native" not in options:
        return "native"  # before the option existed every build had -march=native
    return "native" if options["native"] else "portable"


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Polls predicate until it returns a truthy value; raises TimeoutError naming what."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Ferryd:
    """One ferryd process with a generated config in its own temporary directory.

    ports: list of port objects as in the config; workers: lcore list; extra: more top-level
    config keys. The main lcore is 0 and workers default to [1].
    """

    def __init__(self, ports=(), workers=(1,), extra=None, lcores=None, eal_extra=(),
                 tmpdir=None, log_level="info"):
        self.own_dir = tmpdir is None
        self.dir = tmpdir or tempfile.mkdtemp(prefix="ferry-test-")
        self.prefix = unique_prefix("d")
        self.socket = os.path.join(self.dir, "ferryd.sock")
        lcores = lcores or ",".join(["0@0"] + [f"{w}@{w % os.cpu_count()}" for w in workers])
        self.config = {
            "eal": ["--lcores", lcores, "--file-prefix", self.prefix, "--no-pci",
                    "--log-level", "lib.eal:error", "--log-level", "lib.vhost.config:warning",
                    *eal_extra],
            "control": {"socket": self.socket},
            "workers": list(workers),
            "ports": list(ports),
        }
        if extra:
            self.config.update(extra)
        self.config_path = os.path.join(self.dir, "ferryd.json")
        self.log_path = os.path.join(self.dir, "ferryd.log")
        self.log_level = log_level
        self.args = []  # more ferryd arguments, e.g. ["--restore", FILE]
        self.wrap = []  # a command prefix, e.g. ["ip", "netns", "exec", NAME]
        self.env = None  # ferryd's environment (None: this process's)
        self.proc = None
        self.rpc = None

    def path(self, name):
        return os.path.join(self.dir, name)

    def start(self, timeout=30.0):
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)
        self.log = open(self.log_path, "w")
        self.proc = spawn([*self.wrap, FERRYD, "--config", self.config_path, "--log-level",
                                      self.log_level, *self.args], stdout=self.log,
                          stderr=subprocess.STDOUT, env=self.env)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"ferryd exited with {self.proc.returncode}:\n{self.read_log()}")
            return os.path.exists(self.socket) and "ready:" in self.read_log()

        wait_for(ready, timeout, what="ferryd to become ready")
        self.rpc = RpcClient(self.socket)
        return self

    def read_log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def call(self, method, params=None):
        """One request on the control connection. ferryd closes a client that sent nothing for
        a minute (control/control_server.h, idle_timeout_ms), as an end-to-end test's may be
        while its guests boot on a busy host: a request that could not be sent on a connection
        ferryd closed goes again on a new one (it was not sent, so it runs once)."""
        try:
            return self.rpc.call(method, params)
        except BrokenPipeError:
            self.rpc.close()
            self.rpc = RpcClient(self.socket)
            return self.rpc.call(method, params)

    def port_stats(self, name):
        return self.call("port.stats", {"name": name})[0]

    def stop(self, timeout=15.0):
        """Asks for shutdown over the socket; falls back to signals. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.call("shutdown")
            except Exception:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        rc = stop_process(self.proc)
        if self.rpc:
            self.rpc.close()
        self.log.close()
        cleanup_prefix(self.prefix)
        return rc

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, *exc):
        self.stop()
        # Keep the directory (config, log) when the block failed, for whoever debugs it.
        if self.own_dir and exc_type is None and not os.environ.get("FERRY_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)


class TestPmd:
    """dpdk-testpmd in interactive mode as a virtio-user peer (the VM stand-in) or generator.

    sockets: vhost-user socket paths, one virtio-user port each. server=True makes the
    virtio-user side the vhost-user server (for ferryd ports in client mode).
    """

    __test__ = False  # not a pytest test class despite its name
    PROMPT = b"testpmd> "

    def __init__(self, sockets, lcores="0@0,1@0", fwd_args=(), server=False, mbufs=8192,
                 queues=1, extra_eal=()):
        self.prefix = unique_prefix("p")
        eal = ["--no-huge", "-m", "512", "--lcores", lcores, "--file-prefix", self.prefix,
               "--no-pci", "--single-file-segments", "--log-level", "lib.eal:error",
               *extra_eal]
        for i, s in enumerate(sockets):
            vdev = f"net_virtio_user{i},path={s},queues={queues}"
            if server:
                vdev += ",server=1"
            eal += ["--vdev", vdev]
        # stdbuf: testpmd prints with stdio, which a pipe would buffer past the prompt.
        self.args = ["stdbuf", "-o0", TESTPMD, *eal, "--", "-i", f"--total-num-mbufs={mbufs}",
                     f"--rxq={queues}", f"--txq={queues}", *fwd_args]
        self.proc = None
        self.output = b""

    def start(self, timeout=30.0):
        self.proc = spawn(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._read_until_prompt(timeout)
        return self

    def _read_until_prompt(self, timeout):
        deadline = time.monotonic() + timeout
        out = b""
        while not out.endswith(self.PROMPT):
            if self.proc.poll() is not None:
                out += self.proc.stdout.read() or b""
                raise RuntimeError(f"testpmd exited with {self.proc.returncode}:\n{out.decode(errors='replace')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"testpmd prompt not seen; output so far:\n{out.decode(errors='replace')}")
            chunk = self.proc.stdout.read()
            if chunk:
                out += chunk
            else:
                time.sleep(0.02)
        self.output += out
        return out[: -len(self.PROMPT)].decode(errors="replace")

    def cmd(self, line, timeout=20.0):
        """Runs one testpmd command and returns its output."""
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        return self._read_until_prompt(timeout)

    def port_stats(self, port):
        """{'rx_packets', 'tx_packets', 'rx_bytes', 'tx_bytes'} of one port."""
        import re
        text = self.cmd(f"show port stats {port}")
        rx = re.search(r"RX-packets:\s*(\d+)\s+RX-missed:\s*(\d+)\s+RX-bytes:\s*(\d+)", text)
        tx = re.search(r"TX-packets:\s*(\d+)\s+TX-errors:\s*(\d+)\s+TX-bytes:\s*(\d+)", text)
        return {"rx_packets": int(rx.group(1)), "rx_bytes": int(rx.group(3)),
                "tx_packets": int(tx.group(1)), "tx_bytes": int(tx.group(3))}

    def drain(self, mode_after="mac", seconds=0.5):
        """Receives what is still queued towards the peer without sending anything, so its rx
        counters include every packet the switch sent. Call after `stop`."""
        self.cmd("set fwd rxonly")
        self.cmd("start")
        time.sleep(seconds)
        self.cmd("stop")
        self.cmd(f"set fwd {mode_after}")

    def link_up(self, port):
        return "Link status: up" in self.cmd(f"show port info {port}")

    def stop(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except Exception:
                pass
        rc = stop_process(self.proc)
        cleanup_prefix(self.prefix)
        return rc

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
