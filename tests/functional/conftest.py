"""Fixtures shared by the functional (pcap in, pcap out) tests."""
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pcap_util import PcapBridge  # noqa: E402


@pytest.fixture
def bridge():
    """A PcapBridge, stopped after the test; its directory (config, log, pcaps) is kept only
    when the test failed before reading the outputs."""
    b = PcapBridge()
    yield b
    b.close()
    if b.outputs is not None:
        shutil.rmtree(b.ferryd.dir, ignore_errors=True)
