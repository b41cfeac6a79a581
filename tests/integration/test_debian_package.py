"""The Debian package: built from a copy of the source tree with dpkg-buildpackage, installed,
used as installed, purged.

Builds: `dpkg-buildpackage -b -us -uc` (parallel=2, no unit tests or benchmarks: debian/rules).
Expects: the package holds what a host needs (docs/service.md); the installed unit verifies;
the installed ferryd, started with a copy of the installed /etc/ferry/ferryd.json (socket,
vhost-user path and DPDK file prefix moved to a private directory), forwards and answers the
installed ferryctl; after `apt-get purge` nothing of the package remains.
Skipped only when dpkg-buildpackage is missing (scripts/setup installs dpkg-dev and debhelper)
or when a ferry package is installed already (the test would replace and purge it). Needs root,
as every test here.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from ferry_harness import ROOT, cleanup_prefix, spawn, stop_process, unique_prefix, wait_for  # noqa: E402

APT_LOCK = ["-o", "DPkg::Lock::Timeout=300"]  # another apt run on this host: wait, do not fail

EXPECTED = [
    "/usr/bin/ferryd", "/usr/bin/ferryctl", "/usr/bin/vm-migrate",
    "/etc/ferry/ferryd.json",
    "/usr/share/ferry/schema.json", "/usr/share/ferry/examples/demo.json",
    "/usr/share/ferry/examples/stateful-firewall.json",
    "/lib/systemd/system/ferry.service",
    "/usr/lib/tmpfiles.d/ferry.conf", "/usr/lib/sysctl.d/60-ferry-hugepages.conf",
    "/usr/share/man/man8/ferryd.8.gz", "/usr/share/man/man8/ferryctl.8.gz",
    "/usr/share/doc/ferry/service.md.gz", "/usr/share/doc/ferry/migration-stream.md.gz",
]


def run(args, timeout=120, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


def package_installed():
    r = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", "ferry"])
    return r.returncode == 0 and r.stdout.startswith("ii")


@pytest.fixture(scope="module")
def deb():
    """The built .deb, from a copy of the tree (the build writes debian/ and obj-* into it)."""
    if shutil.which("dpkg-buildpackage") is None:
        pytest.skip("dpkg-buildpackage not installed (scripts/setup installs dpkg-dev)")
    if package_installed():
        pytest.skip("a ferry package is installed on this host; not replacing it")
    work = tempfile.mkdtemp(prefix="ferry-deb-")
    src = os.path.join(work, "ferry")
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "build-*", "obj-*", "__pycache__", "*.pyc", ".pytest_cache"))
    env = dict(os.environ, DEB_BUILD_OPTIONS="parallel=2 nocheck noddebs")
    r = run(["dpkg-buildpackage", "-b", "-us", "-uc"], timeout=3600, cwd=src, env=env)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    debs = glob.glob(os.path.join(work, "ferry_*.deb"))
    assert len(debs) == 1, os.listdir(work)
    yield debs[0]
    shutil.rmtree(work, ignore_errors=True)


def package_files(deb):
    """Every path the package ships other than a directory (a directory such as /lib may be
    the host's own, and stays). @return absolute paths"""
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE) as p:
        with tarfile.open(fileobj=p.stdout, mode="r|") as tar:
            return ["/" + m.name.lstrip("./") for m in tar if not m.isdir()]


def installed_config_copy(directory, prefix):
    """The installed configuration, with its paths moved into directory (a private control
    socket and vhost-user socket, an own DPDK file prefix). @return the copy's path"""
    with open("/etc/ferry/ferryd.json") as f:
        cfg = json.load(f)
    cfg["control"]["socket"] = os.path.join(directory, "ferryd.sock")
    for p in cfg["ports"]:
        if p.get("type") == "vhost-user":
            p["path"] = os.path.join(directory, os.path.basename(p["path"]))
    eal = cfg["eal"]
    eal[eal.index("--file-prefix") + 1] = prefix
    eal += ["--no-pci", "--log-level", "lib.eal:error"]
    path = os.path.join(directory, "ferryd.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def test_install_run_purge(deb):
    run_dir_before = os.path.exists("/run/ferry")
    r = run(["apt-get", "install", "-y", *APT_LOCK, deb], timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    purged = False
    try:
        files = run(["dpkg", "-L", "ferry"]).stdout.split()
        for path in EXPECTED:
            assert path in files, f"{path} not in the package"
            assert os.path.exists(path), path
        assert os.access("/usr/bin/vm-migrate", os.X_OK)
        r = run(["dpkg-query", "-W", "-f=${Conffiles}", "ferry"])
        assert "/etc/ferry/ferryd.json" in r.stdout

        # The shipped configuration is valid as it is; the unit verifies as installed (its
        # ExecStart binary and its man pages exist).
        r = run(["/usr/bin/ferryd", "--config", "/etc/ferry/ferryd.json", "--check"])
        assert r.returncode == 0, r.stdout + r.stderr
        r = run(["/usr/bin/ferryd", "--version"])
        assert r.stdout.startswith("ferryd "), r.stdout
        if shutil.which("systemd-analyze"):
            r = run(["systemd-analyze", "verify", "ferry.service"])
            assert r.returncode == 0, r.stdout + r.stderr

        d = tempfile.mkdtemp(prefix="ferry-deb-run-")
        prefix = unique_prefix("k")
        cfg = installed_config_copy(d, prefix)
        log_path = os.path.join(d, "ferryd.log")
        with open(log_path, "w") as log:
            proc = spawn(["/usr/bin/ferryd", "--config", cfg], stdout=log,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            def ready():
                assert proc.poll() is None, open(log_path).read()
                return "ready:" in open(log_path).read()
            wait_for(ready, 60, what="the installed ferryd to become ready")
            sock = os.path.join(d, "ferryd.sock")
            r = run(["/usr/bin/ferryctl", "-s", sock, "--json", "port", "list"])
            assert r.returncode == 0, r.stderr
            assert [p["name"] for p in json.loads(r.stdout)] == ["vm1"]
            r = run(["/usr/bin/ferryctl", "-s", sock, "shutdown"])
            assert r.returncode == 0, r.stderr
            proc.wait(30)
            assert proc.returncode == 0, open(log_path).read()
        finally:
            stop_process(proc)
            cleanup_prefix(prefix)
            shutil.rmtree(d, ignore_errors=True)

        r = run(["apt-get", "purge", "-y", *APT_LOCK, "ferry"], timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        purged = True
        # Purged: dpkg forgets the package, conffiles included.
        r = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", "ferry"])
        assert r.returncode != 0 or r.stdout.startswith(("un", "pn")), r.stdout
        left = [p for p in package_files(deb) if os.path.lexists(p)]
        assert left == [], f"left after purge: {left}"
        assert not os.path.exists("/etc/ferry")
        assert not os.path.exists("/usr/share/ferry")
        if not run_dir_before:
            assert not os.path.exists("/run/ferry")  # made by the tmpfiles snippet, empty here
    finally:
        if not purged and package_installed():
            run(["apt-get", "purge", "-y", *APT_LOCK, "ferry"], timeout=600)
