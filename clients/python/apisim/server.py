"""apisim.Server: an `apisim mock` or `apisim replay` process and its control API."""

import base64
import collections
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from ._binary import child_env, find_binary
from .errors import ApisimError

LISTEN_RE = re.compile(r"^listening on (http://\S+:\d+)$")

# Control requests never go through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ResponseSpec:
    """What a stub answers.

    status:   HTTP status (default 200)
    body:     dict or list -> JSON ("json"), str -> text ("body"), bytes -> raw bytes
              ("body_base64"), None -> empty
    headers:  [(name, value), ...] or a dict; sent in order, repeats allowed
    delay_ms: milliseconds to wait before answering (other connections are not held up)
    fault:    None, or how the answer fails on the wire: "reset" (RST before any byte),
              "empty" (closed with no byte), "reset-mid-body" (head and the first
              `after_bytes` bytes of the body, then RST), "malformed-chunk" (chunked head,
              half the body, a chunk size that is not hex, then closed), "garbage-then-close"
              (bytes that are not HTTP, then closed), "stall" (head, then silence)
    after_bytes: with fault="reset-mid-body", the body bytes sent before the reset
    dribble:  None, or (chunks, over_ms) (or {"chunks": K, "over_ms": D}): the body in K
              pieces, the last one D ms after the first byte
    """

    __slots__ = ("status", "body", "headers", "delay_ms", "fault", "after_bytes", "dribble")

    FAULTS = ("reset", "empty", "reset-mid-body", "malformed-chunk", "garbage-then-close",
              "stall")

    def __init__(self, status=200, body=None, headers=None, delay_ms=0, fault=None,
                 after_bytes=None, dribble=None):
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(f"ResponseSpec.status must be an int, not {type(status).__name__}")
        if body is not None and not isinstance(body, (dict, list, str, bytes, bytearray)):
            raise TypeError("ResponseSpec.body must be a dict or list (JSON), str, bytes or "
                            f"None, not {type(body).__name__}")
        if isinstance(delay_ms, bool) or not isinstance(delay_ms, (int, float)):
            raise TypeError(f"ResponseSpec.delay_ms must be a number, not "
                            f"{type(delay_ms).__name__}")
        if headers is None:
            headers = []
        elif isinstance(headers, dict):
            headers = list(headers.items())
        pairs = []
        for h in headers:
            if len(h) != 2 or not all(isinstance(x, str) for x in h):
                raise TypeError(f"ResponseSpec.headers: {h!r} is not a (name, value) pair of "
                                "strings")
            pairs.append((h[0], h[1]))
        if fault is not None and not isinstance(fault, str):
            raise TypeError(f"ResponseSpec.fault must be a string (one of "
                            f"{', '.join(self.FAULTS)}), not {type(fault).__name__}")
        if after_bytes is not None and (isinstance(after_bytes, bool)
                                        or not isinstance(after_bytes, int)):
            raise TypeError(f"ResponseSpec.after_bytes must be an int, not "
                            f"{type(after_bytes).__name__}")
        if dribble is not None:
            if isinstance(dribble, dict):
                dribble = (dribble.get("chunks"), dribble.get("over_ms"))
            if (not isinstance(dribble, (tuple, list)) or len(dribble) != 2
                    or any(isinstance(x, bool) or not isinstance(x, int) for x in dribble)):
                raise TypeError("ResponseSpec.dribble must be (chunks, over_ms), two ints")
            dribble = (dribble[0], dribble[1])
        self.status, self.body, self.headers, self.delay_ms = status, body, pairs, delay_ms
        self.fault, self.after_bytes, self.dribble = fault, after_bytes, dribble

    def to_json(self):
        """The stub object of the control API (without method and path)."""
        d = {"status": self.status, "headers": [[n, v] for n, v in self.headers]}
        if isinstance(self.body, (dict, list)):
            d["json"] = self.body
        elif isinstance(self.body, str):
            d["body"] = self.body
        elif isinstance(self.body, (bytes, bytearray)):
            d["body_base64"] = base64.b64encode(bytes(self.body)).decode("ascii")
        d["delay_ms"] = self.delay_ms
        if self.fault is not None:
            d["fault"] = self.fault
        if self.after_bytes is not None:
            d["after_bytes"] = self.after_bytes
        if self.dribble is not None:
            d["dribble"] = {"chunks": self.dribble[0], "over_ms": self.dribble[1]}
        return d

    def __eq__(self, other):
        return isinstance(other, ResponseSpec) and self.to_json() == other.to_json()

    def __repr__(self):
        extra = "".join(f", {k}={getattr(self, k)!r}" for k in ("fault", "after_bytes", "dribble")
                        if getattr(self, k) is not None)
        return (f"ResponseSpec(status={self.status!r}, body={self.body!r}, "
                f"headers={self.headers!r}, delay_ms={self.delay_ms!r}{extra})")


def _as_spec(spec, kwargs, where="register()"):
    """A ResponseSpec from what register() was given: a spec, a bare status, a dict of the
    older keyword form ({"json": ..., "status": ...}), or keyword arguments."""
    from .http import response_from_keywords  # http builds on this module

    if spec is None:
        return response_from_keywords(kwargs, where)
    if kwargs:
        raise TypeError(f"{where}: give either a ResponseSpec or keyword arguments, not both")
    if isinstance(spec, ResponseSpec):
        return spec
    if isinstance(spec, int) and not isinstance(spec, bool):
        return ResponseSpec(status=spec)
    if isinstance(spec, dict):
        return response_from_keywords(spec, where)
    raise TypeError(f"{where}: expected a ResponseSpec, not {type(spec).__name__} (a JSON body "
                    "is ResponseSpec(body={...}), or json={...} as a keyword)")


class Server:
    """A running `apisim mock` (default) or `apisim replay --db FILE` on 127.0.0.1, port 0
    (mode "record" also works, with args=["--upstream", URL, ...]).

        with Server() as s:                       # apisim mock
            s.register("GET", "/v1/thing", ResponseSpec(body={"ok": True}))
            ... point the code under test at s.url ...
            assert s.request_count("GET", "/v1/thing") == 1

        Server.replay("recordings/x.sql")         # apisim replay --db recordings/x.sql

    Keywords: db (replay's --db), session (--session), stubs (--stubs FILE), quota (--quota
    PRESET), admin_token (--admin-token, sent back on every control request), args (more
    flags), binary (else $APISIM_BIN, else `apisim` on PATH), env (added to the process's
    environment), start_timeout / stop_timeout / request_timeout in seconds.

    The process is started by start() or by entering the `with` block, and stopped (SIGTERM,
    then SIGKILL after stop_timeout) by stop() or by leaving it. Every control method raises
    ApisimError carrying apisim's message when apisim refuses, and ApisimError when the server
    is gone.
    """

    def __init__(self, mode="mock", *, db=None, session=None, stubs=None, quota=None,
                 admin_token=None, args=(), binary=None, env=None, start_timeout=15.0,
                 stop_timeout=15.0, request_timeout=10.0):
        if mode not in ("mock", "replay", "record"):
            raise ValueError(f"mode must be mock, replay or record, not {mode!r}")
        if mode == "replay" and db is None:
            raise ValueError("a replay server needs db= (a recording: FILE.db or FILE.sql)")
        self.mode = mode
        self.binary = binary
        self.admin_token = admin_token
        self.env = dict(env or {})
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.request_timeout = request_timeout
        flags = []
        for flag, value in (("--db", db), ("--session", session), ("--stubs", stubs),
                            ("--quota", quota), ("--admin-token", admin_token)):
            if value is not None:
                flags += [flag, os.fspath(value)]
        self.flags = flags + [str(a) for a in args]
        self.url = None
        self.host = None
        self.port = None
        self.returncode = None
        self.argv = None
        self.quota_set = quota is not None  # a quota fixture may be active
        self._proc = None
        self._stderr = collections.deque(maxlen=400)
        self._stderr_lock = threading.Lock()
        self._threads = []

    @classmethod
    def mock(cls, **kwargs):
        """Start `apisim mock` and return the running Server."""
        return cls("mock", **kwargs).start()

    @classmethod
    def replay(cls, db, **kwargs):
        """Start `apisim replay --db DB` and return the running Server."""
        return cls("replay", db=db, **kwargs).start()

    # ---- process ------------------------------------------------------------------------

    def start(self):
        """Start the process and wait for its listening line. Returns self."""
        if self._proc is not None:
            raise ApisimError("this Server was already started")
        self.argv = [find_binary(self.binary), self.mode, "--listen", "127.0.0.1:0",
                     *self.flags]
        try:
            self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          env=child_env(self.env))
        except OSError as e:
            raise ApisimError(f"cannot run {self.argv[0]}: {e}") from e
        lines = queue.Queue()
        self._threads = [
            threading.Thread(target=self._drain_stdout, args=(lines,), daemon=True),
            threading.Thread(target=self._drain_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()
        try:
            self._await_listening(lines)
        except BaseException:
            self._kill()
            raise
        return self

    def _drain_stdout(self, lines):
        first = True
        for raw in iter(self._proc.stdout.readline, b""):
            if first:
                lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
                first = False
        if first:
            lines.put(None)

    def _drain_stderr(self):
        for raw in iter(self._proc.stderr.readline, b""):
            with self._stderr_lock:
                self._stderr.append(raw.decode("utf-8", "replace").rstrip("\r\n"))

    def stderr(self):
        """The last lines apisim wrote to stderr, as one string."""
        with self._stderr_lock:
            return "\n".join(self._stderr)

    def _command(self):
        return "apisim " + " ".join(self.argv[1:])

    def _await_listening(self, lines):
        try:
            line = lines.get(timeout=self.start_timeout)
        except queue.Empty:
            raise ApisimError(f"{self._command()}: no 'listening on' line within "
                              f"{self.start_timeout} s; stderr: {self.stderr()}") from None
        if line is None:  # stdout closed before a line: the process is exiting
            try:
                rc = self._proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                rc = "still running"
            self._join_readers()
            err = self.stderr().strip()
            raise ApisimError(f"{self._command()} exited with status {rc} before listening: "
                              f"{err or '(no stderr)'}", message=err or None)
        m = LISTEN_RE.match(line)
        if not m:
            raise ApisimError(f"{self._command()}: first stdout line is {line!r}, expected "
                              f"'listening on http://HOST:PORT'")
        self.url = m.group(1)
        parts = urllib.parse.urlsplit(self.url)
        self.host, self.port = parts.hostname, parts.port

    @property
    def running(self):
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self):
        return self._proc.pid if self._proc is not None else None

    def stop(self):
        """SIGTERM, wait (SIGKILL after stop_timeout), and return the exit status."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                raise ApisimError(f"{self._command()} still running {self.stop_timeout} s "
                                  "after SIGTERM: killed it") from None
        self._join_readers()
        self.returncode = self._proc.returncode
        return self.returncode

    def _kill(self):
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._join_readers()
        self.returncode = self._proc.returncode

    def _join_readers(self):
        for t in self._threads:
            t.join(5)
        for f in (self._proc.stdout, self._proc.stderr):
            if f is not None and not f.closed and not any(t.is_alive() for t in self._threads):
                f.close()

    def __enter__(self):
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        state = "running" if self.running else ("not started" if self._proc is None
                                                else f"exited {self._proc.returncode}")
        return f"<apisim.Server {self.mode} {self.url or ''} {state}>"

    # ---- control API --------------------------------------------------------------------

    def _control(self, method, path, payload=None, query=None):
        if self._proc is None:
            raise ApisimError("the apisim server is not started (call start() or use `with`)")
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json"}
        data = None
        if payload is not None:
            data = json.dumps(payload).encode("utf-8")
            headers["Content-Type"] = "application/json"
        elif method == "POST":
            data = b""
        if self.admin_token is not None:
            headers["X-Apisim-Token"] = self.admin_token
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        what = f"{method} {path}"
        try:
            with _OPENER.open(req, timeout=self.request_timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            body = e.read()
            message = None
            try:
                message = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                pass
            if not isinstance(message, str):
                message = body.decode("utf-8", "replace").strip() or e.reason
            raise ApisimError(f"apisim refused {what} ({e.code}): {message}",
                              message=message, status=e.code, body=body) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            state = ("still running" if self._proc.poll() is None
                     else f"exited with status {self._proc.returncode}")
            raise ApisimError(f"apisim server at {self.url} is gone ({what}: {reason}); the "
                              f"process {state}") from None
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise ApisimError(f"{what}: apisim answered non-JSON {body[:200]!r}",
                              body=body) from None

    def health(self):
        """GET /__apisim/health: apisim's answer (a dict)."""
        return self._control("GET", "/__apisim/health")

    def register(self, method, path, spec=None, **kwargs):
        """Stub `method path` with one answer: a ResponseSpec (or MockResponseSpec), a bare
        status, or the older keyword form (json=, body=, status=, headers=,
        delay_seconds=/delay_ms=, fault=, dribble=). Returns the stub's exchange id."""
        payload = {"method": method, "path": path, **_as_spec(spec, kwargs).to_json()}
        return self._control("POST", "/__apisim/stubs", payload)["id"]

    def register_sequence(self, method, path, specs=None, responses=None):
        """Stub `method path` with answers given in turn (the last repeats once they run
        out): a list of ResponseSpecs, or of dicts in the older keyword form
        (`responses=[{"json": ...}, {"status": 503}]`). Returns the id apisim gives the
        sequence."""
        if specs is not None and responses is not None:
            raise TypeError("register_sequence(): give the answers once (specs or responses=)")
        items = specs if specs is not None else responses
        if items is None or isinstance(items, (str, bytes, dict)):
            raise TypeError("register_sequence(): the answers are a list of ResponseSpecs or "
                            "of dicts like {\"json\": ...}")
        seq = [_as_spec(s, {}, f"register_sequence() answer {i}").to_json()
               for i, s in enumerate(items)]
        payload = {"method": method, "path": path, "sequence": seq}
        return self._control("POST", "/__apisim/stubs", payload)["id"]

    def get_requests(self, method=None, path=None):
        """The journal, oldest first, optionally filtered: a list of apisim.http.
        RecordedRequest (dicts that also allow attribute access) with id, method, path,
        query, scheme and authority (the host a proxied request named, else None), headers
        (lower-case names), body or body_base64, matched, received_at."""
        from .http import RecordedRequest

        entries = self._control("GET", "/__apisim/requests", query=_filters(method, path))
        return [RecordedRequest(e) if isinstance(e, dict) else e for e in entries or []]

    def request_count(self, method=None, path=None):
        """How many requests the journal holds (optionally filtered)."""
        return int(self._control("GET", "/__apisim/requests/count",
                                 query=_filters(method, path))["count"])

    def reset(self):
        """Forget runtime stubs, the journal and sequence counters."""
        self._control("POST", "/__apisim/reset")

    def quota(self, preset_or_windows, delay_ms=None):
        """Set the quota fixture (GET /api/oauth/usage): a preset name ("ok", "exhausted",
        ...), or windows {"five_hour": {"utilization": 95, "resets_in_s": 3600}, ...}, or a
        full fixture body {"preset": ...} / {"windows": ...}. Returns apisim's answer."""
        if isinstance(preset_or_windows, str):
            payload = {"preset": preset_or_windows}
        elif isinstance(preset_or_windows, dict):
            if "preset" in preset_or_windows or "windows" in preset_or_windows:
                payload = dict(preset_or_windows)
            else:
                payload = {"windows": preset_or_windows}
        else:
            raise TypeError("quota() takes a preset name or a dict of windows, not "
                            f"{type(preset_or_windows).__name__}")
        if delay_ms is not None:
            payload["delay_ms"] = delay_ms
        answer = self._control("POST", "/__apisim/fixtures/quota", payload)
        self.quota_set = True
        return answer

    def clear_quota(self):
        """Turn the quota fixture off (GET /api/oauth/usage is then an ordinary path)."""
        self._control("DELETE", "/__apisim/fixtures/quota")
        self.quota_set = False


def _filters(method, path):
    q = {}
    if method is not None:
        q["method"] = method
    if path is not None:
        q["path"] = path
    return q


def wait_until(predicate, timeout=5.0, interval=0.01):
    """Call predicate() until it returns something truthy and return that, or raise
    TimeoutError after `timeout` seconds (a poll with a deadline, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)
