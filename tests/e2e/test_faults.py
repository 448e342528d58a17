"""Issue 7, faults: the upstream fails (refused, reset mid-body, stalled, bad TLS certificate,
DNS), the client goes away mid-stream, the recorder is killed with -9 under load, and the
database is locked, read-only or full. Each is answered, recorded with its cause, and never
damages what was already stored.

Real binary, real servers on 127.0.0.1 port 0, real SQLite files; nothing sleeps to
synchronise (wait_until polls with a deadline).
"""

import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager

import pytest

import upstream as U
from harness import ApisimProcess, closed_port_url, curl, query_db, wait_until

CAUSES = {
    "refused": r"refused",
    "dns": r"dns|resolve",
    "timeout": r"timed? ?out",
    "reset": r"reset|closed",
    "tls": r"tls|certificate",
}


# --- helpers -------------------------------------------------------------------------------


class RawUpstream:
    """A TCP server on 127.0.0.1:0 whose every connection is handled by `handler(sock)` in a
    thread: for upstreams that misbehave in ways http.server cannot (half a body, a stall).

    close() wakes every thread with shutdown() and joins it before closing any socket: a
    socket closed under a thread that is about to accept() or recv() on it lets that thread
    use the fd number after it is reused (by the next test's upstream, whose connections it
    would then steal)."""

    def __init__(self, handler):
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.stop_event = threading.Event()
        self.conns = []
        self.threads = []
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self):
        while not self.stop_event.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                if self.stop_event.is_set():
                    c.close()
                    return
                self.connections += 1
                self.conns.append(c)
                t = threading.Thread(target=self._run, args=(c,), daemon=True)
                self.threads.append(t)
            t.start()

    def _run(self, c):
        try:
            self.handler(c, self)
        except OSError:
            pass

    def close(self):
        self.stop_event.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # a blocked accept() returns EINVAL
        except OSError:
            pass
        self._acceptor.join(10)
        with self._lock:
            conns, threads = list(self.conns), list(self.threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)  # a blocked recv() returns b""
            except OSError:
                pass
        for t in threads:
            t.join(10)
        self.sock.close()
        for c in conns:
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_request_head(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = c.recv(65536)
        if not b:
            break
        buf += b
    return buf


def close_with_rst(c):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()


PARTIAL_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n")
PARTIAL_BODY = b'{"part": "' + b"p" * 90  # 100 bytes of 1000


def assert_502(res, kind):
    """A 502 with a JSON body whose "error" and "cause" name the failure `kind`."""
    assert res.status == 502, f"{kind}: expected 502, got {res!r}"
    assert (res.content_type or "").startswith("application/json"), res
    body = res.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert re.search(CAUSES[kind], body.get("cause", ""), re.I), (
        f"{kind}: cause {body.get('cause')!r} does not name it")
    return body


def intact_rows(db, sql):
    """Rows of `sql` on `db`, after asserting PRAGMA integrity_check says ok."""
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return [tuple(r) for r in con.execute(sql)]
    finally:
        con.close()


def rows_for(db, path):
    return query_db(db, "SELECT * FROM exchanges WHERE path = ? ORDER BY id", path)


def replay_one(db, path, *args):
    """Replay `path` once from `db` (no upstream) and return (CurlResult, StopResult)."""
    with ApisimProcess(["replay", "--db", db]) as rep:
        r = curl(rep.url + path, *args, check=False)
        return r, rep.stop()


def record_failure(db, upstream_url, path, kind, *record_args):
    """Record one request that fails upstream; check the 502, the row and the replay."""
    with ApisimProcess(["record", "--upstream", upstream_url, "--db", db,
                        *record_args]) as rec:
        t0 = time.monotonic()
        res = curl(rec.url + path)
        elapsed = time.monotonic() - t0
        body = assert_502(res, kind)
        stopped = rec.stop()
    assert stopped.rc == 0, stopped.stderr
    assert re.search(CAUSES[kind], stopped.stderr, re.I), f"not logged: {stopped.stderr}"
    rows = rows_for(db, path.split("?")[0])
    assert len(rows) == 1, f"{len(rows)} rows for {path}"
    row = rows[0]
    assert row["status"] == 502 and row["error"] is not None, dict(row)
    assert re.search(CAUSES[kind], row["error"], re.I), row["error"]
    rep, rstop = replay_one(db, path)
    assert rep.status == 502 and rep.header("x-apisim-miss") is None, rep
    assert rep.json()["cause"] == body["cause"], (rep.json(), body)
    assert rstop.rc == 0, rstop.stderr
    return elapsed, row


# --- upstream failures ---------------------------------------------------------------------


def test_connection_refused(db_path):
    record_failure(db_path, closed_port_url(), "/json", "refused")


def test_dns_failure(db_path):
    record_failure(db_path, "http://nonexistent.invalid", "/json", "dns")


def test_stall_before_headers_past_upstream_timeout(db_path):
    def never_answer(c, srv):
        read_request_head(c)
        srv.stop_event.wait(30)

    with RawUpstream(never_answer) as up:
        elapsed, row = record_failure(db_path, up.url, "/stalled", "timeout",
                                      "--upstream-timeout", "1s")
    assert 0.9 <= elapsed < 5, f"502 after {elapsed:.2f} s with --upstream-timeout 1s"


def test_reset_mid_body_before_the_client_has_anything(db_path):
    """Head and 100 of 1000 promised bytes arrive together with the end of the connection:
    nothing was sent to the client yet, so it gets a 502, never a short 200."""
    def half_then_close(c, srv):
        read_request_head(c)
        # Corked, the head, the part and the FIN leave together.
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        c.sendall(PARTIAL_HEAD + PARTIAL_BODY)
        c.close()

    with RawUpstream(half_then_close) as up:
        record_failure(db_path, up.url, "/partial", "reset")


@pytest.mark.parametrize("how", ["rst", "stall"])
def test_failure_after_part_of_the_body_reached_the_client(db_path, how):
    """The client already has the head and part of the body when the upstream resets (or
    stalls past --upstream-timeout): its connection is cut short (never a clean end), the
    exchange is stored incomplete with the cause, and replay cuts it short the same way."""
    go = threading.Event()

    def part_then_fail(c, srv):
        read_request_head(c)
        c.sendall(PARTIAL_HEAD + PARTIAL_BODY)
        if how == "rst":
            go.wait(10)
            close_with_rst(c)
        else:
            srv.stop_event.wait(30)

    def read_cut_response(server):
        """Raw GET; returns (head, body bytes) once the connection ends, after setting go
        when the first body bytes arrived."""
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
            s.sendall(b"GET /partial HTTP/1.1\r\nHost: x\r\n\r\n")
            buf = b""
            while True:
                try:
                    b = s.recv(65536)
                except ConnectionResetError:
                    break
                if not b:
                    break
                buf += b
                head, sep, body = buf.partition(b"\r\n\r\n")
                if sep and body:
                    go.set()
            head, _, body = buf.partition(b"\r\n\r\n")
            return head, body

    with RawUpstream(part_then_fail) as up:
        with ApisimProcess(["record", "--upstream", up.url, "--db", db_path,
                            "--upstream-timeout", "1s"]) as rec:
            head, body = read_cut_response(rec)
            stopped = rec.stop()
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"content-length: 1000" in head.lower(), head
    assert 0 < len(body) < 1000, f"client got {len(body)} body bytes"
    assert PARTIAL_BODY.startswith(body), body
    rows = rows_for(db_path, "/partial")
    assert len(rows) == 1, stopped.stderr
    row = rows[0]
    cause = "reset" if how == "rst" else "timeout"
    assert row["complete"] == 0 and row["status"] == 200, dict(row)
    assert row["error"] and re.search(CAUSES[cause], row["error"], re.I), dict(row)
    assert row["response_body"] == PARTIAL_BODY.decode(), row["response_body"]
    # Replay: the same head and part, then the connection ends without the rest.
    with ApisimProcess(["replay", "--db", db_path]) as rep:
        go.clear()
        rhead, rbody = read_cut_response(rep)
        r = curl(rep.url + "/partial", check=False)
        assert rep.stop().rc == 0
    assert rhead.startswith(b"HTTP/1.1 200"), rhead
    assert b"content-length: 1000" in rhead.lower(), rhead
    assert rbody == PARTIAL_BODY, rbody
    assert r.exit_code != 0, f"replay of a cut response ended cleanly: {r!r}"


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "key.pem", d / "cert.pem"
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=apisim-test-self-signed",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return cert, key


@contextmanager
def tls_upstream(cert, key):
    up = U.Upstream()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    up._server.socket = ctx.wrap_socket(up._server.socket, server_side=True)
    up.start()
    try:
        yield up, "https://127.0.0.1:%d" % up.port
    finally:
        up.stop()


def test_invalid_tls_certificate_is_refused(db_path, self_signed):
    with tls_upstream(*self_signed) as (up, url):
        record_failure(db_path, url, "/json", "tls")
        assert not up.received, "a request went through a rejected TLS connection"


def test_invalid_tls_certificate_accepted_with_insecure(db_path, self_signed):
    with tls_upstream(*self_signed) as (up, url):
        with ApisimProcess(["record", "--upstream", url, "--db", db_path, "--insecure"]) as rec:
            r = curl(rec.url + "/json")
            assert rec.stop().rc == 0
    assert r.status == 200 and r.body == U.JSON_BODY, r
    row = rows_for(db_path, "/json")[0]
    assert row["status"] == 200 and row["error"] is None and row["complete"] == 1


# --- the client goes away ------------------------------------------------------------------


def test_client_disconnect_during_a_recorded_sse_stream(upstream, db_path):
    with ApisimProcess(["record", "--upstream", upstream.url, "--db", db_path]) as rec:
        with socket.create_connection(("127.0.0.1", rec.port), timeout=5) as s:
            s.sendall(b"GET /sse?events=50&gap_ms=50 HTTP/1.1\r\nHost: x\r\n"
                      b"Accept: text/event-stream\r\n\r\n")
            buf = b""
            while b'data: {"i": 1}' not in buf:
                b = s.recv(65536)
                assert b, f"stream ended early: {buf!r}"
                buf += b
        # Stored (asynchronously) while the recorder keeps running.
        row = wait_until(lambda: (rows_for(db_path, "/sse") or [None])[0], 10,
                         what="the abandoned stream to be stored")
        assert curl(rec.url + "/json").status == 200, "the recorder stopped answering"
        stopped = rec.stop()
    assert stopped.rc == 0, stopped.stderr
    assert row["complete"] == 0 and row["status"] == 200, dict(row)
    assert row["error"] is None, "the upstream did not fail: no upstream error to store"
    events = row["response_body"].count("data: ")
    assert 2 <= events < 50, row["response_body"]
    assert "disconnect" in stopped.stderr.lower(), stopped.stderr
    chunks = query_db(db_path, "SELECT count(*) FROM chunks WHERE exchange_id = ?", row["id"])
    assert chunks[0][0] >= 2


# --- kill -9 under load --------------------------------------------------------------------


def test_kill_9_under_load_loses_nothing_a_client_received(upstream, db_path):
    clients, run_for = 8, 2.0
    rec = ApisimProcess(["record", "--upstream", upstream.url, "--db", db_path])
    received, errors, stop = [], [], threading.Event()
    lock = threading.Lock()

    def client(i):
        n = 0
        conn = http.client.HTTPConnection("127.0.0.1", rec.port, timeout=10)
        while not stop.is_set():
            q = f"uid=c{i}-r{n}"
            n += 1
            try:
                conn.request("GET", "/echo?" + q)
                resp = conn.getresponse()
                body = resp.read()  # raises IncompleteRead when cut short
                if resp.status == 200 and json.loads(body)["query"] == q:
                    with lock:
                        received.append(q)
            except (OSError, http.client.HTTPException, ValueError) as e:
                with lock:
                    errors.append(repr(e))
                return
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + run_for
        wait_until(lambda: time.monotonic() >= deadline and len(received) >= 50,
                   run_for + 20, what="50 responses under load")
        rec.proc.send_signal(signal.SIGKILL)  # while every client is mid-loop
        rec.proc.wait(10)
        stop.set()
        for t in threads:
            t.join(15)
    finally:
        stop.set()
        rec.kill()
    got = set(received)
    stored = {q for (q,) in intact_rows(db_path, "SELECT query FROM exchanges")}
    missing = got - stored
    print(f"kill -9 under load: {len(got)} responses received by {clients} clients, "
          f"{len(stored)} exchanges stored, {len(missing)} received but missing")
    assert not missing, f"{len(missing)} fully received exchanges lost: {sorted(missing)[:10]}"
    assert len(got) >= 50


# --- the database: locked, read-only, full -------------------------------------------------


def test_database_locked_by_another_process(upstream, db_path):
    """Another process holds the write lock for a while: the recorder keeps answering
    without waiting for it, says so, holds the exchanges in memory and stores them once the
    lock is released; nothing stored before is touched."""
    with ApisimProcess(["record", "--upstream", upstream.url, "--db", db_path]) as rec:
        for i in range(3):
            assert curl(f"{rec.url}/echo?before={i}").status == 200
        wait_until(lambda: len(query_db(db_path, "SELECT id FROM exchanges")) == 3, 10,
                   what="3 exchanges stored")
        before = [tuple(r) for r in query_db(
            db_path, "SELECT id, query, response_body FROM exchanges ORDER BY id")]
        # Another process takes the write lock and keeps it.
        holder = sqlite3.connect(db_path, isolation_level=None, timeout=0)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            took = []
            for i in range(5):
                t0 = time.monotonic()
                r = curl(f"{rec.url}/echo?during={i}", timeout=30)
                took.append(time.monotonic() - t0)
                assert r.status == 200 and r.json()["query"] == f"during={i}", r
            wait_until(lambda: "locked" in rec.stderr_text().lower(), 10,
                       what="a log line saying the database is locked")
            assert len(query_db(db_path, "SELECT id FROM exchanges")) == 3
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        wait_until(lambda: len(query_db(db_path, "SELECT id FROM exchanges")) == 8, 10,
                   what="the held exchanges to be stored once the lock is released")
        for i in range(3):
            assert curl(f"{rec.url}/echo?after={i}").status == 200
        stopped = rec.stop()
    print(f"5 requests answered while the database was locked, in "
          f"{', '.join(f'{t:.2f}' for t in took)} s")
    assert max(took) < 2, f"requests waited for the lock: {took}"
    err = stopped.stderr.lower()
    assert "locked by another process" in err and str(db_path.name) in stopped.stderr, err
    assert "writable again" in err, err
    assert stopped.rc == 0, stopped.stderr
    rows = intact_rows(db_path, "SELECT id, query, response_body FROM exchanges ORDER BY id")
    assert rows[:3] == before, "rows stored before the lock changed"
    assert [r[1] for r in rows[3:]] == [f"during={i}" for i in range(5)] + [
        f"after={i}" for i in range(3)], "held exchanges lost or out of order"


def test_database_still_locked_at_stop_is_reported(upstream, db_path):
    """A lock that outlives the recorder: the held exchanges cannot be stored; that is
    said, and the exit status is 1."""
    with ApisimProcess(["record", "--upstream", upstream.url, "--db", db_path]) as rec:
        assert curl(f"{rec.url}/echo?before=0").status == 200
        wait_until(lambda: len(query_db(db_path, "SELECT id FROM exchanges")) == 1, 10,
                   what="1 exchange stored")
        holder = sqlite3.connect(db_path, isolation_level=None, timeout=0)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            assert curl(f"{rec.url}/echo?during=0").status == 200
            wait_until(lambda: "locked" in rec.stderr_text().lower(), 10, what="locked")
            stopped = rec.stop(timeout=30)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert stopped.rc == 1, stopped
    assert "1 exchanges could not be stored" in stopped.stderr, stopped.stderr
    assert [r[0] for r in query_db(db_path, "SELECT query FROM exchanges")] == ["before=0"]


def _as_other_user():
    """Keyword arguments for subprocess that drop root (root ignores file permissions)."""
    return {"user": 65534, "group": 65534} if os.geteuid() == 0 else {}


def test_read_only_database_for_record_exits_1(upstream, tmp_path):
    d = tempfile.mkdtemp(prefix="apisim-ro-")
    try:
        os.chmod(d, 0o777)
        db = os.path.join(d, "rec.db")
        with ApisimProcess(["record", "--upstream", upstream.url, "--db", db]) as rec:
            assert curl(rec.url + "/json").status == 200
            assert rec.stop().rc == 0
        before = open(db, "rb").read()
        os.chmod(db, 0o444)
        p = subprocess.run([os.environ["APISIM_BIN"], "record", "--upstream", upstream.url,
                            "--db", db, "--listen", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=20,
                           stdin=subprocess.DEVNULL, **_as_other_user())
        assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
        assert "listening on" not in p.stdout
        assert "read-only" in p.stderr.lower() and db in p.stderr, p.stderr
        assert open(db, "rb").read() == before
        # Replay of the same read-only file still works.
        with ApisimProcess(["replay", "--db", db]) as rep:
            assert curl(rep.url + "/json").body == U.JSON_BODY
            assert rep.stop().rc == 0
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextmanager
def small_filesystem(size_kib):
    """A tmpfs of size_kib mounted on a fresh directory (root only); skips otherwise."""
    d = tempfile.mkdtemp(prefix="apisim-full-")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", d],
                       capture_output=True, text=True) if os.geteuid() == 0 else None
    if p is None or p.returncode != 0:
        os.rmdir(d)
        pytest.skip("cannot mount a small tmpfs here: " + (p.stderr if p else "not root"))
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", d], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def _limit_file_size(limit):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_disk_full(upstream, tmp_path, how):
    """The disk fills while recording (a 768 KiB tmpfs, or every file capped at 512 KiB by
    RLIMIT_FSIZE): the proxy keeps answering, logs the failure, earlier rows survive."""
    ctx = small_filesystem(768) if how == "tmpfs" else contextmanager(
        lambda: (yield str(tmp_path)))()
    with ctx as d:
        db = os.path.join(d, "rec.db")
        kw = {} if how == "tmpfs" else {"preexec_fn": _limit_file_size(512 * 1024)}
        rec = _start_with(["record", "--upstream", upstream.url, "--db", db], **kw)
        try:
            for i in range(3):
                assert curl(f"{rec.url}/echo?early={i}").status == 200
            wait_until(lambda: len(query_db(db, "SELECT id FROM exchanges")) == 3, 10,
                       what="3 early exchanges stored")
            early = [tuple(r) for r in query_db(
                db, "SELECT id, query, response_body FROM exchanges ORDER BY id")]
            big = tmp_path / "big.txt"
            big.write_bytes(b"x" * (96 * 1024))
            answered = 0
            for i in range(20):
                r = curl(f"{rec.url}/echo?big={i}", "-X", "POST", "-H",
                         "Content-Type: text/plain", "--data-binary", f"@{big}", timeout=30)
                assert r.status == 200 and r.json()["body_len"] == 96 * 1024, r
                answered += 1
                if "not stored" in rec.stderr_text():
                    break
            assert curl(rec.url + "/json").status == 200, "not answering after the disk filled"
            stopped = rec.stop()
        finally:
            rec.kill()
        err = stopped.stderr.lower()
        print(f"disk full ({how}): {answered} large requests answered; log: "
              f"{[ln for ln in stopped.stderr.splitlines() if 'database' in ln][:2]}")
        assert re.search(r"full|no space|too large|i/o error", err), stopped.stderr
        assert stopped.rc == 1 and "could not be stored" in err, stopped
        # Check a copy: the full filesystem is left alone.
        copy = tmp_path / "copy"
        copy.mkdir()
        for suffix in ("", "-wal"):
            if os.path.exists(db + suffix):
                shutil.copy(db + suffix, copy / ("rec.db" + suffix))
        rows = intact_rows(copy / "rec.db", "SELECT id, query, response_body FROM exchanges ORDER BY id")
        assert rows[:3] == early, "rows stored before the disk filled were damaged"


class _Proc(ApisimProcess):
    """ApisimProcess with extra Popen keywords (preexec_fn)."""

    def __init__(self, args, popen_kw):
        real_popen = subprocess.Popen

        def popen(*a, **k):
            return real_popen(*a, **{**k, **popen_kw})

        subprocess.Popen = popen
        try:
            super().__init__(args)
        finally:
            subprocess.Popen = real_popen


def _start_with(args, **popen_kw):
    return _Proc(args, popen_kw) if popen_kw else ApisimProcess(args)
