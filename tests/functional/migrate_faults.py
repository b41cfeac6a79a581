"""A man in the middle of a live migration that breaks it at one chosen point.

FaultProxy listens (unix:PATH or tcp:127.0.0.1:0) in front of a target's migrate.receive
address and forwards both ways. It follows the source's bytes as a stream
(docs/migration-stream.md: a header whose length is at offset 12, then sections
{type u16, flags u16, length u32, crc u32, payload}) and the target's answers (READY, COMMIT,
REFUSE: 18 bytes and a message), and applies its fault to the first connection only; later
connections (the source's outcome queries) pass untouched. Nothing in ferryd is changed for it:
every fault is one a network or a crash can cause.

Faults:
  connect            the connection is accepted and closed before a byte passes
  handshake          the source's first bytes (a TLS ClientHello) pass, then both sides close
  section:NAME       both sides close halfway through the first section of that type
  precopy_end        PRECOPY_END reaches the target, then both sides close (before READY)
  ready              the stream passes, the target's READY is swallowed, nothing comes back
  delta              READY passes; both sides close halfway through the first section after it
  commit_lost        the stream passes, the target's answer is swallowed, both sides close
  commit_late        the answer is held for `delay_s`, then passes
  hold_trailer       all but the trailer passes; at release() both sides close (a test kills
                     the target meanwhile: it dies before it could answer)
  hold_answer        the stream passes, the answer is held until release() (a test kills the
                     source meanwhile: the target committed)
"""
import socket
import struct
import threading
import time

SECTION_TYPES = {"PORT": 0x0001, "MACS": 0x0002, "CONNECTIONS": 0x0003,
                 "CONNECTIONS_GONE": 0x0004, "DPI_STREAMS": 0x0005, "RULES": 0x0006,
                 "COUNTERS": 0x0007, "PRECOPY_END": 0x0008, "CONNECTIONS_IPV4": 0x0009,
                 "TRAILER": 0x00ff}
NAMES = {v: k for k, v in SECTION_TYPES.items()}
ANSWER_HEADER = 18


class StreamCutter:
    """Follows the source's bytes (kept whole: the streams of these tests are small); feed()
    says how many bytes of a chunk may pass before the cut."""

    def __init__(self, cut):
        self.kind, self.want = cut  # the fault, and for section:NAME the section type
        self.buf = b""
        self.next_section = None  # stream offset of the next section header
        self.after_precopy_end = False
        self.trailer_end = None  # stream offset just past the trailer
        self.seen = []  # section names passed whole

    def _cut_at(self):
        """The stream offset to cut at, once known; else None."""
        if self.next_section is None:
            if len(self.buf) < 14:
                return None
            self.next_section = struct.unpack(">H", self.buf[12:14])[0]
        while self.trailer_end is None:
            at = self.next_section
            if len(self.buf) < at + 12:
                return None
            stype, _flags, length = struct.unpack(">HHI", self.buf[at:at + 8])
            if (self.kind == "section" and stype == self.want) or \
                    (self.kind == "delta" and self.after_precopy_end):
                return at + 12 + length // 2
            if self.kind == "hold_trailer" and stype == SECTION_TYPES["TRAILER"]:
                return at
            self.next_section = at + 12 + length
            self.seen.append(NAMES.get(stype, hex(stype)))
            if stype == SECTION_TYPES["PRECOPY_END"]:
                self.after_precopy_end = True
                if self.kind == "precopy_end":
                    return self.next_section
            if stype == SECTION_TYPES["TRAILER"]:
                self.trailer_end = self.next_section
        return None

    def feed(self, chunk):
        """@return how many bytes of chunk pass, and whether the cut is reached"""
        start = len(self.buf)
        self.buf += chunk
        cut = self._cut_at()
        if self.kind not in ("section", "precopy_end", "delta", "hold_trailer") or cut is None or \
                cut > start + len(chunk):
            return len(chunk), False
        return max(0, cut - start), True


class FaultProxy:
    def __init__(self, listen, upstream, fault, delay_s=4):
        kind, _, arg = fault.partition(":")
        self.fault = kind
        self.delay_s = delay_s
        self.upstream = upstream
        self.connections = 0
        self.released = threading.Event()
        self.answer_held = threading.Event()  # the target answered and the answer is held
        self.trailer_held = threading.Event()  # all but the trailer reached the target
        self.fired = False  # the fault happened (a section:NAME the stream lacks never does)
        self.seen = []  # the first connection's section types, as names, in order
        self.cutter_kind = (kind, SECTION_TYPES.get(arg))
        self.stop = False
        if listen.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(listen[5:])
            self.address = listen
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(("127.0.0.1", 0))
            self.address = "tcp:127.0.0.1:%d" % self.sock.getsockname()[1]
        self.sock.listen(4)
        threading.Thread(target=self._run, daemon=True).start()

    def _connect_upstream(self):
        if self.upstream.startswith("unix:"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.upstream[5:])
        else:
            host, port = self.upstream.split(":", 1)[1].rsplit(":", 1)
            s = socket.create_connection((host, int(port)))
        return s

    def _run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            first = self.connections == 1
            if first and self.fault == "connect":
                self.fired = True
                conn.close()
                continue
            try:
                up = self._connect_upstream()
            except OSError:  # the target is gone: so is this connection
                conn.close()
                continue
            link = _Link(self, conn, up, first)
            threading.Thread(target=link.forward, daemon=True).start()
            threading.Thread(target=link.backward, daemon=True).start()

    def release(self):
        self.released.set()

    def close(self):
        self.stop = True
        self.released.set()
        self.sock.close()


class _Link:
    """One connection through the proxy: source -> target (forward), target -> source."""

    def __init__(self, proxy, src, dst, faulty):
        self.p, self.src, self.dst = proxy, src, dst
        self.fault = proxy.fault if faulty else None
        self.cutter = StreamCutter(proxy.cutter_kind)
        if faulty:
            proxy.seen = self.cutter.seen

    def close_both(self):
        for s in (self.src, self.dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def forward(self):
        first = True
        try:
            while True:
                data = self.src.recv(65536)
                if not data:
                    break
                if self.fault == "handshake" and first:
                    self.p.fired = True
                    self.dst.sendall(data)
                    time.sleep(0.2)
                    self.close_both()
                    return
                first = False
                n, cut = (len(data), False) if self.fault is None else self.cutter.feed(data)
                self.dst.sendall(data[:n])
                self.p.fired = self.p.fired or cut
                if cut and self.fault == "hold_trailer":
                    self.p.trailer_held.set()
                    self.p.released.wait(60)
                if cut:
                    time.sleep(0.2)  # the target reads what passed before it sees the close
                    self.close_both()
                    return
        except OSError:
            pass
        try:
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def backward(self):
        held = b""
        try:
            while True:
                data = self.dst.recv(65536)
                if not data:
                    break
                if self.fault is None:
                    self.src.sendall(data)
                    continue
                held += data
                while len(held) >= ANSWER_HEADER:
                    size = ANSWER_HEADER + struct.unpack(">H", held[16:18])[0]
                    if len(held) < size:
                        break
                    msg, held = held[:size], held[size:]
                    self.answer(msg)
        except OSError:
            pass
        self.close_both()

    def answer(self, msg):
        """One message of the target: READY, or the answer to the stream."""
        if msg[:8] == b"\x89FERRYGO":
            if self.fault != "ready":
                self.src.sendall(msg)
            else:
                self.p.fired = True
            return
        self.p.fired = self.p.fired or self.fault in ("commit_lost", "commit_late", "hold_answer")
        if self.fault == "commit_lost":
            self.close_both()
            return
        if self.fault == "commit_late":
            time.sleep(self.p.delay_s)
        if self.fault == "hold_answer":
            self.p.answer_held.set()
            self.p.released.wait(60)
        self.src.sendall(msg)
