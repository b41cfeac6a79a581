"""Who may write state into ferryd over the migration channel. A stream carries ESTABLISHED
connections and NAT bindings: whoever sends one opens the target's firewall, so the channel is
treated like a root shell. Each test first plays the attack (a stream forged with
make_migration_stream: one ESTABLISHED connection 10.0.0.0:1024 -> 198.51.100.7:80 on port
lan1) and expects it refused before a byte of state is read (the target's ct.list stays empty
and it goes on listening), then the real source's migration to go through.
"""
import os
import stat
import subprocess
import sys
import tempfile

import pytest

import ferry_harness as fh
from ferry_harness import RpcError, wait_for
from ct_util import bridges
from test_migrate_file import source_with_connection, target
from tls_util import make_pki

INVALID_PARAMS = -32602
MAKE = os.path.join(fh.BUILD, "benchmarks", "make_migration_stream")

# A client that sends stdin to ADDRESS (unix:PATH or tcp:HOST:PORT, optionally over TLS with
# CA/CERT/KEY files, "-" for none) and prints what came back (the target's answer, if any).
ROGUE = r"""
import socket, ssl, sys
address, ca, cert, key, name = sys.argv[1:6]
data = sys.stdin.buffer.read()
if address.startswith("unix:"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(address[5:])
else:
    host, port = address.split(":", 1)[1].rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
s.settimeout(10)
try:
    if ca != "-":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(ca)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the rogue trusts any target
        if cert != "-":
            ctx.load_cert_chain(cert, key)
        s = ctx.wrap_socket(s, server_hostname=name)
    s.sendall(data)
    print("answer", s.recv(4096))
except Exception as e:
    print("error", type(e).__name__, e)
"""


@pytest.fixture
def ctb():
    yield from bridges()


@pytest.fixture
def forged(tmp_path):
    """The bytes of a forged stream: one ESTABLISHED connection on lan1."""
    path = tmp_path / "forged.bin"
    subprocess.run([MAKE, "1", "lan1", str(path)], check=True, stdout=subprocess.DEVNULL)
    return path.read_bytes()


@pytest.fixture
def open_dir():
    """A directory everyone may enter (the sockets of these tests live there)."""
    d = tempfile.mkdtemp(prefix="ferry-sec-")
    os.chmod(d, 0o777)
    yield d
    subprocess.run(["rm", "-rf", d], check=False)


def rogue(address, stream, as_nobody=False, ca="-", cert="-", key="-", name="ferry"):
    """Runs the rogue client. @return its output (what the target answered, or the error)"""
    wrap = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if as_nobody else []
    r = subprocess.run([*wrap, sys.executable, "-c", ROGUE, address, ca, cert, key, name],
                       input=stream, capture_output=True, timeout=30)
    return (r.stdout + r.stderr).decode(errors="replace")


def wait_end(b, timeout=20):
    return wait_for(lambda: (s := b.call("migrate.status"))["phase"] in
                    ("committed", "refused", "failed") and s, timeout, what="migration end")


def still_listening(b):
    """Nothing of the forged stream reached b's tables, and it still waits for its source."""
    st = b.call("migrate.status")
    assert st["phase"] == "listening" and st["bytes_done"] == 0, st
    assert b.conns() == []


def real_source_migrates(ctb, b, address, **params):
    a = source_with_connection(ctb)
    a.call("migrate.send", dict({"to": address}, **params))
    src, dst = wait_end(a), wait_end(b)
    assert src["phase"] == "committed" and dst["phase"] == "committed", (src, dst)
    assert [c["orig"]["sport"] for c in b.conns()] == [40001]


def test_unix_listener_refuses_another_uid(ctb, forged, open_dir):
    """Sends the forged stream to migrate.receive unix:PATH as uid nobody, ferryd running with
    a umask of 0 (so nothing but ferryd itself restricts the socket). Expects the socket 0600
    and the client refused; then, the socket made reachable by everyone (chmod 0666, a
    mistaken operator), still refused by its uid (SO_PEERCRED); the real source then migrates."""
    b = target(ctb)
    old = os.umask(0)
    try:
        b.start()
    finally:
        os.umask(old)
    path = os.path.join(open_dir, "m.sock")
    address = b.call("migrate.receive", {"listen": f"unix:{path}", "timeout_s": 30})["address"]
    out = rogue(address, forged, as_nobody=True)
    assert "answer" not in out, out
    still_listening(b)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.chmod(path, 0o666)
    out = rogue(address, forged, as_nobody=True)
    assert "answer b''" in out or "error" in out, out
    wait_for(lambda: "refused a connection from uid 65534" in b.ferryd.read_log(), 5,
             what="the refusal in the log")
    still_listening(b)
    real_source_migrates(ctb, b, address)


def test_unix_listener_leaves_a_non_socket_alone(ctb, tmp_path):
    """migrate.receive unix:PATH where PATH is a regular file (or a symlink to one): the file is
    left as it was and the command fails with an invalid-params error naming it; an old socket
    at PATH is replaced."""
    b = target(ctb)
    b.start()
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    link = tmp_path / "link.sock"
    link.symlink_to(victim)
    for path in (victim, link):
        with pytest.raises(RpcError) as e:
            b.call("migrate.receive", {"listen": f"unix:{path}"})
        assert e.value.code == INVALID_PARAMS and "not a socket" in str(e.value), e.value
        assert victim.read_text() == "keep me" and os.path.lexists(path)
    old = tmp_path / "old.sock"
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(old))
    s.close()
    b.call("migrate.receive", {"listen": f"unix:{old}", "timeout_s": 5})
    assert stat.S_ISSOCK(os.lstat(old).st_mode)
    b.call("migrate.cancel")
    wait_end(b)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_target(ctb, pki):
    b = target(ctb)
    b.start()
    return b, b.call("migrate.receive", {"listen": "tcp:127.0.0.1:0", "timeout_s": 60,
                                         "tls_creds": pki["b"], "tls_peer": "ferry-a"})["address"]


@pytest.mark.parametrize("who", ["no_certificate", "other_ca", "wrong_name", "plain_tcp"])
def test_tls_target_refuses_a_rogue_source(ctb, pki, forged, who):
    """Sends the forged stream to a TCP target expecting ferry-a's certificate: without a
    certificate, with ferry-a's name from another CA, with the right CA's certificate of
    another name (mallory), and in clear. Expects each refused before a byte of state is read;
    then ferry-a migrates over TLS (the target's name checked against its address, 127.0.0.1)."""
    b, address = tls_target(ctb, pki)
    cert, key = {"no_certificate": ("-", "-"), "other_ca": pki["other_ca"],
                 "wrong_name": pki["mallory"], "plain_tcp": ("-", "-")}[who]
    ca = "-" if who == "plain_tcp" else pki["ca"]
    out = rogue(address, forged, ca=ca, cert=str(cert), key=str(key))
    assert "FERRYOK" not in out, out
    still_listening(b)
    wait_for(lambda: "refused" in b.ferryd.read_log(), 5, what="the refusal in the log")
    real_source_migrates(ctb, b, address, tls_creds=pki["a"])


def test_tls_source_checks_the_target(ctb, pki):
    """A source expecting another name than the target's certificate carries gives up before
    sending a byte (phase failed, its connection as it was); with the right name it goes."""
    b, address = tls_target(ctb, pki)
    a = source_with_connection(ctb)
    a.call("migrate.send", {"to": address, "tls_creds": pki["a"], "tls_peer": "ferry-c"})
    src = wait_end(a)
    assert src["phase"] == "failed" and "ferry-c" in src["error"], src
    assert [c["orig"]["sport"] for c in a.conns()] == [40001]
    still_listening(b)
    a.call("migrate.send", {"to": address, "tls_creds": pki["a"], "tls_peer": "ferry-b"})
    assert wait_end(a)["phase"] == "committed" and wait_end(b)["phase"] == "committed"
    assert [c["orig"]["sport"] for c in b.conns()] == [40001]


def test_tls_over_a_unix_socket(ctb, pki, forged):
    """unix: with tls_creds on both sides: the uid check and then TLS. A client of the right
    uid speaking clear is refused (the target expects a handshake); ferry-a then migrates."""
    b = target(ctb)
    b.start()
    address = b.call("migrate.receive", {"listen": f"unix:{b.ferryd.path('t.sock')}",
                                         "tls_creds": pki["b"], "tls_peer": "ferry-a",
                                         "timeout_s": 30})["address"]
    out = rogue(address, forged)
    assert "FERRYOK" not in out, out
    still_listening(b)
    with pytest.raises(RpcError) as e:  # no host in the address: the name must be given
        b.call("migrate.send", {"to": address, "tls_creds": pki["a"]})
    assert e.value.code == INVALID_PARAMS and "tls_peer" in str(e.value), e.value
    real_source_migrates(ctb, b, address, tls_creds=pki["a"], tls_peer="ferry-b")


def test_tls_credentials_from_the_configuration(ctb, pki, forged):
    """Both ferryd name their credentials in the configuration (migration.tls_creds, and the
    source's name on the target): tcp: then needs no TLS params, a rogue is still refused, the
    real source migrates, and tcp-insecure: stays the explicit clear channel it was."""
    b = target(ctb)
    b.ferryd.config["migration"] = {"tls_creds": pki["b"], "tls_peer": "ferry-a"}
    b.start()
    assert b.call("migrate.receive", {"listen": "tcp-insecure:127.0.0.1:0", "timeout_s": 1})
    wait_for(lambda: b.call("migrate.status")["phase"] == "failed", 10, what="the timeout")
    address = b.call("migrate.receive", {"listen": "tcp:127.0.0.1:0", "timeout_s": 60})["address"]
    out = rogue(address, forged, ca=pki["ca"], cert=str(pki["mallory"][0]),
                key=str(pki["mallory"][1]))
    assert "FERRYOK" not in out, out
    still_listening(b)
    a = source_with_connection(ctb, config={"migration": {"tls_creds": pki["a"]}})
    a.call("migrate.send", {"to": address})
    src, dst = wait_end(a), wait_end(b)
    assert src["phase"] == "committed" and dst["phase"] == "committed", (src, dst)
    assert [c["orig"]["sport"] for c in b.conns()] == [40001]


def test_tcp_needs_tls_or_an_explicit_insecure(ctb, pki, forged):
    """tcp: without credentials is refused (invalid params); tcp-insecure: is the operator's
    explicit choice of a clear, unauthenticated channel: it warns in the log, and the forged
    stream is taken there (what TLS prevents)."""
    b = target(ctb)
    b.start()
    for params in ({"listen": "tcp:127.0.0.1:0"},
                   {"listen": "tcp:127.0.0.1:0", "tls_creds": pki["b"]},  # no tls_peer
                   {"listen": "tcp:127.0.0.1:0", "tls_creds": "/nonexistent"},
                   {"listen": "tcp-insecure:127.0.0.1:0", "tls_creds": pki["b"]}):
        with pytest.raises(RpcError) as e:
            b.call("migrate.receive", params)
        assert e.value.code == INVALID_PARAMS, (params, e.value)
    a = source_with_connection(ctb)
    with pytest.raises(RpcError) as e:
        a.call("migrate.send", {"to": "tcp:127.0.0.1:1"})
    assert e.value.code == INVALID_PARAMS and "tls_creds" in str(e.value), e.value
    address = b.call("migrate.receive", {"listen": "tcp-insecure:127.0.0.1:0"})["address"]
    assert address.startswith("tcp-insecure:127.0.0.1:"), address
    assert "insecure" in b.ferryd.read_log()
    out = rogue(address.replace("tcp-insecure:", "tcp:"), forged)
    assert "FERRYOK" in out, out
    assert wait_end(b)["phase"] == "committed" and len(b.conns()) == 1


@pytest.mark.parametrize("params", [
    {"timeout_s": 2 ** 64 - 1}, {"timeout_s": 2 ** 63}, {"timeout_s": 0}, {"timeout_s": 86401},
    {"timeout_s": -1}, {"timeout_s": 1.5e308}, {"settle_ms": 2 ** 64 - 1},
    {"settle_ms": 3600001},
])
def test_numeric_params_are_bounded(ctb, params):
    """timeout_s and settle_ms out of their range (0, more than a day / an hour, up to the
    largest integer JSON-RPC carries, negative, fractional) are invalid params, on both migrate.send and migrate.receive, and nothing starts."""
    b = target(ctb)
    b.start()
    methods = [("migrate.send", {"to": "unix:/nonexistent/x.sock", "precopy": True})]
    if "settle_ms" not in params:
        methods.append(("migrate.receive", {"listen": f"unix:{b.ferryd.path('n.sock')}"}))
    for method, base in methods:
        with pytest.raises(RpcError) as e:
            b.call(method, dict(base, **params))
        assert e.value.code == INVALID_PARAMS, (method, params, e.value)
    assert b.call("migrate.status")["phase"] == "idle"


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
