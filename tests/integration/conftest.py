"""Fixtures of the integration tests (ferryd + dpdk-testpmd virtio-user peers)."""
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # vhost_util, any import mode

import ferry_harness  # noqa: E402  (tests/conftest.py put tests/lib on the path)
from vhost_util import Procs  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def testpmd_available():
    """dpdk-testpmd plays the VMs; without it these tests cannot run at all."""
    if not (os.path.isfile(ferry_harness.TESTPMD) and os.access(ferry_harness.TESTPMD, os.X_OK)):
        pytest.fail(f"dpdk-testpmd not found at {ferry_harness.TESTPMD}: run scripts/setup "
                    f"(Debian package dpdk) or set TESTPMD", pytrace=False)
    if shutil.which("stdbuf") is None:
        pytest.fail("stdbuf (coreutils) is needed to drive testpmd", pytrace=False)


@pytest.fixture
def procs():
    """Register every ferryd and testpmd a test starts; all are stopped after the test."""
    p = Procs()
    yield p
    p.stop_all()
