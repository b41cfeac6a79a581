"""Checkpoint and restore through a stream file: ferryd A tracks connections through a stateful
firewall (ct_util.stateful_rules: new connections only from the inside, +est both ways, the rest
dropped), `migrate.save` writes its state, and ferryd B, with the same ports and rules, takes it
with `migrate.load` or `ferryd --restore`. On B the established connection's packets pass with
no new handshake, byte for byte, while packets of connections A never saw are dropped as before.
Bad files and conflicts change nothing on B.
"""
import os

import pytest

from ferry_harness import RpcClient, RpcError
from ct_util import CLIENT, R_EST_ORIG, SERVER, bridges, stateful_rules, tcp


@pytest.fixture
def ctb():
    yield from bridges()


def cli(cport, flags, seq, ack=0, payload=b""):
    return tcp(CLIENT, SERVER, cport, 80, flags, seq, ack, payload)


def srv(cport, flags, seq, ack=0, payload=b""):
    return tcp(SERVER, CLIENT, 80, cport, flags, seq, ack, payload)


def inspecting_rules():
    """stateful_rules with the client's established traffic inspected before it leaves."""
    rules = stateful_rules()
    for r in rules:
        if r["id"] == R_EST_ORIG:
            r["actions"] = ["dpi"] + r["actions"]
    return rules


def dpi_config(regex):
    return {"patterns": [{"id": 1, "regex": regex, "direction": "to_server", "action": "drop"}]}


def source_with_connection(ctb, cport=40001, dpi=None, config=None):
    """Ferryd A with one ESTABLISHED connection CLIENT:cport -> SERVER:80 (ISNs 1000 / 5000)
    that has carried 10 bytes each way ("0123456789" from the client). Its phase ports are
    lan1, wan1, lan2, wan2. dpi: a config dpi section (the client's data is inspected);
    config: more top-level config sections."""
    a = ctb(rules=inspecting_rules() if dpi else stateful_rules())
    if dpi:
        a.ferryd.config["dpi"] = dpi
    a.ferryd.config.update(config or {})
    a.start()
    a.phase([cli(cport, "S", 1000)], out={"outside": [cli(cport, "S", 1000)]})
    a.phase([srv(cport, "SA", 5000, 1001)], out={"inside": [srv(cport, "SA", 5000, 1001)]})
    data = cli(cport, "PA", 1001, 5001, b"0123456789")
    a.phase([cli(cport, "A", 1001, 5001), data],
            out={"outside": [cli(cport, "A", 1001, 5001), data]})
    reply = srv(cport, "PA", 5001, 1011, b"abcdefghij")
    a.phase([reply], out={"inside": [reply]})
    assert a.state(sport=cport) == "ESTABLISHED"
    return a


def target(ctb, restore=None, dpi=None):
    """Ferryd B: the same rules and every port A had (a stream's ports must exist by name);
    its own phases continue after A's names."""
    b = ctb(rules=inspecting_rules() if dpi else stateful_rules())
    if dpi:
        b.ferryd.config["dpi"] = dpi
    for name in ("lan1", "wan1", "lan2", "wan2"):
        b.port(name)
    b.seq = {"lan": 2, "wan": 2}
    if restore:
        b.ferryd.args = ["--restore", restore]
    return b


def continue_on(b, cport=40001):
    """The connection goes on on b without a handshake; an unsolicited segment is dropped."""
    reply = srv(cport, "PA", 5011, 1011, b"klmnopqrst")
    b.phase([reply], out={"inside": [reply]})
    more = cli(cport, "PA", 1011, 5021, b"more")
    b.phase([more], out={"outside": [more]})
    # A connection neither ferryd saw: not a SYN, so invalid, and from outside anyway.
    b.phase([srv(40099, "PA", 7000, 100, b"x")], drops={"rule_drop": 1})
    b.phase([srv(40098, "S", 7000)], drops={"rule_drop": 1})
    c = b.conn(sport=cport)
    assert c["state"] == "ESTABLISHED"
    # Counters came along: 3 + 1 packets from the client, 2 + 1 from the server.
    assert c["packets"] == [4, 3], c
    b.finish()
    b.check_outputs()


def test_save_then_load_continues_established_connection(ctb):
    a = source_with_connection(ctb)
    path = a.ferryd.path("checkpoint.bin")
    saved = a.call("migrate.save", {"file": path})
    assert saved["connections"] == 1 and saved["ports"] == 6, saved
    assert os.path.getsize(path) == saved["bytes"]
    # Saving changes nothing on the source.
    assert a.state(sport=40001) == "ESTABLISHED"
    a.finish()
    a.check_outputs()

    b = target(ctb)
    b.start()
    assert b.conns() == []
    loaded = b.call("migrate.load", {"file": path})
    assert loaded["connections"] == 1, loaded
    assert b.worker_stat("installed") == 1
    continue_on(b)


def test_restore_at_start(ctb):
    a = source_with_connection(ctb)
    path = a.ferryd.path("checkpoint.bin")
    a.call("migrate.save", {"file": path})
    a.close()
    b = target(ctb, restore=path)
    b.start()
    assert "restored" in b.ferryd.read_log()
    continue_on(b)


def test_one_port_stream_carries_that_ports_connections(ctb):
    a = source_with_connection(ctb, cport=40001)
    # A second connection whose packets came in on other ports (lan3 / wan3).
    a.phase([cli(40002, "S", 3000)], out={"outside": [cli(40002, "S", 3000)]})
    path = a.ferryd.path("port.bin")
    saved = a.call("migrate.save", {"file": path, "port": "lan1"})
    # The moved port first, then the others its connections may name (7 in all here).
    assert saved["ports"] == 7 and saved["connections"] == 1, saved
    a.close()
    b = ctb(rules=stateful_rules())
    b.port("lan1")
    b.start()
    assert b.call("migrate.load", {"file": path})["connections"] == 1
    assert [c["orig"]["sport"] for c in b.conns()] == [40001]


def test_bad_files_and_conflicts_change_nothing(ctb):
    a = source_with_connection(ctb)
    path = a.ferryd.path("checkpoint.bin")
    a.call("migrate.save", {"file": path})
    a.close()

    b = ctb(rules=stateful_rules())  # lacks A's phase ports
    b.start()
    with pytest.raises(RpcError) as e:
        b.call("migrate.load", {"file": path})
    assert e.value.code == -32002 and "lan1" in e.value.message, e.value.message
    assert b.conns() == []

    data = open(path, "rb").read()
    for name, blob, words in [
        ("truncated.bin", data[:-5], "truncated"),
        ("swapped.bin", data[7::-1] + data[8:], "byte-swapped"),
        ("crc.bin", data[:-1] + bytes([data[-1] ^ 1]), "CRC"),
        ("empty.bin", b"", "truncated"),
    ]:
        bad = b.ferryd.path(name)
        with open(bad, "wb") as f:
            f.write(blob)
        with pytest.raises(RpcError) as e:
            b.call("migrate.load", {"file": bad})
        assert e.value.code == -32602 and words in e.value.message, (name, e.value.message)
    with pytest.raises(RpcError) as e:
        b.call("migrate.load", {"file": b.ferryd.path("missing.bin")})
    assert e.value.code == -32002
    assert b.conns() == []

    c = target(ctb)
    c.start()
    c.call("migrate.load", {"file": path})
    with pytest.raises(RpcError) as e:  # the same connections again: a conflict
        c.call("migrate.load", {"file": path})
    assert e.value.code == -32003 and "clashes" in e.value.message, e.value.message
    assert len(c.conns()) == 1
    assert c.worker_stat("installed") == 1


def test_restore_of_a_bad_file_stops_ferryd(ctb, tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x89FERRY\r\n" + b"\x00" * 40)
    b = ctb(rules=stateful_rules())
    b.ferryd.args = ["--restore", str(bad)]
    with pytest.raises(RuntimeError) as e:
        b.start()
    assert "--restore" in str(e.value)


@pytest.mark.parametrize("same_patterns", [True, False])
def test_half_seen_match_continues_on_the_target(ctb, same_patterns):
    """A drop pattern "6789:tail" of which A saw "6789" (in the client's "0123456789"). With the
    same patterns on B the stream state moves with the connection: the client's ":tail" on B
    completes the match and is dropped (dpi_drop), and the connection stays blocked. With other
    patterns on B its inspection restarts: ":tail" alone matches nothing and passes."""
    a = source_with_connection(ctb, dpi=dpi_config("6789:tail"))
    assert a.call("dpi.stats")["bytes"] == 10
    path = a.ferryd.path("checkpoint.bin")
    saved = a.call("migrate.save", {"file": path})
    assert saved["dpi_streams"] == 1, saved
    a.close()
    b = target(ctb, dpi=dpi_config("6789:tail" if same_patterns else "6789:tail|other"))
    b.start()
    loaded = b.call("migrate.load", {"file": path})
    assert (loaded["dpi_continued"], loaded["dpi_restarted"]) == ((1, 0) if same_patterns
                                                                   else (0, 1)), loaded
    tail = cli(40001, "PA", 1011, 5011, b":tail")
    if same_patterns:
        b.phase([tail], drops={"dpi_drop": 1})
        b.phase([cli(40001, "PA", 1016, 5011, b"after")], drops={"dpi_drop": 1})
        assert b.call("dpi.stats")["drops"] == 1
    else:
        b.phase([tail], out={"outside": [tail]})
        assert b.call("dpi.stats")["restarts"] == 1
    b.finish()
    b.check_outputs()


def release_fifo(fifo):
    """Opens fifo for writing without waiting and closes it again: a reader blocked in open(2)
    on it goes on (and reads end-of-file). False when no one had it open for reading."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("method", ["migrate.load", "migrate.receive"])
def test_a_fifo_for_a_file_is_refused_at_once(ctb, method):
    """Sends migrate.load of a FIFO nobody writes, or migrate.receive whose tls_creds
    directory holds a FIFO for ca-cert.pem. Expects a JSON-RPC error (invalid params, "not a
    regular file") within 5 s, with ferryd answering another client's request meanwhile,
    and nothing blocked on the FIFO afterwards (no reader to release). A migrate.save onto a
    FIFO replaces it with the stream file."""
    b = ctb(rules=stateful_rules())
    b.start()
    fifo = b.ferryd.path("ca-cert.pem" if method == "migrate.receive" else "stream.fifo")
    os.mkfifo(fifo)
    if method == "migrate.load":
        params = {"file": fifo}
    else:
        for name in ("server-cert.pem", "server-key.pem"):
            open(b.ferryd.path(name), "w").close()
        params = {"listen": "unix:" + b.ferryd.path("in.sock"),
                  "tls_creds": os.path.dirname(fifo), "tls_peer": "ferry-a"}
    asker = other = None
    try:
        asker = RpcClient(b.ferryd.socket, timeout=5)
        resp = asker.call_raw(method, params)  # socket.timeout when the open blocks
        assert "error" in resp, resp
        assert resp["error"]["code"] == -32602, resp
        assert "not a regular file" in resp["error"]["message"], resp
        other = RpcClient(b.ferryd.socket, timeout=5)
        assert other.call("migrate.status")["phase"] == "idle"
        assert not release_fifo(fifo)  # ferryd holds no end of it
    finally:
        release_fifo(fifo)
        for c in (asker, other):
            if c is not None:
                c.close()
    saved = b.call("migrate.save", {"file": fifo})
    assert os.path.isfile(fifo) and os.path.getsize(fifo) == saved["bytes"], saved
