"""A real HTTP upstream for apisim's end-to-end tests (Python stdlib only).

Two ways to use it:

* In a test process (a thread):

      from upstream import Upstream
      with Upstream() as up:           # listens on 127.0.0.1, port 0
          ... up.url ...               # "http://127.0.0.1:PORT"
          up.received                  # what it was sent, a list of Received
      # leaving the block stops it: the port refuses and open connections are cut

* As a program (another process):

      python3 tests/e2e/upstream.py [--listen 127.0.0.1:0]

  prints ``listening on http://127.0.0.1:PORT`` as its first line, flushed, and serves until
  SIGINT/SIGTERM (exit 0). ``GET /_upstream/received`` returns the requests received so far
  as JSON (itself excluded).

Endpoints (any method unless said otherwise):

  GET  /json                  a fixed JSON document (JSON_BODY)
       /echo[?query]          JSON: method, path, query, headers (lower-case names, repeated
                              ones joined with ", "), body (text) or body_base64, body_len
       /counter               {"n": N}, N = 1, 2, 3, ... per call (one counter per server)
       /chunked?gap_ms=M      Transfer-Encoding: chunked, CHUNKED_PARTS with M ms between (30)
       /sse?events=N&gap_ms=M[&framing=close]
                              text/event-stream: N events ``data: {"i": I}\\n\\n``, the first at
                              once and each next one M ms later; chunked, or with framing=close
                              no length and the connection closed at the end. The time each
                              event was sent is kept in Upstream.sse_sent (monotonic seconds).
       /gzip, /deflate        ENCODED_TEXT with Content-Encoding gzip / deflate (zlib format),
                              whatever the request's Accept-Encoding says
       /binary?n=N            N bytes 0, 1, ..., 255, 0, ... as application/octet-stream (256)
       /status/N              status N with body {"status": N}
       /slow?ms=M             waits M ms, then {"slept_ms": M}
       /set-cookie            Set-Cookie: sid=SET_COOKIE_SECRET; Path=/; HttpOnly, {"ok": true}
       /hangup                closes the connection without answering (an upstream reset)
       anything else          404 {"error": "no such endpoint", "path": ...}
"""

import argparse
import base64
import gzip
import json
import signal
import socket
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

JSON_BODY = b'{"hello": "world", "numbers": [1, 2, 3], "nested": {"ok": true}}'
ENCODED_TEXT = (
    b'{"message": "this body travelled compressed", "items": ['
    + b", ".join(b'{"i": %d, "word": "repetitive"}' % i for i in range(40))
    + b"]}"
)
CHUNKED_PARTS = [b"alpha\n", b"bravo\n", b"charlie\n", b"delta\n"]
SET_COOKIE_SECRET = "setcookie-secret-GHI789"


def binary_body(n):
    """The body /binary?n=N answers: N bytes counting 0..255 and again."""
    return bytes(i % 256 for i in range(n))


def sse_body(events):
    """The body /sse?events=N answers, all events concatenated."""
    return b"".join(b'data: {"i": %d}\n\n' % i for i in range(events))


@dataclass
class Received:
    """One request as the upstream read it."""

    method: str
    path: str  # without the query
    query: str  # raw, without '?'
    headers: list  # [(lower-case name, value)] in arrival order
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def header(self, name):
        """The first value of header `name` (any case), or None."""
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def to_json(self):
        d = {"method": self.method, "path": self.path, "query": self.query,
             "headers": [[k, v] for k, v in self.headers], "body_len": len(self.body)}
        try:
            d["body"] = self.body.decode("utf-8")
        except UnicodeDecodeError:
            d["body_base64"] = base64.b64encode(self.body).decode("ascii")
        return d


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked responses
    timeout = 30  # idle keep-alive connections end eventually

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass  # quiet: tests read Upstream.received instead

    def setup(self):
        super().setup()
        self.server.track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    # Every method goes through one dispatcher.
    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status, body, ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status, obj, extra=()):
        self._send(status, json.dumps(obj).encode(), "application/json", extra)

    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _dispatch(self):
        url = urlsplit(self.path)
        path, query = url.path, url.query
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        body = self._read_body()
        if path == "/_upstream/received":
            self._json(200, [r.to_json() for r in self.server.owner.received])
            return
        self.server.owner._add(Received(
            self.command, path, query,
            [(k.lower(), v) for k, v in self.headers.items()], body))

        if path == "/json":
            self._send(200, JSON_BODY)
        elif path == "/echo":
            hdrs = {}
            for k, v in self.headers.items():
                k = k.lower()
                hdrs[k] = hdrs[k] + ", " + v if k in hdrs else v
            d = {"method": self.command, "path": path, "query": query, "headers": hdrs,
                 "body_len": len(body)}
            try:
                d["body"] = body.decode("utf-8")
            except UnicodeDecodeError:
                d["body_base64"] = base64.b64encode(body).decode("ascii")
            self._json(200, d)
        elif path == "/counter":
            self._json(200, {"n": self.server.owner._next_count()})
        elif path == "/chunked":
            gap = int(params.get("gap_ms", "30")) / 1000
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i, part in enumerate(CHUNKED_PARTS):
                if i:
                    time.sleep(gap)
                self._chunk(part)
            self._chunk(b"")
        elif path == "/sse":
            self._sse(int(params.get("events", "3")), int(params.get("gap_ms", "50")),
                      params.get("framing", "chunked"))
        elif path == "/gzip":
            self._send(200, gzip.compress(ENCODED_TEXT), "application/json",
                       [("Content-Encoding", "gzip")])
        elif path == "/deflate":
            self._send(200, zlib.compress(ENCODED_TEXT), "application/json",
                       [("Content-Encoding", "deflate")])
        elif path == "/binary":
            self._send(200, binary_body(int(params.get("n", "256"))),
                       "application/octet-stream")
        elif path.startswith("/status/") and path[8:].isdigit():
            status = int(path[8:])
            self._json(status, {"status": status})
        elif path == "/slow":
            ms = int(params.get("ms", "200"))
            time.sleep(ms / 1000)
            self._json(200, {"slept_ms": ms})
        elif path == "/set-cookie":
            self._json(200, {"ok": True},
                       [("Set-Cookie", f"sid={SET_COOKIE_SECRET}; Path=/; HttpOnly")])
        elif path == "/hangup":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self._json(404, {"error": "no such endpoint", "path": path})

    def _sse(self, events, gap_ms, framing):
        chunked = framing != "close"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.flush()
        for i in range(events):
            if i:
                time.sleep(gap_ms / 1000)
            data = b'data: {"i": %d}\n\n' % i
            if chunked:
                self._chunk(data)
            else:
                self.wfile.write(data)
                self.wfile.flush()
            self.server.owner._sse_event(i)
        if chunked:
            self._chunk(b"")


def shut_down_all(conns):
    """Shut each connected socket down both ways (a FIN to its peer; one already gone is
    skipped): how a server cuts its open connections."""
    for c in conns:
        try:
            c.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # 32+ clients connecting at once must not hit the backlog

    def __init__(self, addr, owner):
        self.owner = owner
        self._conns = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def track(self, conn, alive):
        with self._conns_lock:
            (self._conns.add if alive else self._conns.discard)(conn)

    def cut_connections(self):
        with self._conns_lock:
            conns = list(self._conns)
        shut_down_all(conns)


class Upstream:
    """The upstream server, run in a background thread of this process.

    `url` is "http://127.0.0.1:PORT"; `received` a copy of the list of Received, oldest first;
    `sse_sent` a list of (event index, monotonic time sent). `stop()` is idempotent: it closes
    the listening socket (the port then refuses) and cuts open keep-alive connections.
    """

    def __init__(self, host="127.0.0.1", port=0):
        self._lock = threading.Lock()
        self._received = []
        self._count = 0
        self.sse_sent = []
        self._server = _Server((host, port), self)
        self.host, self.port = self._server.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = None
        self._stopped = False

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"upstream:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()
        self._server.cut_connections()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def received(self):
        with self._lock:
            return list(self._received)

    def received_for(self, path):
        """The requests received for `path` (no query), oldest first."""
        return [r for r in self.received if r.path == path]

    def _add(self, rec):
        with self._lock:
            self._received.append(rec)

    def _next_count(self):
        with self._lock:
            self._count += 1
            return self._count

    def _sse_event(self, i):
        with self._lock:
            self.sse_sent.append((i, time.monotonic()))


def main(argv=None):
    ap = argparse.ArgumentParser(description="Test upstream for apisim.")
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free)")
    args = ap.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    up = Upstream(host or "127.0.0.1", int(port))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    up.start()
    print(f"listening on {up.url}", flush=True)
    while not stop.wait(0.2):
        pass
    up.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
