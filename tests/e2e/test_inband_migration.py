"""In-band migration (docs/migration.md, "In-band migration"): a guest streaming TCP to a peer
outside the stateful firewalls of two ferryd (migration_scene.py) is moved by nothing but QEMU's
own migration, the QMP commands libvirt issues: with pause-before-switchover answered by the test
as libvirt answers it, and without. Nothing is sent to either ferryd. The port's flows travel in
QEMU's stream (VHOST_USER_PROTOCOL_F_DEVICE_STATE): the stream goes on byte-exact, B tracks the
connection and its firewall refuses none of the guest's traffic, and A retires the connection once
the source QEMU is gone. A destination that refuses the state fails QEMU's migration (with
return-path): the guest runs on at A with A's connections unchanged, and so does a destination
ferryd that dies, and a stream altered between the two QEMUs (a flipped byte, a section cut
short). A guest with two ports has each port's state moved on its own vhost-user
connection. The control (ferryd offering no state: the connection is lost at B) is
tests/e2e/test_live_migration.py's test_without_the_flows_the_connection_is_lost.
"""
import ctypes
import os
import socket
import struct
import subprocess
import threading
import time

import pytest

import migration_scene as ms

STREAM_S = 40


def qmp_migrate(source, target, pause_before_switchover, timeout=90, return_path=False,
                until=("completed",), uri=None):
    """The source QEMU's migration as libvirt drives it (return_path: the source learns
    whether the destination loaded everything; uri: where the source sends it, default the
    target's -incoming). @return query-migrate at the end"""
    qmp = ms.vm_migrate_module().Qmp(source.qmp, "source QEMU", 30)
    caps = [{"capability": "pause-before-switchover", "state": pause_before_switchover}]
    if return_path:
        tqmp = ms.vm_migrate_module().Qmp(target.qmp, "target QEMU", 30)
        tqmp.call("migrate-set-capabilities",
                  capabilities=[{"capability": "return-path", "state": True}])
        caps.append({"capability": "return-path", "state": True})
    qmp.call("migrate-set-capabilities", capabilities=caps)
    qmp.call("migrate", uri=uri or target.incoming)
    deadline = time.monotonic() + timeout
    while (status := qmp.call("query-migrate")).get("status") not in until:
        assert status.get("status") not in ("failed", "cancelled"), status
        assert time.monotonic() < deadline, status
        if status.get("status") == "pre-switchover":
            qmp.call("migrate-continue", state="pre-switchover")  # libvirt's answer
        time.sleep(0.05)
    return status


@pytest.mark.parametrize("pause_before_switchover", [True, False])
def test_qemu_migration_alone_moves_the_flows(scene, pause_before_switchover, capsys):
    a, b = scene.hosts["a"], scene.hosts["b"]
    out = scene.start_peer(STREAM_S + 120)
    source = scene.guest("a", ms.stream_script(STREAM_S))
    ms.wait_bytes(out, 200, 120)
    before = ms.stream_connection(a)
    assert before is not None and ms.stream_connection(b) is None

    target = scene.guest("b", ms.stream_script(STREAM_S), incoming=True)
    dropped = ms.drops(scene.hosts)
    t_start = time.monotonic()
    status = qmp_migrate(source, target, pause_before_switchover)
    t_done = time.monotonic()
    # The source reports completed once it has sent everything; B installs when its QEMU has
    # loaded the device state (CHECK_DEVICE_STATE), a moment later.
    ms.fh.wait_for(lambda: ms.stream_connection(b) is not None, 10, interval=0.05,
                   what="B to install the guest's connection")
    moved = ms.stream_connection(b)
    assert moved["ports"] == ["vm1", "uplink"], moved
    for d, direction in ((a, "save"), (b, "load")):  # migrate.status shows the transfer
        last = d.call("migrate.status")["in_band"][-1]
        assert last["port"] == "vm1" and last["direction"] == direction, last
        assert last["result"] == "ok" and last["connections"] >= 1 and last["bytes"] > 0, last
    assert moved["packets"][0] >= before["packets"][0], (moved, before)
    assert ms.stream_connection(a) is not None  # kept until the source QEMU is gone
    source.stop()
    # The connection that took the state closed and the device never ran again on A: A
    # retires what it sent, quietly.
    ms.fh.wait_for(lambda: ms.stream_connection(a) is None, 10, interval=0.1,
                   what="A to retire the moved connection")

    points, data = ms.stream_completes(scene, target, out, STREAM_S + 90, after=t_done)
    lost = ms.drops_since(dropped, scene.hosts)
    assert {k: n for k, n in lost.items()
            if k.startswith("b ") and not k.endswith("no_destination")} == {}, lost

    gap, _ = ms.longest_gap(points, t_start, t_done + 5.0)
    with capsys.disabled():
        print(f"\n  in-band migration (pause-before-switchover {pause_before_switchover}): QEMU "
              f"downtime {status.get('downtime')} ms, total {status.get('total-time')} ms; "
              f"stream interruption {gap * 1000:.0f} ms; {len(data.splitlines())} lines, "
              f"byte-exact; connection on B: {moved['state']}")


def identity(c):
    return {k: c[k] for k in ("zone", "proto", "orig", "reply", "state", "ports", "nat", "mark")}


def test_destination_that_refuses_the_state_fails_the_migration(tmp_path):
    """B's zone 1 takes one connection; the guest has two there (its stream and its ping): B
    refuses the state at CHECK_DEVICE_STATE, QEMU fails the migration, the guest runs on at A
    with A's connections exactly as before, and its stream goes on."""
    scene = ms.Scene(str(tmp_path), zones={"b": [{"zone": 1, "limit": 1}]})
    try:
        scene.start()
        a, b = scene.hosts["a"], scene.hosts["b"]
        out = scene.start_peer(STREAM_S + 120)
        source = scene.guest("a", ms.stream_script(STREAM_S))
        ms.wait_bytes(out, 200, 120)
        before = sorted((identity(c) for c in a.call("ct.list")["connections"]), key=str)
        assert len(before) >= 2, before
        target = scene.guest("b", "true", incoming=True)
        status = qmp_migrate(source, target, True, return_path=True,
                             until=("completed", "failed"))
        assert status["status"] == "failed", status
        qmp = ms.vm_migrate_module().Qmp(source.qmp, "source QEMU", 30)
        ms.fh.wait_for(lambda: qmp.call("query-status")["status"] == "running", 10,
                       what="the guest to run on at A")
        assert ms.stream_connection(b) is None
        ms.wait_bytes(out, ms.received(out)[0] + 200, 30)  # the stream goes on at A
        after = sorted((identity(c) for c in a.call("ct.list")["connections"]), key=str)
        assert after == before
        # Still A's once its QEMU's device runs again: nothing is retired later either.
        time.sleep(1)
        assert ms.stream_connection(a) is not None
    finally:
        scene.stop()


STREAM_MAGIC = b"\x89FERRY\r\n"  # migrate/stream_format.h, kStreamMagic


class StateAlteringProxy:
    """A TCP proxy between a source QEMU and a destination's -incoming socket: forwards both
    directions (the destination's return path too) and alters ferry's stream in transit.
    QEMU frames a vhost-user back-end's state (hw/virtio/vhost.c, vhost_save_backend_state)
    as chunks of a big-endian u32 length and that many bytes, ended by a zero length; ferry's
    stream starts with its magic in the first chunk. alter(stream) gets ferry's bytes so far
    (the chunks joined) and returns {offset in ferry's stream: new byte}, or None to see more;
    the bytes it names are changed inside QEMU's chunks, whose lengths stay as they were.
    alter=None forwards everything unchanged. found: ferry's stream was seen (and altered)."""

    def __init__(self, target_uri, alter):
        self.target = target_uri[len("unix:"):]
        self.alter = alter
        self.found = False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(60)
        self.uri = f"tcp:127.0.0.1:{self.listener.getsockname()[1]}"
        self.threads = [threading.Thread(target=self._serve, daemon=True)]
        self.threads[0].start()

    def _serve(self):
        with self.listener:
            src, _ = self.listener.accept()
        dst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dst.connect(self.target)
        back = threading.Thread(target=self._pump, args=(dst, src, None), daemon=True)
        back.start()
        self.threads.append(back)
        self._pump(src, dst, self.alter)

    def _patched(self, pending):
        """pending with ferry's bytes altered, or None while alter needs more of them."""
        at = pending.find(STREAM_MAGIC)
        if at < 4:
            return None
        stream, where, pos = bytearray(), [], at - 4  # where: pending index of each byte
        while pos + 4 <= len(pending):
            size = struct.unpack(">I", pending[pos:pos + 4])[0]
            if size == 0:
                break
            have = pending[pos + 4:pos + 4 + size]
            stream += have
            where += range(pos + 4, pos + 4 + len(have))
            pos += 4 + size
        changes = self.alter(bytes(stream))
        if changes is None:
            return None
        out = bytearray(pending)
        for offset, value in changes.items():
            out[where[offset]] = value
        self.found = True
        return out

    def _pump(self, src, dst, alter):
        pending = bytearray()  # held back until ferry's stream is found and altered
        try:
            while data := src.recv(65536):
                if alter is None or self.found:
                    dst.sendall(data)
                    continue
                pending += data
                patched = self._patched(pending)
                if patched is not None:
                    dst.sendall(patched)
                    pending.clear()
                elif pending.find(STREAM_MAGIC) < 0 and len(pending) > 64:
                    dst.sendall(pending[:-64])  # the magic and its chunk length may straddle
                    del pending[:-64]
            dst.sendall(pending)
            dst.shutdown(socket.SHUT_WR)
        except OSError:  # one side went away: so does the other
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        for t in self.threads:
            t.join(10)


def first_section(stream):
    """(offset of the first section's header in a ferry stream, its payload length), or None
    while stream is shorter than that header (docs/migration-stream.md: header_length at 12;
    a section header is type, flags, length, CRC32C: 12 bytes)."""
    if len(stream) < 14:
        return None
    at = struct.unpack(">H", stream[12:14])[0]
    if len(stream) < at + 12:
        return None
    return at, struct.unpack(">I", stream[at + 4:at + 8])[0]


def flip_a_payload_byte(stream):
    """The first section's first payload byte, one bit flipped: its CRC32C no longer holds."""
    first = first_section(stream)
    if first is None or len(stream) <= first[0] + 12:
        return None
    at = first[0] + 12
    return {at: stream[at] ^ 0x01}


def promise_more_bytes(stream):
    """The first section's declared length 64 KiB larger than its payload (still within the
    reader's bound of a section): ferry's reader finds fewer bytes than the stream promises,
    while QEMU's chunks carry exactly what they did."""
    first = first_section(stream)
    if first is None:
        return None
    at, length = first
    return dict(zip(range(at + 4, at + 8), struct.pack(">I", length + 65536)))


def test_state_altered_in_transit_fails_the_migration(scene):
    """The migration goes through StateAlteringProxy, three times, with return-path on both
    QEMUs. Twice the proxy alters ferry's stream inside QEMU's: a payload byte flipped, and
    a section that declares 64 KiB more than the stream holds. Each time B refuses the state
    at CHECK_DEVICE_STATE and QEMU fails the migration: the guest runs on at A, A's
    connections are exactly as before, B tracks none of them, and B's migrate.status names
    what was wrong (a CRC mismatch; a truncated section). Then the proxy forwards the stream
    unchanged and the guest moves to B, its stream byte-exact from start to end."""
    a, b = scene.hosts["a"], scene.hosts["b"]
    out = scene.start_peer(STREAM_S + 180)
    source = scene.guest("a", ms.stream_script(STREAM_S + 20))
    ms.wait_bytes(out, 200, 120)
    before = sorted((identity(c) for c in a.call("ct.list")["connections"]), key=str)
    assert before, before
    for alter, words in ((flip_a_payload_byte, "CRC mismatch in section 0x0001"),
                         (promise_more_bytes, "truncated inside section 0x0001"),
                         (None, None)):
        target = scene.guest("b", "true", incoming=True)
        proxy = StateAlteringProxy(target.incoming, alter)
        status = qmp_migrate(source, target, False, return_path=True,
                             until=("completed", "failed"), uri=proxy.uri)
        proxy.close()
        if alter is None:
            assert status["status"] == "completed", status
            break
        assert proxy.found, alter.__name__
        assert status["status"] == "failed", (alter.__name__, status)
        qmp = ms.vm_migrate_module().Qmp(source.qmp, "source QEMU", 30)  # QMP takes one client
        ms.fh.wait_for(lambda: qmp.call("query-status")["status"] == "running", 10,
                       what=f"the guest to run on at A ({alter.__name__})")
        qmp.sock.close()
        last = b.call("migrate.status")["in_band"][-1]
        assert last["port"] == "vm1" and last["direction"] == "load", last
        assert last["result"] == "failed" and words in last.get("error", ""), last
        assert ms.stream_connection(b) is None, alter.__name__
        target.stop()
        ms.wait_bytes(out, ms.received(out)[0] + 200, 30)  # the stream goes on at A
        after = sorted((identity(c) for c in a.call("ct.list")["connections"]), key=str)
        assert after == before, alter.__name__
    ms.fh.wait_for(lambda: ms.stream_connection(b) is not None, 10, interval=0.05,
                   what="B to install the guest's connection")
    source.stop()
    ms.stream_completes(scene, target, out, STREAM_S + 120)


def test_there_and_back_with_the_same_connection(scene):
    """A -> B -> A by QEMU's migration alone: the connection goes to B, is retired at A once A's
    QEMU exits, comes back to A (no clash with anything A kept) and is retired at B."""
    a, b = scene.hosts["a"], scene.hosts["b"]
    out = scene.start_peer(STREAM_S + 180)
    first = scene.guest("a", ms.stream_script(STREAM_S + 20))
    ms.wait_bytes(out, 200, 120)
    original = ms.stream_connection(a)
    dropped = ms.drops(scene.hosts)

    second = scene.guest("b", "true", incoming=True)
    qmp_migrate(first, second, True)
    ms.fh.wait_for(lambda: ms.stream_connection(b) is not None, 10, interval=0.05,
                   what="B to install the guest's connection")
    first.stop()
    ms.fh.wait_for(lambda: ms.stream_connection(a) is None, 10, interval=0.1,
                   what="A to retire the connection")
    ms.wait_bytes(out, ms.received(out)[0] + 200, 30)  # flowing through B

    third = scene.guest("a", "true", incoming=True)
    qmp_migrate(second, third, False)
    ms.fh.wait_for(lambda: ms.stream_connection(a) is not None, 10, interval=0.05,
                   what="A to install the guest's connection again")
    back = ms.stream_connection(a)
    assert back["orig"] == original["orig"] and back["reply"] == original["reply"], back
    second.stop()
    ms.fh.wait_for(lambda: ms.stream_connection(b) is None, 10, interval=0.1,
                   what="B to retire the connection")

    ms.stream_completes(scene, third, out, STREAM_S + 120)
    lost = ms.drops_since(dropped, scene.hosts)
    assert {k: n for k, n in lost.items() if "rule_drop" in k} == {}, lost


def test_cancelled_or_broken_migrations_leave_the_guest_and_its_flows_at_the_source(scene):
    """Two moves that fail after the guest and its device stopped: QMP migrate_cancel at
    pre-switchover, and the destination QEMU killed there (the source's migration then fails).
    Each time the guest runs on at A, A's connections are exactly as before and stay, B has
    none. (A failure after A saved the port's state is the refusing destination's test.)"""
    a, b = scene.hosts["a"], scene.hosts["b"]
    out = scene.start_peer(STREAM_S + 180)
    source = scene.guest("a", ms.stream_script(STREAM_S + 20))
    ms.wait_bytes(out, 200, 120)
    before = sorted((identity(c) for c in a.call("ct.list")["connections"]), key=str)
    qmp = ms.vm_migrate_module().Qmp(source.qmp, "source QEMU", 30)
    qmp.call("migrate-set-capabilities", capabilities=[
        {"capability": "pause-before-switchover", "state": True}])

    for how in ("cancel", "kill the destination"):
        target = scene.guest("b", "true", incoming=True)
        qmp.call("migrate", uri=target.incoming)
        ms.fh.wait_for(lambda: qmp.call("query-migrate").get("status") == "pre-switchover", 90,
                       interval=0.05, what="pre-switchover")
        if how == "cancel":
            qmp.call("migrate_cancel")
        else:
            target.proc.kill()
            target.proc.wait(10)
            qmp.call("migrate-continue", state="pre-switchover")
        ms.fh.wait_for(lambda: qmp.call("query-migrate").get("status") in ("cancelled", "failed"),
                       30, interval=0.05, what=f"the migration to end ({how})")
        ms.fh.wait_for(lambda: qmp.call("query-status")["status"] == "running", 10,
                       what=f"the guest to run on at A ({how})")
        target.stop()
        ms.wait_bytes(out, ms.received(out)[0] + 200, 30)  # the stream goes on at A
        time.sleep(0.5)  # anything retired by mistake would be gone by now
        after = sorted((identity(c) for c in a.call("ct.list")["connections"]), key=str)
        assert after == before, how
        assert ms.stream_connection(b) is None, how



def wchans(pid):
    """What each thread of a process waits in (/proc/PID/task/TID/wchan), by thread id."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                out[int(tid)] = f.read()
        except OSError:
            pass
    return out


def unread_bytes(path):
    """Bytes waiting in a ferryd's end of its connections on the unix socket at path (ss: the
    server's end of an accepted connection carries the socket's path)."""
    listing = subprocess.run(["ss", "-xn", "state", "established"],
                             capture_output=True, text=True, check=True).stdout
    return sum(int(f[1]) for f in (line.split() for line in listing.splitlines()[1:])
               if len(f) >= 5 and f[3] == path)


PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_DETACH = 0x4206, 0x4207, 17
WALL = 0x40000000  # waitpid's __WALL


def ptrace(request, tid):
    """ptrace(2) with no address and no data, through ctypes. @return 0 or the errno"""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    libc.ptrace.restype = ctypes.c_long
    return 0 if libc.ptrace(request, tid, None, None) == 0 else ctypes.get_errno()


def hold_control_thread(d):
    """Stops a ferryd's control thread, and only that thread, with ptrace (PTRACE_SEIZE, then
    PTRACE_INTERRUPT): ferryd's control loop runs on its main thread, the EAL's main lcore
    (control/ferryd_main.cc), whose id is the process id; the vhost-user message thread, the
    transfer threads and the workers run on. @return release(): lets the thread go on if
    ferryd still lives (PTRACE_DETACH)"""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            if f.read().strip() == "3":
                pytest.skip("kernel.yama.ptrace_scope is 3: no process may ptrace another")
    except FileNotFoundError:
        pass  # no Yama: the usual ptrace permission checks only
    tid = d.proc.pid
    with open(f"/proc/{tid}/task/{tid}/comm") as f:
        assert f.read().strip() == "ferryd", "the main thread is not ferryd's"
    for request, name in ((PTRACE_SEIZE, "PTRACE_SEIZE"), (PTRACE_INTERRUPT, "PTRACE_INTERRUPT")):
        err = ptrace(request, tid)
        assert err == 0, f"{name}: {os.strerror(err)}"
    # The stop is reported to this process (the tracer): taken here, so that waiting for
    # ferryd's exit later sees its exit only.
    _, status = os.waitpid(tid, WALL)
    assert os.WIFSTOPPED(status), hex(status)
    with open(f"/proc/{tid}/task/{tid}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[0] == "t", "not in a ptrace stop"
    others = [t for t in os.listdir(f"/proc/{tid}/task") if int(t) != tid]
    assert others, "ferryd has no other thread to run on"

    def release():
        ptrace(PTRACE_DETACH, tid)  # ESRCH once ferryd is gone: nothing to release

    return release


def blocked_on_reply(qemu, path, for_s=0.5):
    """True once QEMU's main thread has waited for a vhost-user reply for for_s seconds on
    end, with nothing unread at the back-end's end of path: the back-end took the request
    and has not answered."""
    since = None
    while True:
        waiting = (wchans(qemu.proc.pid).get(qemu.proc.pid) == "unix_stream_read_generic"
                   and unread_bytes(path) == 0)
        now = time.monotonic()
        if not waiting:
            return False
        since = since or now
        if now - since >= for_s:
            return True
        time.sleep(0.02)


@pytest.mark.parametrize("when", ["pre-switchover", "load"])
def test_a_destination_ferryd_that_dies_fails_the_migration(scene, when):
    """B's ferryd is killed (SIGKILL) while the guest is stopped: at pre-switchover, before the
    source QEMU sends the device states, or during the destination's LOAD: its control thread
    stopped with ptrace (hold_control_thread) at pre-switchover, B takes SET_DEVICE_STATE_FD,
    reads the state and takes CHECK_DEVICE_STATE, whose install waits for the control thread; B is
    killed with the destination QEMU waiting for that answer (its error names request 43).
    Either way the destination QEMU cannot load the port's state into a back-end that is gone,
    so with return-path (the source learns the destination's outcome) QEMU fails the
    migration. The guest runs on at A, A's connections exactly as before (A saved the port's
    state for QEMU and keeps it until it knows), A's port is up again, and its stream goes on
    byte-exact. (B's tap leaves the bridge with its ferryd: the peer's MAC must not change
    with it, migration_scene.PEER_MAC.)"""
    a, b = scene.hosts["a"], scene.hosts["b"]
    out = scene.start_peer(STREAM_S + 180)
    source = scene.guest("a", ms.stream_script(STREAM_S))
    ms.wait_bytes(out, 200, 120)
    before = sorted((identity(c) for c in a.call("ct.list")["connections"]), key=str)
    target = scene.guest("b", "true", incoming=True)
    tqmp = ms.vm_migrate_module().Qmp(target.qmp, "target QEMU", 30)
    tqmp.call("migrate-set-capabilities",
              capabilities=[{"capability": "return-path", "state": True}])
    qmp = ms.vm_migrate_module().Qmp(source.qmp, "source QEMU", 30)
    qmp.call("migrate-set-capabilities", capabilities=[
        {"capability": "pause-before-switchover", "state": True},
        {"capability": "return-path", "state": True}])
    qmp.call("migrate", uri=target.incoming)
    ms.fh.wait_for(lambda: qmp.call("query-migrate").get("status") == "pre-switchover", 90,
                   interval=0.05, what="pre-switchover")
    release = None
    try:
        if when == "load":
            release = hold_control_thread(b)
            qmp.call("migrate-continue", state="pre-switchover")
            # The destination loads the devices: it asks B to LOAD, writes the state into the
            # pipe and asks CHECK_DEVICE_STATE; B takes CHECK but installs only on its control
            # thread.
            ms.fh.wait_for(lambda: blocked_on_reply(target, b.path("vm1.sock")), 30,
                           interval=0.02,
                           what="the destination QEMU to wait for B's answer to CHECK")
            assert qmp.call("query-migrate")["status"] == "device"  # waiting for the destination
        b.proc.kill()
        b.proc.wait(10)
    finally:
        if release is not None:
            release()
    if when == "pre-switchover":
        qmp.call("migrate-continue", state="pre-switchover")
    ms.fh.wait_for(lambda: qmp.call("query-migrate").get("status") in ("failed", "completed"),
                   60, interval=0.05, what="the migration to end")
    assert qmp.call("query-migrate")["status"] == "failed"
    ms.fh.wait_for(lambda: qmp.call("query-status")["status"] == "running", 10,
                   what="the guest to run on at A")
    target.stop()
    if when == "load":  # B died with CHECK_DEVICE_STATE (43) unanswered
        errors = target.proc.stderr.read().decode(errors="replace")
        assert "request 43" in errors or "CHECK_DEVICE_STATE" in errors, errors[-1500:]
    ms.fh.wait_for(lambda: ms.port_link(a, "vm1") == "up", 10, what="A's port vm1 up again")
    ms.wait_bytes(out, ms.received(out)[0] + 200, 30)  # the stream goes on at A
    time.sleep(0.5)  # anything retired by mistake would be gone by now
    after = sorted((identity(c) for c in a.call("ct.list")["connections"]), key=str)
    assert after == before

    ms.stream_completes(scene, source, out, STREAM_S + 120)


def test_a_guest_with_two_ports_moves_both(tmp_path, capsys):
    """The guest has two NICs, on ports vm1 and vm2 of A (each inside the firewall, each on its
    own subnet), and a TCP stream through each. A plain QMP migrate moves it to B: QEMU saves
    each port's state on that port's own vhost-user connection and loads it into B's port of
    the same name. Both streams complete byte-exact, both ports' connections are on B (each
    with its own port) and gone from A once the source QEMU exits, and B's firewall dropped
    none of the guest's traffic."""
    scene = ms.Scene(str(tmp_path), guest_ports=2)
    try:
        scene.start()
        a, b = scene.hosts["a"], scene.hosts["b"]
        outs = {"vm1": scene.start_peer(STREAM_S + 120),
                "vm2": scene.start_peer(STREAM_S + 120, ms.PEER2_IP, ms.STREAM2_PORT)}
        dports = {"vm1": ms.STREAM_PORT, "vm2": ms.STREAM2_PORT}
        source = scene.guest("a", ms.two_streams_script(STREAM_S))
        for out in outs.values():
            ms.wait_bytes(out, 200, 120)
        for port, dport in dports.items():
            c = ms.stream_connection(a, dport)
            assert c is not None and c["ports"] == [port, "uplink"], (port, c)
            assert ms.stream_connection(b, dport) is None, port

        target = scene.guest("b", "true", incoming=True)
        dropped = ms.drops(scene.hosts)
        t_start = time.monotonic()
        status = qmp_migrate(source, target, False)
        t_done = time.monotonic()
        ms.fh.wait_for(lambda: all(ms.stream_connection(b, d) for d in dports.values()), 10,
                       interval=0.05, what="B to install both ports' connections")
        for port, dport in dports.items():
            moved = ms.stream_connection(b, dport)
            assert moved["ports"] == [port, "uplink"], (port, moved)
        for d, direction in ((a, "save"), (b, "load")):  # one transfer per port
            done = {t["port"]: t for t in d.call("migrate.status")["in_band"]
                    if t.get("direction") == direction}
            assert set(done) == {"vm1", "vm2"}, done
            for t in done.values():
                assert t["result"] == "ok" and t["connections"] >= 1, t
        source.stop()
        ms.fh.wait_for(lambda: not [c for c in a.call("ct.list")["connections"]
                                    if {"vm1", "vm2"} & set(c["ports"])], 10, interval=0.1,
                       what="A to retire both ports' connections")

        gaps = {}
        for port, out in outs.items():
            points, _ = ms.stream_completes(scene, target, out, STREAM_S + 90, after=t_done,
                                            what=f"the move ({port})")
            gaps[port] = ms.longest_gap(points, t_start, t_done + 5.0)[0]
        lost = ms.drops_since(dropped, scene.hosts)
        assert {k: n for k, n in lost.items()
                if k.startswith("b ") and not k.endswith("no_destination")} == {}, lost
        with capsys.disabled():
            print(f"\n  two ports: QEMU downtime {status.get('downtime')} ms, total "
                  f"{status.get('total-time')} ms; stream interruptions "
                  + ", ".join(f"{p} {g * 1000:.0f} ms" for p, g in gaps.items())
                  + "; both byte-exact")
    finally:
        scene.stop()
