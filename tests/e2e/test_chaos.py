"""Issue 16, end to end: faults on demand. Stub faults (reset, empty, reset-mid-body,
malformed-chunk, garbage-then-close, stall) and dribble, seen by real clients (the curl CLI,
Python's http.client, a raw socket, the Anthropic TypeScript SDK) as the failures they are;
replay faults (--faults) drawn from --seed, the same requests faulted in every run; bad
input refused with the field or flag named.

Every test starts the real apisim binary ($APISIM_BIN) on 127.0.0.1:0. (test_faults.py is
about upstream failures while recording; this file is about failures apisim serves.)
"""

import http.client
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from urllib.parse import urlsplit

import pytest

from harness import ApisimProcess, child_env, curl, run_apisim, wait_until
from upstream import sse_body

BODY20 = "0123456789abcdefghij"
SSE3 = 'data: {"a": 1}\n\nevent: msg\ndata: {"b": 2}\n\ndata: {"c": 3}\n\n'
SDK_DIR = os.path.join(os.environ.get("APISIM_SOURCE_DIR", ""), "tests", "node", "node_modules")


# --- helpers --------------------------------------------------------------------------------


def control(srv, method, path, body=None):
    """A control API call with http.client: (status, parsed JSON body)."""
    u = urlsplit(srv.url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        c.request(method, "/__apisim/" + path, body=data,
                  headers={"Content-Type": "application/json"} if data else {})
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        c.close()


def add_stub(srv, stub):
    status, body = control(srv, "POST", "stubs", stub)
    assert status == 201, f"registering {stub}: {status} {body}"
    return body["id"]


def journal(srv, path=None):
    status, body = control(srv, "GET", "requests" + (f"?path={path}" if path else ""))
    assert status == 200
    return body


def health(srv):
    status, body = control(srv, "GET", "health")
    assert status == 200
    return body


def conn(srv, timeout=10):
    u = urlsplit(srv.url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


def raw_exchange(srv, path, timeout=5):
    """Send GET `path` on a raw socket; return (bytes received, how it ended): "eof" (FIN),
    "reset" (ECONNRESET) or "timeout"."""
    u = urlsplit(srv.url)
    got = bytearray()
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                return bytes(got), "reset"
            except socket.timeout:
                return bytes(got), "timeout"
            if not b:
                return bytes(got), "eof"
            got += b


FAULT_STUBS = [
    {"method": "GET", "path": "/reset", "body": BODY20, "fault": "reset"},
    {"method": "GET", "path": "/empty", "body": BODY20, "fault": "empty"},
    {"method": "GET", "path": "/mid", "body": BODY20, "fault": "reset-mid-body", "after_bytes": 7},
    {"method": "GET", "path": "/malformed", "body": BODY20, "fault": "malformed-chunk"},
    {"method": "GET", "path": "/garbage", "body": BODY20, "fault": "garbage-then-close"},
    {"method": "GET", "path": "/stall", "body": BODY20, "fault": "stall"},
    {"method": "GET", "path": "/fine", "body": BODY20},
]


@pytest.fixture
def faulty(apisim):
    srv = apisim("mock")
    for s in FAULT_STUBS:
        add_stub(srv, s)
    return srv


# --- stub faults, as clients see them --------------------------------------------------------


def test_curl_sees_each_stub_fault_as_its_failure(faulty):
    r = curl(faulty.url + "/reset", check=False)
    assert (r.exit_code, r.status, r.body) == (56, 0, b""), r
    assert "reset by peer" in r.stderr, r

    r = curl(faulty.url + "/empty", check=False)
    assert (r.exit_code, r.status, r.body) == (52, 0, b""), r
    assert "Empty reply" in r.stderr, r

    # The head promised 20 bytes; 7 came, then the reset.
    r = curl(faulty.url + "/mid", check=False)
    assert (r.exit_code, r.status, r.body) == (56, 200, BODY20[:7].encode()), r
    assert r.header("content-length") == "20" and "reset by peer" in r.stderr, r

    # The first half of the body as a good chunk, then a chunk size that is not hex (curl
    # keeps the good chunk only when it read it apart from the bad line: both are fine).
    r = curl(faulty.url + "/malformed", check=False)
    assert (r.exit_code, r.status) == (56, 200) and r.body in (b"", BODY20[:10].encode()), r
    assert r.header("transfer-encoding") == "chunked" and "chunked" in r.stderr, r

    r = curl(faulty.url + "/garbage", check=False)
    assert (r.exit_code, r.status) == (1, 0), r
    assert "HTTP/0.9" in r.stderr, r

    # A stall: the head arrives, then nothing; curl gives up at --max-time.
    r = curl(faulty.url + "/stall", timeout=1, check=False)
    assert (r.exit_code, r.status, r.body) == (28, 200, b""), r
    assert r.header("content-length") == "20", r

    # The server is unharmed, and the journal and health say what was served.
    assert curl(faulty.url + "/fine").body == BODY20.encode()
    faults = {j["path"]: j.get("fault") for j in journal(faulty)}
    assert faults == {"/reset": "reset", "/empty": "empty", "/mid": "reset-mid-body",
                      "/malformed": "malformed-chunk", "/garbage": "garbage-then-close",
                      "/stall": "stall", "/fine": None}, faults
    assert health(faulty)["faults"] == 6


def test_on_the_wire(faulty):
    """What each fault looks like to a socket: the bytes, and FIN or RST."""
    assert raw_exchange(faulty, "/reset") == (b"", "reset")
    assert raw_exchange(faulty, "/empty") == (b"", "eof")

    got, end = raw_exchange(faulty, "/mid")
    head, _, body = got.partition(b"\r\n\r\n")
    assert end == "reset" and head.startswith(b"HTTP/1.1 200") and body == b"0123456"
    assert b"\r\nContent-Length: 20" in head

    got, end = raw_exchange(faulty, "/malformed")
    head, _, body = got.partition(b"\r\n\r\n")
    assert end == "eof" and b"\r\nTransfer-Encoding: chunked" in head
    assert body == b"A\r\n0123456789\r\nXYZ\r\nnot a chunk\r\n", body

    got, end = raw_exchange(faulty, "/garbage")
    assert end == "eof" and len(got) == 64 and got[0] == 0xFF and not got.startswith(b"HTTP")
    assert raw_exchange(faulty, "/garbage")[0] == got, "the same garbage every time"

    got, end = raw_exchange(faulty, "/stall", timeout=0.5)
    assert end == "timeout" and got.startswith(b"HTTP/1.1 200") and got.endswith(b"\r\n\r\n")


def test_python_http_client_exceptions(faulty):
    def get(path, timeout=10):
        c = conn(faulty, timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r, r.read()
        finally:
            c.close()

    with pytest.raises(ConnectionResetError):
        get("/reset")
    with pytest.raises(http.client.RemoteDisconnected):
        get("/empty")
    with pytest.raises(ConnectionResetError):
        get("/mid")
    with pytest.raises(http.client.IncompleteRead) as e:
        get("/malformed")
    assert e.value.partial == BODY20[:10].encode()
    with pytest.raises(http.client.BadStatusLine):
        get("/garbage")
    with pytest.raises(TimeoutError):
        get("/stall", timeout=0.5)
    assert get("/fine")[1] == BODY20.encode()


def test_a_sequence_fails_twice_then_answers(apisim):
    srv = apisim("mock")
    add_stub(srv, {"method": "POST", "path": "/v1/messages", "sequence": [
        {"fault": "reset"},
        {"status": 503, "json": {"error": "busy"}},
        {"status": 200, "json": {"ok": True}},
    ]})
    results = [curl(srv.url + "/v1/messages", "-d", "{}", check=False) for _ in range(4)]
    assert [(r.exit_code, r.status) for r in results] == [(56, 0), (0, 503), (0, 200), (0, 200)]
    assert [j.get("fault") for j in journal(srv)] == ["reset", None, None, None]


def test_dribble_paces_the_body_without_holding_a_thread(apisim):
    srv = apisim("mock", "--threads", "1")
    body = "".join(chr(ord("a") + i % 26) for i in range(100))
    add_stub(srv, {"method": "GET", "path": "/drip", "body": body,
                   "dribble": {"chunks": 5, "over_ms": 600}})
    u = urlsplit(srv.url)
    # One client: the pieces arrive spread over the 600 ms, 20 bytes each.
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /drip HTTP/1.1\r\nHost: x\r\n\r\n")
        got, arrivals = bytearray(), []
        while not got.endswith(b"0\r\n\r\n"):
            b = s.recv(65536)
            assert b, f"closed early after {got!r}"
            got += b
            arrivals.append(time.monotonic() - t0)
    head, _, chunked = bytes(got).partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    pieces, rest = [], chunked
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        pieces.append(rest[:size])
        rest = rest[size + 2:]
    assert b"".join(pieces) == body.encode()
    assert arrivals[-1] >= 0.55, f"a 600 ms dribble ended after {arrivals[-1]:.3f} s"
    assert len(arrivals) >= 4 and arrivals[1] < arrivals[-1] - 0.3, arrivals

    # Eight dribbles at once on one server thread end together, not one after the other
    # (8 x 400 ms): the waits are timers, not a sleeping thread.
    add_stub(srv, {"method": "GET", "path": "/drip2", "body": body,
                   "dribble": {"chunks": 4, "over_ms": 400}})
    bodies, errors = [], []

    def one():
        try:
            c = conn(srv)
            c.request("GET", "/drip2")
            bodies.append(c.getresponse().read())
            c.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t0 = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    took = time.monotonic() - t0
    assert not errors and bodies == [body.encode()] * 8, errors
    assert took < 8 * 0.4, f"8 concurrent 400 ms dribbles took {took:.2f} s"


def test_stall_holds_no_thread_and_ends_with_the_drain(apisim):
    srv = apisim("mock", "--threads", "1")
    add_stub(srv, {"method": "GET", "path": "/stall", "fault": "stall", "body": "x"})
    add_stub(srv, {"method": "GET", "path": "/fine", "body": "ok"})
    stalled = []
    for _ in range(3):
        c = conn(srv, timeout=30)
        c.request("GET", "/stall")
        r = c.getresponse()
        assert r.status == 200 and r.getheader("content-length") == "1"
        stalled.append((c, r))
    # Three stalls in flight on a one-thread server, and it still answers.
    assert curl(srv.url + "/fine").body == b"ok"
    # SIGTERM: the drain ends the stalls (closing them) instead of waiting 30 s for them.
    t0 = time.monotonic()
    stop = srv.stop()
    assert stop.rc == 0, stop.stderr
    assert time.monotonic() - t0 < 10, "the stalls held up the drain"
    for c, r in stalled:
        with pytest.raises(http.client.IncompleteRead):
            r.read()
        c.close()


def open_sockets(pid):
    """How many sockets the process holds open (its listening socket included)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass  # closed while we looked
    return n


def test_stall_ends_when_the_client_leaves(apisim):
    srv = apisim("mock", "--threads", "1")
    add_stub(srv, {"method": "GET", "path": "/stall", "fault": "stall", "body": "x"})
    pid = srv.proc.pid
    idle = 1  # the listening socket
    wait_until(lambda: open_sockets(pid) == idle, what="only the listening socket")
    clients = []
    for _ in range(2):
        c = conn(srv, timeout=30)
        c.request("GET", "/stall")
        assert c.getresponse().status == 200
        clients.append(c)
    wait_until(lambda: open_sockets(pid) == idle + 2, what="two stalled connections")
    for c in clients:
        c.close()
    # The server notices (it looks every 100 ms) and closes its side long before
    # --client-timeout (30 s).
    wait_until(lambda: open_sockets(pid) == idle, timeout=5,
               what="the stalled connections to close after their clients left")


# --- replay faults (--faults, drawn from --seed) ---------------------------------------------


def record(apisim, upstream, db, paths):
    rec = apisim("record", "--upstream", upstream.url, "--db", db)
    for p in paths:
        curl(rec.url + p)
    assert rec.stop().rc == 0


def replay_run(apisim, db, faults, seed, n=200, path="/json"):
    """n sequential GETs through a replay with --faults; returns (outcome per request,
    journal faults by id, health)."""
    srv = apisim("replay", "--db", db, "--faults", faults, "--seed", seed)
    outcomes = []
    c = conn(srv)
    for _ in range(n):
        try:
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            outcomes.append(r.status)
        except (ConnectionResetError, http.client.RemoteDisconnected) as e:
            outcomes.append(type(e).__name__)
            c.close()
            c = conn(srv)
    c.close()
    faults = {j["id"]: j.get("fault") for j in journal(srv)}
    h = health(srv)
    stop = srv.stop()
    assert stop.rc == 0, stop.stderr
    return outcomes, faults, h, stop.stderr


def test_same_seed_faults_the_same_requests(apisim, upstream, db_path):
    record(apisim, upstream, db_path, ["/json"])
    spec = "reset:5%,empty:5%,status:529:10%"
    out1, faults1, h1, log1 = replay_run(apisim, db_path, spec, 7)
    out2, faults2, _, _ = replay_run(apisim, db_path, spec, 7)
    out3, faults3, _, _ = replay_run(apisim, db_path, spec, 8)

    faulted1 = {i: f for i, f in faults1.items() if f}
    assert out1 == out2 and faults1 == faults2, "same seed, same faults"
    assert {i: f for i, f in faults3.items() if f} != faulted1, "another seed differs"
    # The journal numbers requests 1..200 in arrival order; what each client saw matches.
    assert sorted(faults1) == list(range(1, 201))
    seen = {"reset": "ConnectionResetError", "empty": "RemoteDisconnected", "status:529": 529}
    assert [seen.get(faults1[i + 1], 200) for i in range(200)] == out1
    assert set(faulted1.values()) == {"reset", "empty", "status:529"}
    assert h1["faults"] == len(faulted1) and 10 <= len(faulted1) <= 70, h1
    # The log says which request got which fault.
    for i, f in faulted1.items():
        assert f"fault: request {i} GET /json: {f}" in log1


def test_fault_rate_over_10k_requests(apisim, upstream, db_path):
    record(apisim, upstream, db_path, ["/json"])
    srv = apisim("replay", "--db", db_path, "--faults", "status:503:5%", "--seed", "3")
    counts = {}
    lock = threading.Lock()

    def client(n):
        c = conn(srv)
        mine = {}
        for _ in range(n):
            c.request("GET", "/json")
            r = c.getresponse()
            r.read()
            mine[r.status] = mine.get(r.status, 0) + 1
        c.close()
        with lock:
            for k, v in mine.items():
                counts[k] = counts.get(k, 0) + v

    threads = [threading.Thread(target=client, args=(2500,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    total = sum(counts.values())
    assert total == 10000 and set(counts) <= {200, 503}, counts
    # Binomial(10000, 0.05): mean 500, sd 21.8; 5 sd either side.
    sd = math.sqrt(10000 * 0.05 * 0.95)
    assert abs(counts.get(503, 0) - 500) < 5 * sd, counts
    assert health(srv)["faults"] == counts.get(503, 0)
    assert srv.stop().rc == 0


def test_status_fault_body_and_latency_spike(apisim, upstream, db_path):
    record(apisim, upstream, db_path, ["/json"])
    srv = apisim("replay", "--db", db_path, "--faults", "status:529:100%")
    r = curl(srv.url + "/json", check=False)
    assert r.status == 529 and r.content_type == "application/json"
    assert r.json() == {"type": "error", "error": {
        "type": "overloaded_error", "message": "apisim fault status:529 (--faults)"}}
    srv.stop()
    srv = apisim("replay", "--db", db_path, "--faults", "latency-spike:400ms:100%")
    t0 = time.monotonic()
    r = curl(srv.url + "/json")
    assert time.monotonic() - t0 >= 0.4 and r.status == 200
    assert journal(srv)[0]["fault"] == "latency-spike:400ms"


def test_cut_stream_ends_a_recorded_stream_mid_event(apisim, upstream, db_path):
    record(apisim, upstream, db_path, ["/sse?events=6&gap_ms=0", "/json"])
    full = sse_body(6)
    srv = apisim("replay", "--db", db_path, "--faults", "cut-stream:100%")
    r = curl(srv.url + "/sse?events=6&gap_ms=0", check=False)
    assert r.exit_code == 18 and r.status == 200, r  # curl: partial file
    assert 0 < len(r.body) < len(full) and full.startswith(r.body)
    assert not r.body.endswith(b"\n"), f"cut between events, not in one: {r.body!r}"
    c = conn(srv)
    c.request("GET", "/sse?events=6&gap_ms=0")
    with pytest.raises(http.client.IncompleteRead) as e:
        c.getresponse().read()
    assert e.value.partial == r.body
    c.close()
    # With recorded pacing too.
    srv.stop()
    srv = apisim("replay", "--db", db_path, "--faults", "cut-stream:100%", "--latency",
                 "recorded")
    r = curl(srv.url + "/sse?events=6&gap_ms=0", check=False)
    assert r.exit_code == 18 and full.startswith(r.body) and 0 < len(r.body) < len(full), r


def test_config_faults_per_route(apisim, upstream, db_path, tmp_path):
    record(apisim, upstream, db_path, ["/json", "/echo"])
    cfg = tmp_path / "apisim.json"
    cfg.write_text(json.dumps({"faults": "status:500:100%",
                               "routes": [{"path": "/echo", "faults": []},
                                          {"path": "/json", "faults": ["empty:100%"]}]}))
    srv = apisim("replay", "--db", db_path, "--config", cfg)
    assert curl(srv.url + "/json", check=False).exit_code == 52
    assert curl(srv.url + "/echo").status == 200
    # --faults replaces the top level; routes keep their own.
    srv.stop()
    srv = apisim("replay", "--db", db_path, "--config", cfg, "--faults", "reset:0%")
    assert curl(srv.url + "/json", check=False).exit_code == 52
    assert curl(srv.url + "/echo").status == 200


def test_no_faults_configured_faults_nothing(apisim, upstream, db_path):
    record(apisim, upstream, db_path, ["/json"])
    srv = apisim("replay", "--db", db_path)
    for _ in range(20):
        assert curl(srv.url + "/json").status == 200
    assert health(srv)["faults"] == 0
    assert all("fault" not in j for j in journal(srv))


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("stub, field, says", [
    ({"fault": "explode"}, "fault", "unknown fault \"explode\""),
    ({"fault": 3}, "fault", "expected a string"),
    ({"fault": "reset-mid-body", "body": "abc"}, "after_bytes", "required"),
    ({"fault": "reset-mid-body", "body": "abc", "after_bytes": 3}, "after_bytes",
     "less than the body's 3 bytes"),
    ({"body": "abc", "after_bytes": 1}, "after_bytes", "only with"),
    ({"body": "abc", "dribble": {"chunks": 0, "over_ms": 10}}, "dribble.chunks",
     "expected an integer 1..10000"),
    ({"body": "abc", "dribble": {"chunks": 2}}, "dribble.over_ms", "expected an integer"),
    ({"body": "abc", "dribble": {"chunks": 2, "over_ms": 10, "x": 1}}, "dribble",
     "unknown field \"x\""),
    ({"body": "abc", "dribble": [2, 10]}, "dribble", "expected an object"),
    ({"body": "abc", "dribble": {"chunks": 2, "over_ms": 5000}}, "dribble.over_ms",
     "5000 ms is longer than --client-timeout (2000 ms)"),
    ({"fault": "reset", "body": "abc", "dribble": {"chunks": 2, "over_ms": 10}}, "dribble",
     "not with \"fault\": \"reset\""),
    ({"sequence": [{"status": 200}, {"fault": "boom"}]}, "sequence[1].fault", "unknown fault"),
])
def test_bad_stub_fault_is_400_naming_the_field(apisim, stub, field, says):
    srv = apisim("mock", "--client-timeout", "2s")
    status, body = control(srv, "POST", "stubs", {"method": "GET", "path": "/x", **stub})
    assert status == 400, body
    assert body["error"].startswith(f"stubs: field \"{field}\": "), body
    assert says in body["error"], body
    assert health(srv)["stubs"] == 0  # nothing half-registered, and still serving


@pytest.mark.parametrize("spec, says", [
    ("explode:5%", "unknown fault kind \"explode\" (expected reset, empty, status:CODE, "
                   "latency-spike:DURATION, cut-stream)"),
    ("reset:150%", "rate 150% is outside 0%..100%"),
    ("reset:5", "must be a percentage ending in %"),
    ("latency-spike:2parsecs:1%", "invalid duration \"2parsecs\""),
    ("status:42:1%", "status needs a CODE 200..599"),
    ("stall:5%", "is a stub fault"),
    ("reset:60%,empty:60%", "the rates add up to 120%"),
])
def test_bad_faults_flag_exits_2(spec, says, tmp_path):
    for mode in ("replay", "mock"):
        args = [mode, "--faults", spec, "--listen", "127.0.0.1:0"]
        if mode == "replay":
            args += ["--db", tmp_path / "none.db"]
        p = run_apisim(*args, timeout=20)
        assert p.returncode == 2, (p.returncode, p.stderr)
        assert f"apisim {mode}: --faults: " in p.stderr and says in p.stderr, p.stderr


def test_bad_faults_in_config_and_stubs_file_exit_2(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"routes": [{"path": "/a", "faults": ["reset:5%", "nope:1%"]}]}))
    p = run_apisim("mock", "--config", cfg, "--listen", "127.0.0.1:0", timeout=20)
    assert p.returncode == 2 and "routes[0].faults[1]: \"nope:1%\": unknown fault kind" in \
        p.stderr, p.stderr
    stubs = tmp_path / "stubs.json"
    stubs.write_text(json.dumps([{"method": "GET", "path": "/a", "body": "x",
                                  "dribble": {"chunks": 3, "over_ms": 60000}}]))
    p = run_apisim("mock", "--stubs", stubs, "--listen", "127.0.0.1:0", timeout=20)
    assert p.returncode == 2, p.stderr
    assert "[0].dribble.over_ms: 60000 ms is longer than --client-timeout (30000 ms)" in p.stderr


def test_stubs_file_faults_load(apisim, tmp_path):
    stubs = tmp_path / "stubs.json"
    stubs.write_text(json.dumps([{"method": "GET", "path": "/a", "sequence": [
        {"fault": "empty"}, {"body": "fine"}]}]))
    srv = apisim("mock", "--stubs", stubs)
    assert curl(srv.url + "/a", check=False).exit_code == 52
    assert curl(srv.url + "/a").body == b"fine"


# --- the Anthropic TypeScript SDK ------------------------------------------------------------

SDK_SCRIPT = r"""
const Anthropic = require(process.env.SDK_DIR + '/@anthropic-ai/sdk');
const client = new Anthropic({apiKey: 'sk-test', baseURL: process.env.BASE_URL, maxRetries: 2,
                              timeout: 10000});
const params = {model: 'claude-test', max_tokens: 16, messages: [{role: 'user', content: 'hi'}]};
(async () => {
  const out = {};
  try {
    const msg = await client.messages.create(params);
    out.create = {ok: true, text: msg.content[0].text};
  } catch (e) {
    out.create = {ok: false, error: e.constructor.name, status: e.status || null};
  }
  const events = [];
  try {
    const stream = await client.messages.create({...params, stream: true});
    for await (const ev of stream) events.push(ev.type);
    out.stream = {ok: true, events};
  } catch (e) {
    out.stream = {ok: false, events, error: e.constructor.name, message: String(e.message)};
  }
  console.log(JSON.stringify(out));
})();
"""

MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
           "content": [{"type": "text", "text": "hello after retries"}],
           "stop_reason": "end_turn", "stop_sequence": None,
           "usage": {"input_tokens": 3, "output_tokens": 4}}


def sse(events):
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)


STREAM = sse([
    {"type": "message_start", "message": {**MESSAGE, "content": [], "stop_reason": None}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta",
                                                          "text": "hello"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta",
                                                          "text": " world"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
    {"type": "message_stop"},
])


@pytest.mark.skipif(not shutil.which("node") or not os.path.isdir(
    os.path.join(SDK_DIR, "@anthropic-ai", "sdk")),
    reason="node or tests/node/node_modules/@anthropic-ai/sdk missing: run "
           "scripts/install-deps.sh")
def test_anthropic_sdk_retries_529_twice_then_succeeds_and_sees_a_cut_stream(apisim):
    srv = apisim("mock")
    overloaded = {"status": 529, "headers": [["retry-after-ms", "20"]],
                  "json": {"type": "error", "error": {"type": "overloaded_error",
                                                      "message": "Overloaded"}}}
    # The plain call: 529, 529, then the message (the SDK's own retries, maxRetries 2).
    # The streamed call: cut (RST) in the middle of the third event.
    cut_at = STREAM.index("hello") + 2
    add_stub(srv, {"method": "POST", "path": "/v1/messages", "sequence": [
        overloaded, overloaded, {"json": MESSAGE},
        {"body": STREAM, "headers": [["content-type", "text/event-stream"]],
         "fault": "reset-mid-body", "after_bytes": cut_at},
    ]})
    p = subprocess.run(["node", "-e", SDK_SCRIPT], capture_output=True, text=True, timeout=60,
                       env=child_env({"SDK_DIR": SDK_DIR, "BASE_URL": srv.url}))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["create"] == {"ok": True, "text": "hello after retries"}, out
    assert out["stream"]["ok"] is False, out
    assert out["stream"]["events"] == ["message_start", "content_block_start"], out
    reqs = journal(srv, "/v1/messages")
    assert len(reqs) == 4, reqs
    # The SDK counted its retries itself.
    assert [r["headers"].get("x-stainless-retry-count") for r in reqs[:3]] == ["0", "1", "2"]
    assert reqs[3].get("fault") == "reset-mid-body"
