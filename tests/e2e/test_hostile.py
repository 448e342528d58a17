"""Issue 7, hostile input and security: raw-socket abuse of a running replay and record
server (malformed request lines, bad chunked framing, slowloris, pipelining, clients that
vanish mid-response, oversized heads, URLs and bodies) while a normal client keeps being
answered; redaction proven on the raw bytes of the database files; a warning for a
non-loopback listener; nothing written outside the paths given.

Real binary on 127.0.0.1 port 0, real upstream, raw sockets and the curl CLI; waits poll
with deadlines.
"""

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import upstream as U
from harness import ApisimProcess, curl, query_db, raw_http, run_apisim, wait_until

CLIENT_TIMEOUT = 2  # seconds, --client-timeout of every server here
BIG = 4 * 1024 * 1024  # /binary?n=BIG: a response that takes a while to send


# --- servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A recording of the paths the tests ask for (the upstream is gone afterwards)."""
    db = tmp_path_factory.mktemp("hostile") / "rec.db"
    with U.Upstream() as up:
        with ApisimProcess(["record", "--upstream", up.url, "--db", db]) as rec:
            for path in ["/json", "/echo?n=1", "/echo?n=2", "/echo?n=3", f"/binary?n={BIG}",
                         "/sse?events=20&gap_ms=50"]:
                assert curl(rec.url + path).status == 200
            assert rec.stop().rc == 0
    return db


@pytest.fixture(params=["replay", "record"])
def server(request, recording, tmp_path):
    """A replay server on the recording, or a record server in front of a live upstream;
    both with --client-timeout 2s and --max-body 1KiB. .upstream is None for replay."""
    common = ["--client-timeout", f"{CLIENT_TIMEOUT}s", "--max-body", "1KiB"]
    if request.param == "replay":
        p = ApisimProcess(["replay", "--db", recording, *common])
        p.upstream = None
        yield p
        p.kill()
        return
    with U.Upstream() as up:
        p = ApisimProcess(["record", "--upstream", up.url, "--db", tmp_path / "live.db",
                           *common])
        p.upstream = up
        yield p
        p.kill()


def assert_serves(srv, what="", n=1):
    """A normal client is answered (the recorded /json) and the server is alive."""
    for _ in range(n):
        r = curl(srv.url + "/json", timeout=10)
        assert r.status == 200 and r.body == U.JSON_BODY, f"after {what}: {r!r}"
    assert srv.running, f"server died after {what}:\n{srv.stderr_text()}"


def assert_not_forwarded(srv, path):
    if srv.upstream is not None:
        got = [r for r in srv.upstream.received if r.path == path]
        assert not got, f"a refused request reached the upstream: {got}"


def stop_clean(srv):
    stopped = srv.stop()
    assert stopped.rc in (0, 3), stopped  # 3: a replay that saw misses (none expected here)
    assert "AddressSanitizer" not in stopped.stderr and "runtime error" not in stopped.stderr
    return stopped


# --- malformed requests ------------------------------------------------------------------------


MALFORMED = {
    "garbage": b"GARBAGE\r\n\r\n",
    "no-version": b"GET /json\r\n\r\n",
    "two-spaces": b"GET  /json  HTTP/1.1\r\nHost: x\r\n\r\n",
    "nul-bytes": b"GET /js\x00on HTTP/1.1\r\nHost: x\r\n\r\n",
    "binary": bytes(range(256)) + b"\r\n\r\n",
    "bad-version": b"GET /json HTTP/7.0\r\nHost: x\r\n\r\n",
    "space-in-header-name": b"GET /json HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
    "no-colon": b"GET /json HTTP/1.1\r\nHost: x\r\njust words\r\n\r\n",
    "bare-lf": b"GET /json HTTP/1.1\nHost: x\n\n",
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_request(server, name):
    resp = raw_http(server.url, MALFORMED[name], timeout=5)
    if resp is not None and name != "bare-lf":  # a bare LF head is accepted by some servers
        assert 400 <= resp.status < 600 and resp.status != 500, (name, resp.raw[:200])
    assert_serves(server, name)
    stop_clean(server)


BAD_CHUNKED = {
    "size-not-hex": b"ZZZ\r\nabc\r\n0\r\n\r\n",
    "longer-than-size": b"3\r\nabcdefgh\r\n0\r\n\r\n",
    "size-overflow": b"FFFFFFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n",
    "negative": b"-5\r\nabc\r\n0\r\n\r\n",
    "no-crlf": b"3abc0",
}


@pytest.mark.parametrize("name", BAD_CHUNKED)
def test_bad_chunked_encoding(server, name):
    req = (b"POST /echo?chunked=" + name.encode() + b" HTTP/1.1\r\nHost: x\r\n"
           b"Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n" + BAD_CHUNKED[name])
    resp = raw_http(server.url, req, timeout=CLIENT_TIMEOUT + 3, send_then_shutdown=True)
    if resp is not None:
        assert resp.status in (400, 413), (name, resp.raw[:300])
    assert_not_forwarded(server, "/echo")
    assert_serves(server, name)
    stop_clean(server)


# --- slowloris ----------------------------------------------------------------------------------


def test_slowloris_is_timed_out_and_others_are_served(server):
    """20 connections send half a request head and go silent: the server closes each after
    about --client-timeout, and answers a normal client all along."""
    slow, opened = [], time.monotonic()
    try:
        for i in range(20):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=15)
            s.sendall(b"GET /json HTTP/1.1\r\nHost: x\r\nX-Slow-%d: aaaa" % i)
            slow.append(s)
        assert_serves(server, "20 half-open connections", n=3)
        closed_after = []
        for s in slow:
            try:
                data = s.recv(65536)  # b"" (or an error answer) once the server gives up
            except ConnectionResetError:
                data = b""
            closed_after.append(time.monotonic() - opened)
            assert data == b"" or data.startswith(b"HTTP/1.1 4"), data[:200]
    finally:
        for s in slow:
            s.close()
    print(f"slowloris: 20 connections closed after {min(closed_after):.2f}..."
          f"{max(closed_after):.2f} s (--client-timeout {CLIENT_TIMEOUT}s)")
    assert CLIENT_TIMEOUT - 0.5 <= min(closed_after) and max(closed_after) < CLIENT_TIMEOUT + 4
    if server.upstream is not None:
        assert not [r for r in server.upstream.received if r.header("x-slow-0")], \
            "half a request head was forwarded"
    assert_serves(server, "slowloris")
    stop_clean(server)


def test_a_slow_body_is_timed_out_too(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
        t0 = time.monotonic()
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        assert_serves(server, "a stalled body")
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            data = b""
        took = time.monotonic() - t0
    assert data == b"" or data.startswith(b"HTTP/1.1 4"), data[:200]
    assert took < CLIENT_TIMEOUT + 4, took
    assert_not_forwarded(server, "/echo")
    stop_clean(server)


# --- pipelining ----------------------------------------------------------------------------------


def read_responses(sock, count, timeout=10):
    """Read `count` HTTP/1.1 responses (Content-Length or chunked) from sock, in order."""
    buf, out = b"", []
    deadline = time.monotonic() + timeout

    def more():
        nonlocal buf
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        b = sock.recv(65536)
        if not b:
            raise AssertionError(f"connection closed after {len(out)} responses: {buf[:300]!r}")
        buf += b

    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            more()
        head, _, buf = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
        if m:
            n = int(m.group(1))
            while len(buf) < n:
                more()
            body, buf = buf[:n], buf[n:]
        else:
            body = b""
            while True:
                while b"\r\n" not in buf:
                    more()
                size_line, _, rest = buf.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(rest) < size + 2:
                    more()
                    size_line, _, rest = buf.partition(b"\r\n")
                body += rest[:size]
                buf = rest[size + 2:]
                if size == 0:
                    break
        out.append((status, body))
    return out


def test_pipelined_requests_are_answered_in_order(server):
    reqs = b"".join(b"GET /echo?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in (1, 2, 3))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(reqs)  # all three at once, before any answer
        got = read_responses(s, 3)
    assert [st for st, _ in got] == [200, 200, 200], got
    assert [json.loads(b)["query"] for _, b in got] == ["n=1", "n=2", "n=3"], got
    assert_serves(server, "pipelining")
    stop_clean(server)


# --- clients that vanish mid-response ---------------------------------------------------------


def test_client_disconnect_mid_response(server):
    """Ten clients each read part of a 4 MiB answer and reset the connection."""
    for i in range(10):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(b"GET /binary?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % BIG)
        got = 0
        while got < 64 * 1024:
            b = s.recv(65536)
            assert b, "closed early"
            got += len(b)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    assert_serves(server, "10 clients gone mid-response", n=3)
    stopped = stop_clean(server)
    if server.upstream is not None:  # record: each stored, marked incomplete
        db = server.args[server.args.index("--db") + 1]
        rows = query_db(db, "SELECT complete FROM exchanges WHERE path = '/binary'")
        assert len(rows) == 10 and all(r["complete"] == 0 for r in rows), (
            [tuple(r) for r in rows], stopped.stderr)


def test_client_disconnect_while_a_replayed_stream_is_paced(recording):
    """Replay paces an SSE stream (--latency recorded): clients that leave while their
    connection waits for the next piece do not disturb the server."""
    with ApisimProcess(["replay", "--db", recording, "--latency", "recorded"]) as rep:
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", rep.port), timeout=10) as s:
                s.sendall(b"GET /sse?events=20&gap_ms=50 HTTP/1.1\r\nHost: x\r\n\r\n")
                buf = b""
                while b"data: " not in buf:
                    b = s.recv(65536)
                    assert b
                    buf += b
        r = curl(rep.url + "/sse?events=20&gap_ms=50", timeout=15)
        assert r.status == 200 and r.body == U.sse_body(20)
        assert_serves(rep, "clients gone mid-stream")
        stop_clean(rep)


# --- caps -------------------------------------------------------------------------------------------


def test_caps_answer_431_414_413_and_log(server):
    cases = [
        ("head over the memory limit", 431,
         b"GET /json HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (100 * 1024) + b"\r\n\r\n"),
        ("300 headers", 431,
         b"GET /json HTTP/1.1\r\nHost: x\r\n" +
         b"".join(b"X-H%d: v\r\n" % i for i in range(300)) + b"\r\n"),
        ("URL of 100 KiB", 414, b"GET /json?q=" + b"u" * (100 * 1024) + b" HTTP/1.1\r\n\r\n"),
        ("body over --max-body", 413,
         b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n" + b"b" * 4096),
        ("chunked body over --max-body", 413,
         b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
         b"400\r\n" + b"b" * 1024 + b"\r\n" + b"400\r\n" + b"b" * 1024 + b"\r\n0\r\n\r\n"),
    ]
    for what, status, req in cases:
        resp = raw_http(server.url, req, timeout=5)
        assert resp is not None and resp.status == status, (what, resp and resp.raw[:200])
        assert_serves(server, what)
    assert_not_forwarded(server, "/echo")
    stopped = stop_clean(server)
    for status in (431, 414, 413):
        assert re.search(rf"\b{status}\b|more than \d+ headers|--max-body", stopped.stderr), (
            f"no log line for {status}:\n{stopped.stderr}")
    assert "414" in stopped.stderr and "431" in stopped.stderr, stopped.stderr


# --- redaction, proven on the bytes of the database ------------------------------------------


SECRETS = {
    "authorization": "Bearer sk-live-AUTH-7f3a9c",
    "x-api-key": "xak-live-KEY-22b81d",
    "cookie": "sid=cookie-live-COOKIE-9e0d",
    "x-custom-token": "custom-live-TOKEN-51aa",  # --redact-header
}
QUERY_SECRET = "qs-live-QUERY-0c4e"  # ?api_token= (--redact-query)
REQ_JSON_SECRET = "pw-live-PASSWORD-8812"  # {"password": ...} (--redact-json /password)
NESTED_JSON_SECRET = "nested-live-NESTED-3bd0"  # /auth/secret
RESP_JSON_SECRET = "tok-live-ACCESS-77e1"  # upstream answers {"access_token": ...}
RESP_COOKIE_SECRET = "setcookie-live-SC-4410"  # upstream Set-Cookie
ALL_SECRETS = [*SECRETS.values(), QUERY_SECRET, REQ_JSON_SECRET, NESTED_JSON_SECRET,
               RESP_JSON_SECRET, RESP_COOKIE_SECRET]


class _TokenHandler(BaseHTTPRequestHandler):
    """An API that hands out a token: JSON with a secret field and a Set-Cookie."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        req = json.loads(self.rfile.read(n) or b"{}")
        body = json.dumps({"access_token": RESP_JSON_SECRET, "user": req.get("user"),
                           "expires_in": 3600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", f"session={RESP_COOKIE_SECRET}; HttpOnly")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _db_bytes(db):
    out = {}
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(str(db) + suffix)
        if p.exists():
            out[p.name] = p.read_bytes()
    return out


def _leaks(files):
    return [(name, s) for name, raw in files.items() for s in ALL_SECRETS
            if s.encode() in raw or s.encode("utf-16-le") in raw]


def test_redaction_leaves_no_secret_in_any_database_file(tmp_path):
    db = tmp_path / "secrets.db"
    api = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    threading.Thread(target=api.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    body = json.dumps({"user": "ada", "password": REQ_JSON_SECRET,
                       "auth": {"secret": NESTED_JSON_SECRET, "kind": "basic"}})
    args = ["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", body,
            *[a for k, v in SECRETS.items() for a in ("-H", f"{k}: {v}")]]
    path = f"/oauth/token?client=cli&api_token={QUERY_SECRET}"
    try:
        with ApisimProcess(["record", "--upstream", f"http://127.0.0.1:{api.server_port}",
                            "--db", db, "--redact-header", "X-Custom-Token",
                            "--redact-query", "api_token", "--redact-json", "/password",
                            "--redact-json", "/auth/secret",
                            "--redact-json", "/access_token"]) as rec:
            for _ in range(3):
                r = curl(rec.url + path, *args)
                assert r.status == 200, r
                # The client gets the real answer: redaction is for the store only.
                assert r.json()["access_token"] == RESP_JSON_SECRET
                assert RESP_COOKIE_SECRET in (r.header("set-cookie") or "")
            wait_until(lambda: len(query_db(db, "SELECT id FROM exchanges")) == 3, 10,
                       what="3 exchanges committed")
            running = _db_bytes(db)  # with the WAL and shared memory of a live recorder
            assert rec.stop().rc == 0
    finally:
        api.shutdown()
        api.server_close()
    stopped_files = _db_bytes(db)
    assert "secrets.db-wal" in running, f"expected a WAL while recording: {list(running)}"
    leaks = _leaks(running) + _leaks(stopped_files)
    assert not leaks, f"secrets in the database files: {leaks}"
    row = query_db(db, "SELECT * FROM exchanges ORDER BY id LIMIT 1")[0]
    stored = {k.lower(): v for k, v in json.loads(row["request_headers"])}
    for k in SECRETS:
        assert stored[k] == "[REDACTED]", (k, stored)
    assert "api_token=[REDACTED]" in row["query"] or "api_token=%5BREDACTED%5D" in row["query"]
    req = json.loads(row["request_body"])
    assert req["password"] == "[REDACTED]" and req["auth"]["secret"] == "[REDACTED]", req
    assert req["user"] == "ada" and req["auth"]["kind"] == "basic", "too much was redacted"
    resp = json.loads(row["response_body"])
    assert resp["access_token"] == "[REDACTED]" and resp["expires_in"] == 3600, resp
    # Replay: a client sending the real secrets still matches the redacted recording.
    with ApisimProcess(["replay", "--db", db, "--strict"]) as rep:
        r = curl(rep.url + path, *args)
        assert r.status == 200 and r.header("x-apisim-miss") is None, r.body.decode()
        other = curl(rep.url + path.replace(QUERY_SECRET, "another-secret"), *args)
        assert other.status == 200, "the redacted query parameter is not part of the key"
        stopped = rep.stop()
    assert stopped.rc == 0, stopped.stderr
    assert not _leaks(_db_bytes(db)), "replay wrote a secret"


# --- listening address ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["replay", "mock"])
def test_non_loopback_listen_warns(recording, mode):
    args = ["replay", "--db", recording] if mode == "replay" else ["mock"]
    with ApisimProcess(args, listen="0.0.0.0:0") as p:
        assert p.host == "0.0.0.0"
        r = curl(f"http://127.0.0.1:{p.port}/__apisim/health")
        assert r.status == 200
        stopped = p.stop()
    assert re.search(r"warning.*not a loopback", stopped.stderr, re.I), stopped.stderr
    with ApisimProcess(args) as p:  # the default and 127.0.0.1 say nothing of the kind
        stopped = p.stop()
    assert "loopback" not in stopped.stderr, stopped.stderr


# --- imports and exports write where they are told, nowhere else ---------------------------


def _tree(d):
    return sorted(str(p.relative_to(d)) for p in Path(d).rglob("*"))


def test_export_and_import_write_only_the_paths_given(recording, tmp_path):
    work = tmp_path / "cwd"
    work.mkdir()
    db = tmp_path / "copy.db"
    db.write_bytes(Path(recording).read_bytes())
    out = tmp_path / "out" / "rec.har"
    out.parent.mkdir()
    for fmt, name in [("har", "rec.har"), ("jsonl", "rec.jsonl"), ("sql", "rec.sql")]:
        target = out.parent / name
        p = run_apisim("export", "--db", db, "--format", fmt, "--output", target, cwd=work)
        assert p.returncode == 0, p.stderr
        assert target.stat().st_size > 0
    p = run_apisim("export", "--db", db, "--format", "har", cwd=work)  # stdout
    assert p.returncode == 0 and json.loads(p.stdout)["log"]["entries"]
    assert _tree(work) == [], f"export wrote into its working directory: {_tree(work)}"
    assert _tree(out.parent) == ["rec.har", "rec.jsonl", "rec.sql"]
    # An export never replaces its own database.
    p = run_apisim("export", "--db", db, "--format", "sql", "--output", db, cwd=work)
    assert p.returncode != 0 and db.read_bytes()[:16] == b"SQLite format 3\x00"
    # A HAR whose entries carry file names and traversal in URLs imports as data only.
    har = json.loads((out.parent / "rec.har").read_text())
    for e in har["log"]["entries"]:
        e["request"]["url"] = "http://h/../../../../etc/apisim-escape?x=../../y"
        e["_file"] = "../../escape.txt"
    evil = tmp_path / "evil.har"
    evil.write_text(json.dumps(har))
    new_db = tmp_path / "imported" / "new.db"
    new_db.parent.mkdir()
    p = run_apisim("import", "--db", new_db, evil, cwd=work)
    assert p.returncode == 0, p.stderr
    assert _tree(work) == [], _tree(work)
    assert set(_tree(new_db.parent)) <= {"new.db", "new.db-wal", "new.db-shm"}
    assert not Path("/etc/apisim-escape").exists()
    assert not (tmp_path / "escape.txt").exists()


def test_fake_claude_session_log_stays_in_its_directory(tmp_path):
    """A session id from a scenario file (or --session-id / --resume) is one file name: a
    hostile one cannot write outside <config dir>/projects/<slug>/."""
    conf, work = tmp_path / "conf", tmp_path / "work"
    conf.mkdir()
    work.mkdir()
    env = {"CLAUDE_CONFIG_DIR": str(conf)}
    scenario = tmp_path / "s.json"
    for sid in ["../../../escape-a", "x/../../../../escape-b"]:
        scenario.write_text(json.dumps({"session_id": sid, "records": [
            {"type": "result", "subtype": "success", "is_error": False, "result": "ok"}]}))
        p = run_apisim("claude", "-p", "hi", "--apisim-scenario", scenario, env=env, cwd=work)
        assert p.returncode in (0, 1, 2), p.stderr
    for flag in ["--session-id", "--resume"]:
        run_apisim("claude", "-p", "hi", flag, "../../../escape-c", "--output-format",
                   "stream-json", "--verbose", env=env, cwd=work)
    outside = [p for p in _tree(tmp_path) if "escape" in p and not p.startswith("conf/projects/")]
    assert not outside, f"written outside the session log directory: {outside}"
    for p in _tree(conf):
        assert p == "projects" or p.startswith("projects/"), p


# --- connection cap ---------------------------------------------------------------------------


def test_connections_beyond_max_connections_get_503(recording):
    """With --max-connections 4 and four clients holding keep-alive connections, a fifth
    gets 503 with Retry-After and a log line; once they leave it is answered again."""
    with ApisimProcess(["replay", "--db", recording, "--max-connections", "4"]) as rep:
        held = []
        try:
            for _ in range(4):
                s = socket.create_connection(("127.0.0.1", rep.port), timeout=10)
                s.sendall(b"GET /echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_responses(s, 1)[0][0] == 200
                held.append(s)
            over = raw_http(rep.url, b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
            assert over is not None and over.status == 503, over
            assert dict((k.lower(), v) for k, v in over.headers).get("retry-after") == "1"
            assert "max-connections" in json.loads(over.body)["error"]
            health = raw_http(rep.url, b"GET /__apisim/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert health is not None and health.status == 200, "control API unreachable"
        finally:
            for s in held:
                s.close()
        wait_until(lambda: curl(rep.url + "/json", check=False).status == 200, 10,
                   what="answers once the held connections closed")
        stopped = rep.stop()
    assert re.search(r"too many connections.*--max-connections is 4", stopped.stderr), (
        stopped.stderr)


@pytest.mark.parametrize("sql", [
    "ATTACH DATABASE '{out}' AS x; CREATE TABLE x.t (a); INSERT INTO x.t VALUES ('pwned');",
    "VACUUM INTO '{out}';",
], ids=["attach", "vacuum-into"])
def test_a_text_dump_cannot_write_other_files(recording, tmp_path, sql):
    """A recording committed as FILE.sql is SQL run at load: it may fill its own in-memory
    database, never create or overwrite another file."""
    dump = tmp_path / "rec.sql"
    p = run_apisim("export", "--db", recording, "--format", "sql", "--output", dump)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "written-by-the-dump.db"
    evil = tmp_path / "evil.sql"
    evil.write_text(dump.read_text() + "\n" + sql.format(out=out) + "\n")
    for args in (["ls", "--db", evil], ["replay", "--db", evil, "--listen", "127.0.0.1:0"]):
        p = run_apisim(*args, timeout=15)
        assert p.returncode == 1, (args, p.returncode, p.stderr)
        assert "ATTACH" in p.stderr and "evil.sql" in p.stderr, p.stderr
        assert not out.exists(), f"{args[0]} let a text dump write {out}"
    with ApisimProcess(["replay", "--db", dump]) as rep:  # the honest dump still loads
        assert curl(rep.url + "/json").body == U.JSON_BODY
        assert rep.stop().rc == 0


# --- a quiet response is not a quiet client ------------------------------------------------------


def test_pauses_in_a_stream_longer_than_client_timeout_are_not_cut(tmp_path):
    """--client-timeout is for clients that go quiet: a recorded stream pausing longer than
    it reaches its client whole (record, replay paced by a timer, replay paced by a sleeping
    connection thread), and the connection's timeout is back to --client-timeout after."""
    db = tmp_path / "pauses.db"
    path = "/sse?events=3&gap_ms=1500"

    def stream_then_idle(srv):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, body = read_responses(s, 1, timeout=15)[0]
            t0 = time.monotonic()
            try:
                rest = s.recv(65536)  # idle keep-alive: closed after --client-timeout
            except ConnectionResetError:
                rest = b""
            return status, body, rest, time.monotonic() - t0

    with U.Upstream() as up:
        with ApisimProcess(["record", "--upstream", up.url, "--db", db,
                            "--client-timeout", "1s"]) as rec:
            status, body, rest, idle = stream_then_idle(rec)
            assert rec.stop().rc == 0
    assert (status, body) == (200, U.sse_body(3)), (status, body)
    assert rest == b"" and idle < 5, (rest, idle)
    row = query_db(db, "SELECT complete, error FROM exchanges")[0]
    assert row["complete"] == 1 and row["error"] is None, dict(row)
    for extra in ([], ["--on-miss", "forward", "--upstream", "http://127.0.0.1:9"]):
        with ApisimProcess(["replay", "--db", db, "--latency", "recorded",
                            "--client-timeout", "1s", *extra]) as rep:
            status, body, rest, idle = stream_then_idle(rep)
            assert rep.stop().rc == 0
        assert (status, body) == (200, U.sse_body(3)), (extra, status, body)
        assert rest == b"" and idle < 5, (extra, rest, idle)
