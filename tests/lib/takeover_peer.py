"""A client of a running ferryd's takeover socket (<control socket>.takeover) that speaks as much
of a successor's side (migrate/takeover.h) as a test asks: nothing, part of the hello, the hello
and the reading of the state, then a word of its choice, or silence.
"""
import array
import socket

HELLO = b"FERRY-TAKEOVER 1\n"


class TakeoverPeer:
    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)

    def send(self, data):
        self.sock.sendall(data)

    def read_state(self, timeout=60.0):
        """Sends the hello and reads the stream and the control socket's descriptor that
        follows it (which it closes at once). @return the bytes read"""
        self.send(HELLO)
        self.sock.settimeout(timeout)
        total = 0
        fds = []
        while not fds:
            data, anc, _, _ = self.sock.recvmsg(1 << 16, socket.CMSG_SPACE(4))
            if not data:
                raise EOFError(f"the running ferryd closed the connection after {total} bytes")
            total += len(data)
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(array.array("i", payload[:len(payload) - len(payload) % 4]))
        for fd in fds:
            socket.close(fd)
        return total

    def answer(self, timeout=5.0):
        """What the running ferryd says next: b"" once it closed the connection (or reset it),
        else the bytes it sent."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096)
        except ConnectionResetError:
            return b""

    def close(self):
        self.sock.close()
