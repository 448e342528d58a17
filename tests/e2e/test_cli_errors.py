"""Issue 2, bad input: each a clear message on stderr, the contract's exit status (2 usage or
configuration, 1 runtime), nothing half-written; and a running server that gets a malformed
or oversized request answers it and keeps serving everyone else.
"""

import os
import socket

import pytest

from harness import curl, query_db, raw_http, run_apisim

GOOD_UPSTREAM = "http://127.0.0.1:9"  # never contacted: every case fails before forwarding


def assert_fails(p, rc, *names):
    """Exit status `rc`, and stderr naming each of `names` (case-insensitive)."""
    assert p.returncode == rc, (
        f"exit {p.returncode}, expected {rc}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    err = p.stderr.lower()
    assert p.stderr.strip(), "no message on stderr"
    for n in names:
        assert str(n).lower() in err, f"stderr does not name {n!r}:\n{p.stderr}"
    assert "listening on" not in p.stdout, p.stdout


# --- usage errors: exit 2, nothing written -------------------------------------------------


def test_no_command(apisim_bin):
    p = run_apisim()
    assert p.returncode == 2 and "usage" in p.stderr.lower(), (p.returncode, p.stderr)


def test_unknown_subcommand(apisim_bin):
    assert_fails(run_apisim("frobnicate"), 2, "frobnicate")


@pytest.mark.parametrize("cmd", [
    ["record", "--upstream", GOOD_UPSTREAM],
    ["replay"],
    ["ls"],
])
def test_unknown_flag(apisim_bin, tmp_path, cmd):
    db = tmp_path / "x.db"
    assert_fails(run_apisim(*cmd, "--db", db, "--bogus-flag"), 2, "--bogus-flag")
    assert not db.exists(), "a usage error wrote a database"


def test_flag_missing_its_value(apisim_bin, tmp_path):
    db = tmp_path / "x.db"
    assert_fails(run_apisim("record", "--db", db, "--upstream"), 2, "--upstream")
    assert not db.exists()


# record without --upstream is a forward proxy (HTTP_PROXY/HTTPS_PROXY), not a usage error:
# test_forward_proxy.py checks that a request in origin form then gets 400 naming both fixes.


@pytest.mark.parametrize("url", ["notaurl", "ftp://127.0.0.1/", "http://", "http://host:99999"])
def test_malformed_upstream_url(apisim_bin, tmp_path, url):
    db = tmp_path / "x.db"
    assert_fails(run_apisim("record", "--upstream", url, "--db", db), 2, url)
    assert not db.exists(), "a usage error wrote a database"


@pytest.mark.parametrize("listen", ["nope", "127.0.0.1:notaport", "127.0.0.1:70000"])
def test_malformed_listen(apisim_bin, tmp_path, listen):
    db = tmp_path / "x.db"
    p = run_apisim("record", "--upstream", GOOD_UPSTREAM, "--db", db, "--listen", listen)
    assert_fails(p, 2, listen)


# --- runtime failures: exit 1 --------------------------------------------------------------


@pytest.mark.parametrize("where", ["missing-dir", "proc"])
def test_unwritable_database(apisim_bin, tmp_path, where):
    db = tmp_path / "no" / "such" / "dir" / "x.db" if where == "missing-dir" else \
        "/proc/apisim-no-such/x.db"
    p = run_apisim("record", "--upstream", GOOD_UPSTREAM, "--db", db, "--listen",
                   "127.0.0.1:0", timeout=15)
    assert_fails(p, 1, db)
    assert not os.path.exists(db)


CORRUPT = bytes((i * 7919 + 13) % 256 for i in range(64 * 1024))


@pytest.mark.parametrize("cmd", [
    ["record", "--upstream", GOOD_UPSTREAM, "--listen", "127.0.0.1:0"],
    ["replay", "--listen", "127.0.0.1:0"],
    ["ls"],
])
def test_corrupt_database(apisim_bin, tmp_path, cmd):
    db = tmp_path / "corrupt.db"
    db.write_bytes(CORRUPT)
    p = run_apisim(*cmd, "--db", db, timeout=15)
    assert_fails(p, 1, db.name)
    assert db.read_bytes() == CORRUPT, "the corrupt file was modified"


def test_newer_database_is_refused(apisim_bin, tmp_path):
    import sqlite3
    db = tmp_path / "future.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x)")
    con.execute("PRAGMA user_version = 999")
    con.commit()
    con.close()
    before = db.read_bytes()
    p = run_apisim("replay", "--db", db, "--listen", "127.0.0.1:0", timeout=15)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "999" in p.stderr or "newer" in p.stderr.lower(), p.stderr
    assert db.read_bytes() == before


def test_port_in_use(apisim_bin, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        db = tmp_path / "x.db"
        p = run_apisim("record", "--upstream", GOOD_UPSTREAM, "--db", db,
                       "--listen", f"127.0.0.1:{port}", timeout=15)
    assert_fails(p, 1, port)


# --- a running server given bad requests ---------------------------------------------------


@pytest.fixture
def recorder(apisim, upstream, db_path):
    """A record server with --max-body 1KiB in front of the test upstream."""
    return apisim("record", "--upstream", upstream.url, "--db", db_path, "--max-body", "1KiB")


def assert_still_serves(recorder, upstream):
    r = curl(recorder.url + "/json", timeout=10)
    assert r.status == 200 and r.body.startswith(b'{"hello"'), r


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32) + b"\r\n\r\n",  # TLS hello
    b"GET /json HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    b"GET /json HTTP/9.9\r\nHost: x\r\n\r\n",
], ids=["word", "method-only", "tls", "bad-header", "bad-version"])
def test_malformed_request(recorder, upstream, request_bytes):
    resp = raw_http(recorder.url, request_bytes, timeout=5)
    if resp is not None:
        assert resp.status in (400, 505), f"answered {resp.status}: {resp.raw[:300]!r}"
    assert not upstream.received, "a malformed request was forwarded"
    assert_still_serves(recorder, upstream)


def test_oversized_header(recorder, upstream):
    big = b"X-Big: " + b"a" * (100 * 1024) + b"\r\n"
    resp = raw_http(recorder.url, b"GET /json HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n",
                    timeout=5)
    if resp is not None:
        assert resp.status in (400, 413, 431), f"answered {resp.status}"
    assert not upstream.received, "a request with a 100 KiB header was forwarded"
    assert_still_serves(recorder, upstream)


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_body_over_max_body(recorder, upstream, db_path, framing):
    body = b"z" * 4096
    if framing == "length":
        req = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
               b"Content-Length: 4096\r\n\r\n" + body)
    else:
        req = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"400\r\n" + body[i:i + 1024] + b"\r\n" for i in range(0, 4096, 1024))
               + b"0\r\n\r\n")
    resp = raw_http(recorder.url, req, timeout=5)
    if resp is not None:
        assert resp.status == 413, f"answered {resp.status}: {resp.raw[:300]!r}"
    assert not upstream.received_for("/echo"), "a body over --max-body was forwarded"
    # Under the limit is fine.
    r = curl(recorder.url + "/echo", "-X", "POST", "--data-binary", "y" * 512)
    assert r.status == 200 and r.json()["body_len"] == 512
    assert_still_serves(recorder, upstream)


def test_a_stalled_client_does_not_block_others(recorder, upstream):
    """A connection that sends half a request and waits must not hold up anyone."""
    with socket.create_connection(("127.0.0.1", recorder.port), timeout=5) as stalled:
        stalled.sendall(b"GET /json HTTP/1.1\r\nHost: x\r\nX-Half: ")
        with socket.create_connection(("127.0.0.1", recorder.port), timeout=5) as half_body:
            half_body.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
            for _ in range(3):
                assert_still_serves(recorder, upstream)


def test_nothing_recorded_for_rejected_requests(apisim, upstream, db_path):
    rec = apisim("record", "--upstream", upstream.url, "--db", db_path, "--max-body", "1KiB")
    raw_http(rec.url, b"GARBAGE\r\n\r\n", timeout=5)
    raw_http(rec.url, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n"
             + b"z" * 4096, timeout=5)
    assert curl(rec.url + "/json").status == 200
    stopped = rec.stop()
    assert stopped.rc == 0, stopped.stderr
    rows = query_db(db_path, "SELECT method, path, status FROM exchanges")
    assert [tuple(r) for r in rows] == [("GET", "/json", 200)]
