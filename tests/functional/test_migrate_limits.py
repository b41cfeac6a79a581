"""A live migration target under a memory limit, sent a hostile stream of 2 GiB. ferryd B
listens (migrate.receive on a unix socket) with a conntrack of 4096 connections, its address
space limited (prlimit --as on the running process) to what it has plus 512 MiB; a source with
the right uid sends a well-formed header and then 2048 sections of an unknown, non-critical
type, 1 MiB each with a good CRC (a reader skips them, so only a bound on the stream's size
stops them), then a trailer. Expects the stream refused while it arrives, naming the bound
(docs/migration-stream.md, "Limits"), B alive, nothing installed, and B still forwarding.
"""
import socket
import struct
import subprocess

from ferry_harness import wait_for
from ct_util import CLIENT, SERVER, bridges, stateful_rules, tcp

import pytest

MIB = 1 << 20
SECTIONS = 2048  # of 1 MiB: 2 GiB


def crc32c(data, crc=0):
    """CRC32C (Castagnoli), as migrate/crc32c.cc computes it."""
    table = crc32c.table
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


crc32c.table = [0] * 256
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    crc32c.table[_i] = _c


def header():
    body = b"\x89FERRY\r\n" + struct.pack(">HHH", 1, 1, 0) + struct.pack(">HQ", 0, 77)
    body += bytes([7]) + b"hostile" + bytes([0])
    body = body[:12] + struct.pack(">H", len(body) + 4) + body[14:]
    return body + struct.pack(">I", crc32c(body))


def section(stype, payload, crc):
    return struct.pack(">HHII", stype, 0, len(payload), crc) + payload


@pytest.fixture
def ctb():
    yield from bridges()


def vm_size(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize")


def test_two_gib_stream_under_a_memory_limit_is_refused(ctb):
    b = ctb(rules=stateful_rules())  # conntrack capacity 4096
    b.start()
    pid = b.ferryd.proc.pid
    limit = vm_size(pid) + 512 * MIB
    subprocess.run(["prlimit", "--pid", str(pid), f"--as={limit}"], check=True)
    path = b.ferryd.path("m.sock")
    b.call("migrate.receive", {"listen": f"unix:{path}", "timeout_s": 60})

    payload = bytes(range(256)) * (MIB // 256)
    crc = crc32c(payload)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(60)
    sent = 0
    try:
        s.sendall(header())
        for _ in range(SECTIONS):
            s.sendall(section(0x7E01, payload, crc))
            sent += len(payload)
        s.sendall(section(0x00FF, struct.pack(">6IQ", SECTIONS, 0, 0, 0, 0, 0, 0), 0))
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = b""
    try:
        while chunk := s.recv(4096):
            answer += chunk
    except OSError:
        pass
    s.close()
    st = wait_for(lambda: (x := b.call("migrate.status"))["phase"] in
                  ("committed", "refused", "failed") and x, 30, what="the migration's end")
    assert st["phase"] == "refused", st
    assert "more than this target can hold" in st["error"], st
    assert answer[:8] == b"\x89FERRYNO", answer[:64]
    assert sent < 512 * MIB, sent  # refused while it arrived
    assert b.ferryd.proc.poll() is None
    assert "more than this target can hold" in b.ferryd.read_log()
    assert b.conns() == []
    # Still forwarding: a new connection from the inside passes.
    syn = tcp(CLIENT, SERVER, 40123, 80, "S", 1)
    b.phase([syn], out={"outside": [syn]})
    b.finish()
    b.check_outputs()
