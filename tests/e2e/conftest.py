"""Fixtures shared by the end-to-end tests."""
import shutil

import pytest

import migration_scene as ms


@pytest.fixture
def scene(tmp_path):
    """Two ferryd (hosts A and B) on a bridge in a network namespace, started, with a peer and
    guests to add (migration_scene.Scene); everything stopped after the test."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is not installed (scripts/setup installs it)")
    s = ms.Scene(str(tmp_path))
    try:
        yield s.start()
    finally:
        s.stop()
