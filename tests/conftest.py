"""pytest configuration shared by tests/functional and tests/integration.

Puts tests/lib (ferry_harness) on sys.path and checks once per session that ferryd is built, so
a missing build is reported as such instead of as a failure of every test.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))

import ferry_harness  # noqa: E402  (needs the path above)


@pytest.fixture(scope="session", autouse=True)
def ferryd_built():
    """The ferryd binary under test; fails every test with one clear message when it is missing."""
    path = ferry_harness.FERRYD
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"ferryd not found at {path}: build it first (scripts/build), or point "
                    f"FERRY_BUILD / FERRYD at a build", pytrace=False)
    return path
