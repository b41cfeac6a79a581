"""The far end of a guest's TCP stream: accepts one connection, writes what arrives to OUT and,
for every read, a line "MONOTONIC_SECONDS TOTAL_BYTES" to OUT.times, then exits when the guest
closes the connection (status 0) or after the deadline (status 1). CLOCK_MONOTONIC is shared by
every process of the host, so the caller can place migrations on the same time line.

    python3 stream_peer.py ADDRESS PORT OUT [DEADLINE_S]
"""
import socket
import sys
import time


def main():
    address, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    deadline = time.monotonic() + (float(sys.argv[4]) if len(sys.argv) > 4 else 600.0)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((address, port))
    srv.listen(1)
    srv.settimeout(max(0.1, deadline - time.monotonic()))
    with open(out + ".times", "w", buffering=1) as times:
        times.write(f"{time.monotonic():.6f} listening\n")
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            return 1
        total = 0
        with conn, open(out, "wb", buffering=0) as data:
            while True:
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    chunk = conn.recv(65536)
                except (socket.timeout, ConnectionError) as e:
                    times.write(f"{time.monotonic():.6f} error {e}\n")
                    return 1
                if not chunk:
                    times.write(f"{time.monotonic():.6f} closed\n")
                    return 0
                data.write(chunk)
                total += len(chunk)
                times.write(f"{time.monotonic():.6f} {total}\n")


if __name__ == "__main__":
    sys.exit(main())
