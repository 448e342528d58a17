"""Helpers for apisim's end-to-end tests: the real binary, the curl CLI, raw sockets, SQLite.

Nothing here sleeps to synchronise: servers are waited for through their listening line,
anything else through wait_until() with a deadline.

    apisim_bin()                      path of the binary under test (env APISIM_BIN)
    ApisimProcess(["record", ...])    a running server on 127.0.0.1:0; .url, .stop()
    run_apisim("ls", "--db", f)       a one-shot command -> subprocess.CompletedProcess
    curl(url, *args)                  the curl CLI -> CurlResult(status, headers, body)
    raw_http(url, data)               raw bytes over a socket -> RawResponse or None
    upstream_server()                 context manager: an upstream.Upstream in a thread
    closed_port_url()                 an http URL nobody listens on
    wait_until(pred, timeout)         poll with a deadline
    query_db(path, sql, *params)      rows from a SQLite file
"""

import http.client
import json
import os
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import namedtuple
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upstream import Upstream  # noqa: E402

START_TIMEOUT = float(os.environ.get("APISIM_TEST_START_TIMEOUT", "15"))
STOP_TIMEOUT = float(os.environ.get("APISIM_TEST_STOP_TIMEOUT", "15"))
LISTEN_RE = re.compile(r"^listening on (http://(\S+):(\d+))$")

# Child processes must never go through a proxy from the environment.
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
               "ALL_PROXY", "no_proxy", "NO_PROXY")


def child_env(extra=None):
    """os.environ without proxy variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    env.update(extra or {})
    return env


def apisim_bin():
    """The apisim binary under test: $APISIM_BIN (ctest sets it). Fails clearly without it."""
    path = os.environ.get("APISIM_BIN")
    if not path:
        raise RuntimeError("APISIM_BIN is not set: point it at the built binary, "
                           "e.g. APISIM_BIN=build/apisim")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"APISIM_BIN={path} is not an executable file (build it first)")
    return path


def wait_until(pred, timeout=5.0, interval=0.01, what="condition"):
    """Call pred() until it returns something truthy, and return that; AssertionError naming
    `what` when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


StopResult = namedtuple("StopResult", "rc stderr")


class ApisimProcess:
    """A running apisim server: `apisim <args> --listen 127.0.0.1:0`.

    The constructor returns once the first stdout line `listening on http://HOST:PORT` has
    been read, or raises AssertionError with the stderr collected so far when the process
    exits first or `start_timeout` passes. `listen=None` adds no --listen (to test the
    default). stdout and stderr are drained continuously by threads, so the child never
    blocks on a full pipe.

    Attributes: url ("http://HOST:PORT"), host, port, proc (the Popen), args.
    stop(sig) sends `sig` (SIGTERM by default), waits, and returns StopResult(rc, stderr);
    rc is negative when a signal killed it (subprocess's convention). Usable as a context
    manager: leaving the block kills a process that is still running.
    """

    def __init__(self, args, listen="127.0.0.1:0", env=None, start_timeout=START_TIMEOUT,
                 cwd=None):
        self.args = [apisim_bin(), *map(str, args)]
        if listen is not None:
            self.args += ["--listen", listen]
        self._stderr = bytearray()
        self._stderr_lock = threading.Lock()
        self._stdout_lines = queue.Queue()
        self.stdout_lines = []  # every stdout line after the first, as read
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=child_env(env), cwd=cwd)
        self._threads = [
            threading.Thread(target=self._drain_stdout, daemon=True),
            threading.Thread(target=self._drain_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()
        try:
            self._await_listening(start_timeout)
        except BaseException:
            self.kill()
            raise

    def _drain_stdout(self):
        for line in iter(self.proc.stdout.readline, b""):
            self._stdout_lines.put(line.decode("utf-8", "replace").rstrip("\r\n"))
        self._stdout_lines.put(None)

    def _drain_stderr(self):
        for chunk in iter(lambda: self.proc.stderr.read1(65536), b""):
            with self._stderr_lock:
                self._stderr += chunk

    def _await_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{' '.join(self.args)}: no 'listening on' line within {timeout} s; "
                    f"stderr so far:\n{self.stderr_text()}")
            try:
                line = self._stdout_lines.get(timeout=min(left, 0.1))
            except queue.Empty:
                continue
            if line is None:  # stdout closed: the process is exiting
                try:
                    rc = self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    rc = "still running"
                self._join_readers()
                raise AssertionError(
                    f"{' '.join(self.args)}: exited (status {rc}) before printing "
                    f"'listening on'; stderr:\n{self.stderr_text()}")
            m = LISTEN_RE.match(line)
            if not m:
                raise AssertionError(
                    f"{' '.join(self.args)}: first stdout line is {line!r}, expected "
                    f"'listening on http://HOST:PORT'; stderr:\n{self.stderr_text()}")
            self.url, self.host, self.port = m.group(1), m.group(2), int(m.group(3))
            threading.Thread(target=self._collect_rest, daemon=True).start()
            return

    def _collect_rest(self):
        while True:
            line = self._stdout_lines.get()
            if line is None:
                return
            self.stdout_lines.append(line)

    def _join_readers(self):
        for t in self._threads:
            t.join(5)

    def stderr_text(self):
        """stderr collected so far, decoded."""
        with self._stderr_lock:
            return self._stderr.decode("utf-8", "replace")

    @property
    def running(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Send `sig`, wait up to `timeout` s, return StopResult(rc, stderr). A process still
        alive after `timeout` is killed and AssertionError raised (a graceful stop hung)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"{' '.join(self.args)}: still running {timeout} s after "
                    f"{signal.Signals(sig).name}; stderr:\n{self.stderr_text()}")
        self._join_readers()
        return StopResult(self.proc.returncode, self.stderr_text())

    def kill(self):
        """SIGKILL if still running, and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._join_readers()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def rss_kib(pid):
    """The resident set size of process pid, in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def timed_get(base_url, path, timeout=15):
    """GET on a fresh connection: (status, body, seconds from sending to the whole body)."""
    u = urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        t0 = time.monotonic()
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, body, time.monotonic() - t0
    finally:
        conn.close()


def run_apisim(*args, timeout=30, env=None, input=None, cwd=None):
    """Run a one-shot apisim command; returns CompletedProcess with text stdout/stderr."""
    return subprocess.run([apisim_bin(), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=child_env(env), input=input,
                          stdin=None if input is not None else subprocess.DEVNULL, cwd=cwd)


class CurlResult:
    """What the curl CLI got: status (int, 0 when no response), headers [(name, value)] of the
    final response (names as sent), body (bytes), exit_code, stderr (text)."""

    def __init__(self, status, headers, body, exit_code, stderr):
        self.status, self.headers, self.body = status, headers, body
        self.exit_code, self.stderr = exit_code, stderr

    def header(self, name, default=None):
        """First value of header `name` (any case), or default."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def content_type(self):
        return self.header("content-type")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return (f"CurlResult(status={self.status}, headers={self.headers}, "
                f"body={self.body[:300]!r}{'...' if len(self.body) > 300 else ''}, "
                f"exit_code={self.exit_code}, stderr={self.stderr!r})")


def _parse_header_file(raw):
    """The header lines of the last response block in a curl -D file."""
    blocks, cur = [], None
    for line in raw.decode("iso-8859-1").split("\r\n"):
        if line.startswith("HTTP/"):
            cur = []
            blocks.append(cur)
        elif line and cur is not None and ":" in line:
            k, _, v = line.partition(":")
            cur.append((k.strip(), v.strip()))
    return blocks[-1] if blocks else []


def curl(url, *args, timeout=30, check=True):
    """Run `curl -sS -o BODY -D HEADERS -w '%{http_code}' [args] URL` and return a CurlResult.

    `args` go to curl as they are (e.g. "-X", "POST", "--data-binary", "@file", "-H", "A: b").
    Proxies from the environment are ignored. With check=True (the default) a curl failure
    (no HTTP response at all, exit code != 0) raises AssertionError with curl's stderr.
    """
    with tempfile.TemporaryDirectory(prefix="apisim-curl-") as d:
        body_f, hdr_f = os.path.join(d, "body"), os.path.join(d, "headers")
        cmd = ["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout), "-o", body_f,
               "-D", hdr_f, "-w", "%{http_code}", *map(str, args), url]
        p = subprocess.run(cmd, capture_output=True, timeout=timeout + 10, env=child_env())
        body = Path(body_f).read_bytes() if os.path.exists(body_f) else b""
        headers = _parse_header_file(Path(hdr_f).read_bytes()) if os.path.exists(hdr_f) else []
    out = p.stdout.decode().strip()
    res = CurlResult(int(out) if out.isdigit() else 0, headers, body, p.returncode,
                     p.stderr.decode("utf-8", "replace"))
    if check and p.returncode != 0:
        raise AssertionError(f"curl {' '.join(map(str, args))} {url} failed: {res!r}")
    return res


RawResponse = namedtuple("RawResponse", "status reason headers body raw")


def raw_http(url, data, timeout=5.0, send_then_shutdown=False):
    """Send raw bytes to the server of `url` and read one HTTP response.

    Returns RawResponse(status, reason, headers [(name, value)], body, raw bytes), or None
    when the server closed or reset the connection without answering (or answered nothing
    within `timeout`). Errors while sending (the server may answer early and close) are
    ignored: whatever answer came back is still read.
    """
    u = urlsplit(url)
    raw = bytearray()
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if send_then_shutdown:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        head_end, need = -1, None
        while time.monotonic() < deadline:
            try:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                b = s.recv(65536)
            except (socket.timeout, OSError):
                break
            if not b:
                break
            raw += b
            if head_end < 0:
                head_end = raw.find(b"\r\n\r\n")
                if head_end >= 0:
                    m = re.search(rb"\r\ncontent-length:\s*(\d+)", raw[:head_end], re.I)
                    need = head_end + 4 + int(m.group(1)) if m else None
            if need is not None and len(raw) >= need:
                break
    if not raw.startswith(b"HTTP/"):
        return None
    head, _, body = bytes(raw).partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    headers = [(k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:])]
    return RawResponse(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, body,
                       bytes(raw))


@contextmanager
def upstream_server(host="127.0.0.1", port=0):
    """An upstream.Upstream serving in a thread for the duration of the block."""
    up = Upstream(host, port).start()
    try:
        yield up
    finally:
        up.stop()


def closed_port_url():
    """http://127.0.0.1:PORT where PORT was free a moment ago and nothing listens on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def query_db(path, sql, *params):
    """All rows of `sql` on the SQLite file `path`, as sqlite3.Row. (Opened read-write, as a
    read-only open of a WAL database fails when its -shm file is gone; a SELECT writes
    nothing.)"""
    con = sqlite3.connect(str(path), timeout=5)
    try:
        con.row_factory = sqlite3.Row
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def db_file_bytes(path):
    """The bytes of a database and of its -wal and -journal files, when present."""
    out = b""
    for suffix in ("", "-wal", "-journal"):
        p = Path(str(path) + suffix)
        if p.exists():
            out += p.read_bytes()
    return out


class Req:
    """One request of a record_then_replay() run: curl `args` to `path` (with its query)
    while recording; `replay_path` / `replay_args` (default: the same) while replaying."""

    def __init__(self, path, *args, replay_path=None, replay_args=None):
        self.path, self.args = path, tuple(args)
        self.replay_path = path if replay_path is None else replay_path
        self.replay_args = self.args if replay_args is None else tuple(replay_args)

    def __repr__(self):
        return f"Req({self.path!r}, {' '.join(self.args)!r})"


class RecordReplay:
    """The outcome of record_then_replay(): recorded[i] / replayed[i] are the CurlResults of
    requests[i] through the recorder and through the replayer; db is the database path;
    record_stop / replay_stop the StopResults of the two servers."""

    def __init__(self, requests, db):
        self.requests, self.db = requests, db
        self.recorded, self.replayed = [], []
        self.record_stop = self.replay_stop = None


def record_then_replay(requests, upstream, db, *, session=None, record_args=(),
                       replay_args=(), check_exit=True, stop_upstream=True):
    """Record `requests` (Req, or a path string) through `apisim record` against `upstream`,
    stop the recorder (SIGTERM), stop the upstream (unless stop_upstream=False), then send
    them again through `apisim replay` on the same database, and stop that too.

    With check_exit=True both servers must exit 0 (AssertionError with their stderr if not).
    curl failures raise (see curl()); HTTP statuses of any value are returned as they came.
    """
    reqs = [r if isinstance(r, Req) else Req(r) for r in requests]
    out = RecordReplay(reqs, db)
    sess = ["--session", session] if session else []
    rec = ApisimProcess(["record", "--upstream", upstream.url, "--db", db, *sess,
                         *record_args])
    try:
        for r in reqs:
            out.recorded.append(curl(rec.url + r.path, *r.args))
        out.record_stop = rec.stop()
    finally:
        rec.kill()
    if check_exit:
        assert out.record_stop.rc == 0, (
            f"record exited {out.record_stop.rc} on SIGTERM; stderr:\n{out.record_stop.stderr}")
    if stop_upstream:
        upstream.stop()
    rep = ApisimProcess(["replay", "--db", db, *sess, *replay_args])
    try:
        for r in reqs:
            out.replayed.append(curl(rep.url + r.replay_path, *r.replay_args))
        out.replay_stop = rep.stop()
    finally:
        rep.kill()
    if check_exit:
        assert out.replay_stop.rc == 0, (
            f"replay exited {out.replay_stop.rc} on SIGTERM; stderr:\n{out.replay_stop.stderr}")
    return out
