"""The vhost-user device-state messages (42 SET_DEVICE_STATE_FD, 43 CHECK_DEVICE_STATE) against a
real ferryd, from a scripted front-end on a vhost-user server port: DPDK's external message hook
and the reply it sends. Each case sends what a hostile or broken front-end could and expects the
answer the vhost-user specification gives (bits 0-7 non-zero: refused; bit 8: no back-end fd),
the connection still open afterwards, and nothing installed. A whole SAVE returns the port's
scope stream (the \\x89FERRY magic) over the pipe.
"""
import array
import os
import socket
import struct

from ferry_harness import wait_for
from vhost_util import start_ferryd

SET_FD, CHECK = 42, 43
GET_FEATURES = 1
VERSION = 0x1
REFUSED = 0x101
ACCEPTED = 0x100


class FrontEnd:
    """A vhost-user front-end speaking just enough of the protocol."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)
        self.s.connect(path)

    def send(self, request, payload=b"", fds=()):
        msg = struct.pack("<III", request, VERSION, len(payload)) + payload
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.s.sendmsg([msg], anc)

    def reply(self):
        head = self.s.recv(12, socket.MSG_WAITALL)
        request, flags, size = struct.unpack("<III", head)
        assert flags & 0x4, flags  # the reply bit
        body = self.s.recv(size, socket.MSG_WAITALL) if size else b""
        return request, body

    def call(self, request, payload=b"", fds=()):
        self.send(request, payload, fds)
        req, body = self.reply()
        assert req == request
        return struct.unpack("<Q", body)[0]

    def alive(self):
        """Answers GET_FEATURES: the back-end kept the connection."""
        self.send(GET_FEATURES)
        return self.reply()[0] == GET_FEATURES


def params(direction, phase):
    return struct.pack("<II", direction, phase)


def attached(d, fe):
    """A first round trip (the vhost library accepts a connection up to a second late), then
    housekeeping's scan attaches the handler: ferryd's control loop runs it after every turn,
    so two control requests answered one after the other have a scan between them, however
    slow the host. Then a CHECK with no transfer answers 1 (refused) rather than closing the
    connection."""
    assert fe.alive()
    d.call("stats")
    d.call("stats")
    return fe.call(CHECK) == 1


def test_hostile_requests_are_refused_and_the_connection_stays(procs):
    d = start_ferryd(procs, names=("vm1",))
    fe = FrontEnd(d.path("vm1.sock"))
    assert attached(d, fe)
    r, w = os.pipe()
    try:
        cases = [("unknown direction", params(7, 0), [w]),
                 ("unknown phase", params(0, 3), [w]),
                 ("SAVE with a read end", params(0, 0), [r]),
                 ("LOAD with a write end", params(1, 0), [w]),
                 ("no fd", params(0, 0), []),
                 ("two fds", params(0, 0), [w, w]),
                 ("short payload", b"\0\0\0\0", [w])]
        for what, payload, fds in cases:
            assert fe.call(SET_FD, payload, fds) == REFUSED, what
            assert fe.alive(), what
        assert fe.call(CHECK) == 1  # still nothing to check
    finally:
        os.close(r)
        os.close(w)
    assert d.call("ct.list")["connections"] == []


def test_save_writes_the_port_stream(procs):
    d = start_ferryd(procs, names=("vm1",))
    fe = FrontEnd(d.path("vm1.sock"))
    assert attached(d, fe)
    r, w = os.pipe()
    assert fe.call(SET_FD, params(0, 0), [w]) == ACCEPTED
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    assert data.startswith(b"\x89FERRY\r\n"), data[:16]
    assert fe.call(CHECK) == 0
    last = d.call("migrate.status")["in_band"][-1]
    assert last["direction"] == "save" and last["result"] == "ok", last
    assert last["bytes"] == len(data), last


def test_load_of_garbage_fails_check_and_installs_nothing(procs):
    d = start_ferryd(procs, names=("vm1",))
    fe = FrontEnd(d.path("vm1.sock"))
    assert attached(d, fe)
    r, w = os.pipe()
    assert fe.call(SET_FD, params(1, 0), [r]) == ACCEPTED
    os.close(r)
    os.write(w, b"\x89FERRY\r\n" + b"\x00" * 200)  # a magic, then nonsense
    os.close(w)
    assert fe.call(CHECK) == 1
    wait_for(lambda: d.call("migrate.status")["in_band"], 5, what="the transfer's report")
    last = d.call("migrate.status")["in_band"][-1]
    assert last["direction"] == "load" and last["result"] == "failed", last
    assert fe.alive()
    assert d.call("ct.list")["connections"] == []
