"""The record engine (DESIGN.md, "Record engine (contract)"): live pass-through, kept-alive
upstream connections shared by every client connection, HTTP/2 to TLS upstreams offering
it, br and zstd decoded for storage, declared oversize bodies refused before anything is
read or forwarded, and no added delay against an upstream with Nagle on.

Each test runs the real binary in record mode in front of a real upstream on 127.0.0.1:0
(a small keep-alive HTTP/1.1 server written here, so it can count connections and time its
own writes; nghttpd for HTTP/2) and reads the recording with sqlite3.
"""

import http.client
import json
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import threading
import time

import pytest

from harness import ApisimProcess, curl, query_db, wait_until
from upstream import shut_down_all

try:
    import brotli
except ImportError:  # python3-brotli (scripts/install-deps.sh)
    brotli = None
try:
    import zstandard
except ImportError:  # python3-zstandard
    zstandard = None


class Request:
    def __init__(self, method, path, headers, body):
        self.method, self.path, self.headers, self.body = method, path, headers, body


class KeepAliveUpstream:
    """An HTTP/1.1 server on 127.0.0.1:0 that keeps connections alive and calls
    `handler(sock, request)` for each request, which writes the whole response. Counts the
    connections it accepted. Nagle stays on (as in the case that once made reuse look bad)
    unless nodelay=True."""

    def __init__(self, handler, nodelay=False):
        self.handler = handler
        self.nodelay = nodelay
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.requests = 0
        self.ended = 0  # connections whose serving thread is over
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns, self._threads = [], []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if self.nodelay:
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._stop.is_set():
                    c.close()
                    return
                self.connections += 1
                self._conns.append(c)
                t = threading.Thread(target=self._serve, args=(c,), daemon=True)
                self._threads.append(t)
            t.start()

    def _serve(self, c):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length", "0"))
                while len(buf) < n:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                body, buf = buf[:n], buf[n:]
                with self._lock:
                    self.requests += 1
                self.handler(c, Request(method, path, headers, body))
        except OSError:
            return
        finally:
            with self._lock:
                self.ended += 1

    def close_idle(self):
        """Close every connection now, as an upstream's idle timeout does: a FIN on each
        (the serving threads then see the end of their connection and stop)."""
        with self._lock:
            conns = list(self._conns)
        shut_down_all(conns)

    def close(self):
        self._stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._acceptor.join(10)
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(10)
        for c in conns:
            c.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def send_response(c, status, body, headers=(), split=False):
    """Write a Content-Length response; split=True writes the head and the body separately
    (two small segments: what Nagle holds back until the first is acknowledged)."""
    head = f"HTTP/1.1 {status} OK\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    if split:
        c.sendall(head.encode())
        c.sendall(body)
    else:
        c.sendall(head.encode() + body)


JSON = b'{"ok": true, "text": "hello from the upstream"}'


def json_handler(c, req):
    send_response(c, 200, JSON, [("Content-Type", "application/json")])


def rows(db, sql, *params):
    return [tuple(r) for r in query_db(db, sql, *params)]


# --- live pass-through -----------------------------------------------------------------------


def test_sse_event_reaches_the_client_while_the_upstream_pauses(tmp_path):
    """An SSE event followed by a 1 s pause reaches the client at once, not when the next
    event comes: measured against the upstream's own time of writing it."""
    written = {}

    def sse(c, req):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for i in range(3):
            ev = f"event: tick\ndata: {{\"n\": {i}}}\n\n".encode()
            c.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
            written.setdefault(req.path, []).append(time.monotonic())
            if i == 0:
                time.sleep(1.0)  # the upstream's pause (a model thinking), not a wait on apisim
        c.sendall(b"0\r\n\r\n")

    def first_event_delay(base, path):
        """Seconds from the upstream's write of the first event to its arrival here."""
        conn = http.client.HTTPConnection("127.0.0.1", base, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200
            got = b""
            while b"\n\n" not in got:
                chunk = resp.read1(65536)
                assert chunk, f"stream ended before the first event: {got!r}"
                got += chunk
            arrived = time.monotonic()
            rest = resp.read()
            return arrived - written[path][0], got + rest
        finally:
            conn.close()

    db = tmp_path / "rec.db"
    with KeepAliveUpstream(sse, nodelay=True) as up:
        direct, _ = first_event_delay(up.port, "/direct")
        with ApisimProcess(["record", "--upstream", up.url, "--db", db]) as rec:
            # The faster of two streams: a load spike on a shared 2-core machine may delay
            # one of them.
            tries = [first_event_delay(rec.port, p) for p in ("/through", "/again")]
            assert rec.stop().rc == 0
    through = min(t for t, _ in tries)
    for _, body in tries:
        assert body.count(b"event: tick") == 3, body
    # Held until the next event (the old engine) would be >= 1 s; the issue asks for less
    # than 60 ms more than the direct arrival.
    assert through - direct < 0.06, (
        f"first event: {direct * 1000:.1f} ms direct, "
        f"{', '.join(f'{t * 1000:.1f}' for t, _ in tries)} ms through record "
        "(the upstream paused 1 s after it)")
    (complete, n_chunks), = rows(
        db, "SELECT complete, (SELECT count(*) FROM chunks WHERE exchange_id = e.id) "
            "FROM exchanges e WHERE path = '/through'")
    assert complete == 1 and n_chunks >= 2, (complete, n_chunks)


# --- the writer ------------------------------------------------------------------------------


def test_session_row_deleted_by_another_connection_is_made_again(tmp_path):
    """The writer skips the session upsert while it knows the row is there; another
    connection deleting the row (here sqlite3, between two exchanges) makes it check again,
    so every exchange's session row exists."""
    db = tmp_path / "rec.db"
    with KeepAliveUpstream(json_handler) as up:
        with ApisimProcess(["record", "--upstream", up.url, "--db", db,
                            "--session", "s1"]) as rec:
            for i in range(3):
                assert curl(f"{rec.url}/one/{i}").body == JSON
            assert rows(db, "SELECT name FROM sessions") == [("s1",)]
            con = sqlite3.connect(str(db), timeout=5)
            try:
                with con:
                    con.execute("DELETE FROM sessions WHERE name = 's1'")
            finally:
                con.close()
            assert rows(db, "SELECT count(*) FROM sessions") == [(0,)]
            for i in range(3):
                assert curl(f"{rec.url}/two/{i}").body == JSON
            assert rec.stop().rc == 0
    assert rows(db, "SELECT name FROM sessions") == [("s1",)]
    assert rows(db, "SELECT count(*) FROM exchanges WHERE session NOT IN "
                    "(SELECT name FROM sessions)") == [(0,)]
    assert rows(db, "SELECT count(*) FROM exchanges") == [(6,)]


# --- kept-alive upstream connections ---------------------------------------------------------


def test_upstream_connections_are_reused_across_client_connections(tmp_path):
    """250 requests over 8 kept-alive client connections and 50 fresh ones, 8 clients at a
    time: the upstream sees at most the connections 8 concurrent requests need in each of
    apisim's event loops (2 x 8 on 2 cores), not one per request or per client connection."""
    db = tmp_path / "rec.db"
    errors = []
    with KeepAliveUpstream(json_handler) as up:
        with ApisimProcess(["record", "--upstream", up.url, "--db", db]) as rec:
            def get(conn, path, headers=None):
                conn.request("GET", path, headers=headers or {})
                r = conn.getresponse()
                if r.read() != JSON or r.status != 200:
                    errors.append((path, r.status))

            def client(k):
                """25 requests on one kept-alive connection, with this client's share of
                the 50 fresh connections (one request each) in between."""
                fresh = list(range(k, 50, 8))
                every = 25 // len(fresh)
                ka = http.client.HTTPConnection("127.0.0.1", rec.port, timeout=10)
                try:
                    for i in range(25):
                        get(ka, f"/ka/{k}/{i}")
                        if fresh and i % every == every - 1:
                            c = http.client.HTTPConnection("127.0.0.1", rec.port, timeout=10)
                            try:
                                get(c, f"/fresh/{fresh.pop()}", {"Connection": "close"})
                            finally:
                                c.close()
                finally:
                    ka.close()

            threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert rec.stop().rc == 0
        connections, requests = up.connections, up.requests
    assert not errors, errors[:5]
    assert requests == 250, requests
    assert connections <= 16, f"{connections} upstream connections for 250 requests"
    assert rows(db, "SELECT count(*) FROM exchanges") == [(250,)]


def test_nagle_upstream_on_a_reused_connection_adds_no_delay(tmp_path):
    """The case that once made reuse look bad: an upstream with Nagle on writes a response's
    head and its body in two writes. On a reused connection its second write waits for the
    ACK of the first; apisim acknowledges at once (TCP_QUICKACK), so no 40 ms stall."""
    db = tmp_path / "rec.db"

    def split(c, req):
        send_response(c, 200, JSON, [("Content-Type", "application/json")], split=True)

    with KeepAliveUpstream(split) as up:
        with ApisimProcess(["record", "--upstream", up.url, "--db", db]) as rec:
            conn = http.client.HTTPConnection("127.0.0.1", rec.port, timeout=10)
            times = []
            for i in range(60):
                t0 = time.monotonic()
                conn.request("GET", f"/nagle/{i}")
                r = conn.getresponse()
                assert r.read() == JSON
                times.append(time.monotonic() - t0)
            conn.close()
            assert rec.stop().rc == 0
        assert up.connections == 1, f"{up.connections} upstream connections: not reused"
    reused = times[1:]
    # A delayed ACK costs 40 ms or more a request, each time it happens. A loaded machine
    # may stall a request that long now and then; the stall that reuse meets came in one
    # request out of three even with the ACK re-armed only after reads.
    stalled = [t for t in reused if t >= 0.035]
    assert statistics.median(reused) < 0.02 and len(stalled) <= len(reused) // 10, (
        f"median {statistics.median(reused) * 1000:.1f} ms, {len(stalled)} of {len(reused)} "
        f"requests took 35 ms or more on a reused connection: "
        f"{[round(t * 1000, 1) for t in reused]}")


def cpu_seconds(pid):
    """User + system CPU time a process has used so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_upstream_closing_idle_connections_is_handled(tmp_path):
    """An idle kept-alive upstream connection stays registered with the event loop between
    transfers. When the upstream closes such connections (its idle timeout, or a close
    after every response), the loop must neither spin on the readable dead socket nor lose
    track of a new socket that gets the closed one's number: every later request is
    answered (a socket the loop stopped watching would hang until --upstream-timeout: 502)
    and the idle process uses next to no CPU."""
    db = tmp_path / "rec.db"
    errors = []

    def close_after(c, req):
        if req.path.startswith("/close/"):  # curl closes these itself, at the answer's end
            send_response(c, 200, JSON, [("Content-Type", "application/json"),
                                         ("Connection", "close")])
            c.shutdown(socket.SHUT_WR)
            return
        json_handler(c, req)
        if req.path.startswith("/once/"):
            c.shutdown(socket.SHUT_WR)  # a FIN right after the answer, no Connection: close

    with KeepAliveUpstream(close_after) as up:
        with ApisimProcess(["record", "--upstream", up.url, "--db", db,
                            "--upstream-timeout", "3s"]) as rec:
            def get(conn, path):
                conn.request("GET", path)
                r = conn.getresponse()
                body = r.read()
                if r.status != 200 or body != JSON:
                    errors.append((path, r.status, body[:200]))

            def client(k, prefix, n):
                conn = http.client.HTTPConnection("127.0.0.1", rec.port, timeout=10)
                try:
                    for i in range(n):
                        get(conn, f"/{prefix}/{k}/{i}")
                finally:
                    conn.close()

            def clients(prefix, n):
                threads = [threading.Thread(target=client, args=(k, prefix, n)) for k in range(4)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)

            clients("ka", 10)  # kept-alive upstream connections, now idle
            before = up.connections
            up.close_idle()
            wait_until(lambda: up.ended == up.connections, 10, what="the upstream's closes")
            cpu0 = cpu_seconds(rec.proc.pid)
            time.sleep(1.0)  # a window to measure in, not a wait for anything
            idle_cpu = cpu_seconds(rec.proc.pid) - cpu0
            clients("ka2", 10)  # on new connections (sockets that may reuse the numbers)
            clients("once", 10)  # each upstream connection closed after its answer
            clients("close", 10)  # ... and said so (Connection: close)
            assert rec.stop().rc == 0
        connections = up.connections
    assert not errors, errors[:5]
    assert idle_cpu < 0.3, f"{idle_cpu:.2f} s of CPU in 1 s idle: a loop spins on a dead socket"
    assert connections > before, "the closed upstream connections were not replaced"
    assert rows(db, "SELECT count(*) FROM exchanges") == [(160,)]


# --- encodings -------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["br", "zstd"])
def test_br_and_zstd_are_stored_decoded(tmp_path, encoding):
    if encoding == "br" and brotli is None:
        pytest.skip("python3-brotli is not installed (scripts/install-deps.sh)")
    if encoding == "zstd" and zstandard is None:
        pytest.skip("python3-zstandard is not installed (scripts/install-deps.sh)")
    doc = {"message": "decoded for sqlite3", "items": list(range(200))}
    plain = json.dumps(doc).encode()
    packed = (brotli.compress(plain) if encoding == "br"
              else zstandard.ZstdCompressor().compress(plain))

    def handler(c, req):
        send_response(c, 200, packed, [("Content-Type", "application/json"),
                                       ("Content-Encoding", encoding)])

    db = tmp_path / "rec.db"
    with KeepAliveUpstream(handler) as up:
        with ApisimProcess(["record", "--upstream", up.url, "--db", db]) as rec:
            res = curl(rec.url + "/packed", "-H", f"Accept-Encoding: {encoding}")
            assert rec.stop().rc == 0
    assert res.status == 200 and res.body == packed, "the client must get the upstream's bytes"
    assert res.header("content-encoding") == encoding
    (enc, body, headers), = rows(
        db, "SELECT response_encoding, CAST(response_body AS TEXT), response_headers "
            "FROM exchanges")
    assert enc == encoding
    assert json.loads(body) == doc, body[:200]
    assert "content-encoding" not in headers.lower(), headers


# --- declared oversize bodies ----------------------------------------------------------------


@pytest.mark.parametrize("expect", [False, True])
def test_declared_oversize_body_gets_413_at_once(tmp_path, expect):
    """10 GiB declared: 413 within a second, nothing read, the upstream never contacted;
    with Expect: 100-continue, 413 instead of 100 Continue."""
    with KeepAliveUpstream(json_handler) as up:
        with ApisimProcess(["record", "--upstream", up.url, "--db", tmp_path / "rec.db"]) as rec:
            head = (b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 10737418240\r\n")
            if expect:
                head += b"Expect: 100-continue\r\n"
            with socket.create_connection(("127.0.0.1", rec.port), timeout=5) as s:
                t0 = time.monotonic()
                s.sendall(head + b"\r\n")
                if not expect:
                    s.sendall(b"{" * 65536)  # a client that starts sending at once
                got = b""
                while b"\r\n\r\n" not in got:
                    data = s.recv(65536)
                    if not data:
                        break
                    got += data
                elapsed = time.monotonic() - t0
            status_line = got.split(b"\r\n", 1)[0]
            assert status_line.startswith(b"HTTP/1.1 413"), got[:300]
            assert elapsed < 1.0, f"413 after {elapsed:.2f} s"
            assert up.connections == 0, "the upstream was contacted for a refused request"
            # The server still serves, and that request reached the upstream, not the 413.
            assert curl(rec.url + "/after").status == 200
            assert rec.stop().rc == 0
        assert up.requests == 1, f"the upstream saw {up.requests} requests (only /after)"


# --- HTTP/2 ----------------------------------------------------------------------------------


def listening_port(pid, deadline=10.0):
    """The TCP port process pid listens on (it was started on port 0)."""
    def find():
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                m = re.match(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                continue
            if m:
                inodes.add(m.group(1))
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and parts[9] in inodes:  # LISTEN
                    return int(parts[1].split(":")[1], 16)
        return None
    port = None

    def ready():
        nonlocal port
        port = find()
        return port is not None
    wait_until(ready, timeout=deadline, what=f"process {pid} listening")
    return port


@pytest.mark.skipif(shutil.which("nghttpd") is None,
                    reason="nghttpd is not installed (nghttp2-server, scripts/install-deps.sh)")
def test_https_upstream_offering_h2_is_recorded_over_http2(tmp_path):
    key, cert, docs = tmp_path / "key.pem", tmp_path / "cert.pem", tmp_path / "docs"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    docs.mkdir()
    body = b'{"over": "h2"}'
    (docs / "h2.json").write_bytes(body)
    log = tmp_path / "nghttpd.log"
    with open(log, "wb") as logf:
        # nghttpd speaks only HTTP/2 (ALPN h2): a request it answers came over HTTP/2.
        srv = subprocess.Popen(["nghttpd", "-v", "-a", "127.0.0.1", "-d", docs, "0", key, cert],
                               stdout=logf, stderr=subprocess.STDOUT)
    try:
        port = listening_port(srv.pid)
        db = tmp_path / "rec.db"
        with ApisimProcess(["record", "--upstream", f"https://127.0.0.1:{port}", "--db", db,
                            "--insecure"]) as rec:
            for _ in range(3):
                res = curl(rec.url + "/h2.json")
                assert res.status == 200 and res.body == body, res
            assert rec.stop().rc == 0
    finally:
        srv.terminate()
        srv.wait(10)
    text = log.read_text(errors="replace")
    assert text.count(":path: /h2.json") == 3, text[-2000:]
    # One TLS connection carried all three (kept alive): one SETTINGS exchange from apisim.
    assert text.count("recv SETTINGS frame <length=") >= 1
    assert rows(db, "SELECT count(*), min(status), max(CAST(response_body AS TEXT)) "
                    "FROM exchanges") == [(3, 200, body.decode())]
