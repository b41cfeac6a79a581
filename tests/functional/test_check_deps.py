"""scripts/check_deps.py: every module and program the tests use comes from scripts/setup.

Sends: the repository as it is, and the same with a setup script that lacks a package the
tests import. Expects: the first passes; the second fails and names the module, the package and
the file that needs it.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECK = os.path.join(ROOT, "scripts", "check_deps.py")


def run(*args):
    return subprocess.run([sys.executable, CHECK, *args], capture_output=True, text=True,
                          timeout=120)


def test_the_repository_passes():
    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "come from scripts/setup's packages" in r.stdout


def test_a_package_missing_from_setup_fails(tmp_path):
    setup = open(os.path.join(ROOT, "scripts", "setup")).read()
    assert " python3-numpy" in setup
    trimmed = tmp_path / "setup"
    trimmed.write_text(setup.replace(" python3-numpy", ""))
    r = run("--setup", str(trimmed))
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("module numpy: from package python3-numpy, which scripts/setup does not install "
            "(needed by tests/functional/pcap_util.py)") in r.stdout
