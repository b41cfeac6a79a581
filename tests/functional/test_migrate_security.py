"""Who may write state into ferryd over the migration channel. A stream carries ESTABLISHED
connections and NAT bindings: whoever sends one opens the target's firewall, so the channel is
treated like a root shell. Each test first plays the attack (a stream forged with
make_migration_stream: one ESTABLISHED connection 10.0.0.0:1024 -> 198.51.100.7:80 on port
lan1) and expects it refused before a byte of state is read (the target's ct.list stays empty
and it goes on listening), then the real source's migration to go through.
"""
import os
import stat

import pytest

from ct_util import bridges
from test_migrate_file import source_with_connection, target


@pytest.fixture
def ctb():
    yield from bridges()


def test_save_does_not_follow_a_planted_symlink(ctb, tmp_path):
    """migrate.save writes through a temporary file next to FILE. Plants a symlink at the name
    that temporary file used to have (FILE.tmp.PID) pointing at a file of the victim's. Expects
    the victim untouched, the link still there, and FILE a stream that migrate.load takes."""
    a = source_with_connection(ctb)
    victim = tmp_path / "victim.txt"
    victim.write_text("the victim's data")
    out = tmp_path / "ckpt.bin"
    planted = tmp_path / f"ckpt.bin.tmp.{a.ferryd.proc.pid}"
    planted.symlink_to(victim)
    saved = a.call("migrate.save", {"file": str(out)})
    assert saved["connections"] == 1, saved
    assert victim.read_text() == "the victim's data"
    assert os.path.islink(planted) and not os.path.islink(out)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if ".tmp." in p.name] == [planted.name]
    b = target(ctb)
    b.start()
    assert b.call("migrate.load", {"file": str(out)})["connections"] == 1
