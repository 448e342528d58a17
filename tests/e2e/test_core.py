"""Issue 2, end to end: record through a real upstream into SQLite, replay with the upstream
stopped, and compare what a real client (the curl CLI) got both times.

Every test starts the real apisim binary ($APISIM_BIN) on 127.0.0.1:0 against the stdlib
upstream of upstream.py, also on port 0.
"""

import json
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

import harness
import upstream as U
from harness import (Req, closed_port_url, curl, db_file_bytes, query_db,
                     run_apisim, wait_until)

JSON_POST = ("-X", "POST", "-H", "Content-Type: application/json")


def assert_replayed_same(rec, rep, what=""):
    """The replayed answer is the recorded one: status, body bytes, content type; no miss."""
    assert rep.header("x-apisim-miss") is None, f"{what}: replay missed: {rep!r}"
    assert rep.status == rec.status, f"{what}: status {rep.status} != recorded {rec.status}"
    assert rep.body == rec.body, f"{what}: replayed body differs from the recorded one"
    assert rep.content_type == rec.content_type, (
        f"{what}: content-type {rep.content_type!r} != recorded {rec.content_type!r}")


def only_exchange(db, path):
    rows = query_db(db, "SELECT * FROM exchanges WHERE path = ?", path)
    assert len(rows) == 1, f"expected one exchange for {path}, found {len(rows)}"
    return rows[0]


# --- record then replay with the upstream stopped -------------------------------------------


def test_json_get(record_then_replay):
    rr = record_then_replay(["/json"])
    rec, rep = rr.recorded[0], rr.replayed[0]
    assert rec.status == 200 and rec.body == U.JSON_BODY
    assert rec.content_type == "application/json"
    assert_replayed_same(rec, rep, "GET /json")


def test_post_with_json_body(record_then_replay, upstream):
    body = '{"b": 2, "a": [1, 2], "s": "x"}'
    rr = record_then_replay([Req("/echo", *JSON_POST, "--data-binary", body)])
    rec, rep = rr.recorded[0], rr.replayed[0]
    assert rec.status == 200
    echoed = rec.json()
    assert echoed["method"] == "POST" and echoed["body"] == body
    assert upstream.received_for("/echo")[0].body == body.encode()
    assert_replayed_same(rec, rep, "POST /echo")


def test_json_body_matches_canonically_and_differs_by_value(record_then_replay):
    """Match key: JSON bodies canonicalised (keys sorted, whitespace dropped)."""
    rr = record_then_replay([
        Req("/echo", *JSON_POST, "--data-binary", '{"b": 2, "a": [1, 2]}',
            replay_args=(*JSON_POST, "--data-binary", '{"a":[1,2],\n "b":2}')),
        Req("/echo", *JSON_POST, "--data-binary", '{"b": 2, "a": [1, 2]}',
            replay_args=(*JSON_POST, "--data-binary", '{"a":[1,2],"b":3}')),
    ])
    assert_replayed_same(rr.recorded[0], rr.replayed[0], "reordered JSON body")
    miss = rr.replayed[1]
    assert miss.status == 404 and miss.header("x-apisim-miss") == "1", (
        f"a JSON body with another value must miss, got {miss!r}")


def test_query_string_in_another_order_hits(record_then_replay):
    rr = record_then_replay([Req("/echo?a=1&b=2", replay_path="/echo?b=2&a=1")])
    rec, rep = rr.recorded[0], rr.replayed[0]
    assert rec.json()["query"] == "a=1&b=2"
    assert_replayed_same(rec, rep, "query b=2&a=1 against recorded a=1&b=2")


def test_chunked_response(record_then_replay, db_path):
    rr = record_then_replay(["/chunked?gap_ms=60"])
    rec, rep = rr.recorded[0], rr.replayed[0]
    assert rec.status == 200 and rec.body == b"".join(U.CHUNKED_PARTS)
    assert_replayed_same(rec, rep, "chunked")
    ex = only_exchange(db_path, "/chunked")
    chunks = query_db(db_path, "SELECT idx, offset_us, size FROM chunks "
                      "WHERE exchange_id = ? ORDER BY idx", ex["id"])
    # Four parts 60 ms apart: stored as several timed pieces that add up to the body.
    assert len(chunks) >= 2, f"chunks of a 4-part chunked body: {[tuple(c) for c in chunks]}"
    assert sum(c["size"] for c in chunks) == len(rec.body)
    offsets = [c["offset_us"] for c in chunks]
    assert offsets == sorted(offsets)
    assert offsets[-1] - offsets[0] >= 100_000, f"3 gaps of 60 ms, offsets {offsets}"
    assert ex["duration_us"] - ex["ttfb_us"] >= 100_000, (
        f"ttfb_us {ex['ttfb_us']} duration_us {ex['duration_us']}")


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_sse_stream(record_then_replay, framing):
    rr = record_then_replay([f"/sse?events=4&gap_ms=20&framing={framing}"])
    rec, rep = rr.recorded[0], rr.replayed[0]
    assert rec.status == 200 and rec.body == U.sse_body(4)
    assert rec.content_type == "text/event-stream"
    assert_replayed_same(rec, rep, f"SSE ({framing})")
    assert rep.header("cache-control") == "no-cache", "a recorded response header replays"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_response_stored_decoded(record_then_replay, db_path, encoding):
    rr = record_then_replay([Req(f"/{encoding}", "--compressed", replay_args=())])
    rec, rep = rr.recorded[0], rr.replayed[0]
    assert rec.status == 200 and rec.body == U.ENCODED_TEXT, (
        f"record client (curl --compressed) got {rec!r}")
    row = query_db(db_path, "SELECT response_body, typeof(response_body) AS t, "
                   "response_encoding FROM exchanges WHERE path = ?", f"/{encoding}")[0]
    assert row["t"] == "text", f"decoded JSON stored as {row['t']}"
    assert row["response_body"] == U.ENCODED_TEXT.decode()
    assert row["response_encoding"] == encoding
    # Replayed without --compressed: the plain text, no stale encoding or length.
    assert rep.status == 200 and rep.header("x-apisim-miss") is None
    assert rep.body == U.ENCODED_TEXT
    assert rep.header("content-encoding") in (None, "identity"), rep.headers
    assert rep.content_type == rec.content_type
    if rep.header("content-length") is not None:
        assert int(rep.header("content-length")) == len(U.ENCODED_TEXT)


def test_binary_body_stored_as_blob(record_then_replay, db_path):
    rr = record_then_replay(["/binary?n=1000"])
    rec, rep = rr.recorded[0], rr.replayed[0]
    assert rec.status == 200 and rec.body == U.binary_body(1000)
    assert rec.content_type == "application/octet-stream"
    assert_replayed_same(rec, rep, "binary")
    row = query_db(db_path, "SELECT response_body, typeof(response_body) AS t "
                   "FROM exchanges WHERE path = '/binary'")[0]
    assert row["t"] == "blob" and row["response_body"] == U.binary_body(1000)


@pytest.mark.parametrize("status", [404, 500])
def test_upstream_error_status_is_data(record_then_replay, status):
    rr = record_then_replay([f"/status/{status}"])
    rec, rep = rr.recorded[0], rr.replayed[0]
    assert rec.status == status and rec.json() == {"status": status}
    assert_replayed_same(rec, rep, f"upstream {status}")


UPSTREAM_FAILURES = {
    # name: (upstream URL maker, path, extra record args, cause pattern)
    "refused": (lambda up: closed_port_url(), "/json", (), r"refused|connect"),
    "timeout": (lambda up: up.url, "/slow?ms=3000", ("--upstream-timeout", "300ms"),
                r"time.?out|timed out"),
    "reset": (lambda up: up.url, "/hangup", (), r"reset|empty|closed|recv|receiv"),
}


@pytest.mark.parametrize("case", UPSTREAM_FAILURES)
def test_upstream_failure_answers_502_and_replays(apisim_bin, upstream, db_path, case):
    make_url, path, args, cause = UPSTREAM_FAILURES[case]
    target = SimpleNamespace(url=make_url(upstream), stop=upstream.stop)
    rr = harness.record_then_replay([path], target, db_path, record_args=args)
    rec, rep = rr.recorded[0], rr.replayed[0]
    assert rec.status == 502, f"upstream {case}: {rec!r}"
    err = rec.json()
    assert isinstance(err, dict) and "error" in err, f"502 body is not a JSON error: {rec!r}"
    assert re.search(cause, json.dumps(err), re.I), f"502 body does not name the cause: {err}"
    row = only_exchange(db_path, path.split("?")[0])
    assert row["status"] == 502 and row["error"], dict(row)
    assert re.search(cause, row["error"], re.I), f"stored error: {row['error']!r}"
    assert rep.status == 502 and rep.header("x-apisim-miss") is None, rep
    assert rep.body == rec.body


# --- sequences, misses, --strict -----------------------------------------------------------


def test_counter_replays_as_sequence_then_repeats_last(apisim, upstream, db_path):
    rec = apisim("record", "--upstream", upstream.url, "--db", db_path)
    got = [curl(rec.url + "/counter").json()["n"] for _ in range(3)]
    assert got == [1, 2, 3]
    assert rec.stop().rc == 0
    upstream.stop()
    rep = apisim("replay", "--db", db_path)
    got = [curl(rep.url + "/counter").json()["n"] for _ in range(4)]
    assert got == [1, 2, 3, 3]
    assert rep.stop().rc == 0


def _record(apisim, upstream, db, paths, *args):
    rec = apisim("record", "--upstream", upstream.url, "--db", db, *args)
    for p in paths:
        curl(rec.url + p)
    stopped = rec.stop()
    assert stopped.rc == 0, stopped.stderr


def test_miss_answers_404_with_report(apisim, upstream, db_path):
    _record(apisim, upstream, db_path, ["/json", "/echo?a=1"])
    upstream.stop()
    rep = apisim("replay", "--db", db_path)
    miss = curl(rep.url + "/echo?a=2")
    assert miss.status == 404
    assert miss.header("x-apisim-miss") == "1", miss.headers
    body = miss.json()
    for k in ("error", "request", "key", "nearest"):
        assert k in body, f"miss body lacks {k!r}: {body}"
    assert body["request"]["method"] == "GET" and body["request"]["path"] == "/echo"
    assert isinstance(body["key"], str) and body["key"]
    assert isinstance(body["nearest"], list) and body["nearest"], body
    near = [n for n in body["nearest"] if n.get("path") == "/echo"]
    assert near, f"the recorded /echo?a=1 is not among the nearest: {body['nearest']}"
    assert any("a" in d for d in near[0].get("differences", [])), near[0]
    hit = curl(rep.url + "/json")
    assert hit.status == 200 and hit.header("x-apisim-miss") is None
    stopped = rep.stop()
    assert stopped.rc == 0, "a replay without --strict exits 0 even after a miss"
    assert "/echo" in stopped.stderr, f"the miss is not logged on stderr:\n{stopped.stderr}"


@pytest.mark.parametrize("with_miss,expected_rc", [(True, 3), (False, 0)])
def test_strict_exit_status(apisim, upstream, db_path, with_miss, expected_rc):
    _record(apisim, upstream, db_path, ["/json"])
    upstream.stop()
    rep = apisim("replay", "--db", db_path, "--strict")
    assert curl(rep.url + "/json").status == 200
    if with_miss:
        assert curl(rep.url + "/never-recorded").status == 404
    stopped = rep.stop(signal.SIGTERM)
    assert stopped.rc == expected_rc, f"--strict, miss={with_miss}: {stopped}"


# --- what is forwarded, what is stored -----------------------------------------------------

SECRETS = {
    "authorization": "Bearer sk-secret-XYZ",
    "x-api-key": "xak-secret-ABC123",
    "cookie": "session=cookie-secret-DEF456",
    "proxy-authorization": "Basic proxy-secret-JKL000",
}


def test_no_secret_in_the_database(apisim, upstream, db_path):
    rec = apisim("record", "--upstream", upstream.url, "--db", db_path)
    hdrs = [a for k, v in SECRETS.items() for a in ("-H", f"{k}: {v}")]
    r1 = curl(rec.url + "/json", *hdrs)
    r2 = curl(rec.url + "/set-cookie")
    stopped = rec.stop()
    assert stopped.rc == 0, stopped.stderr
    assert r1.status == 200 and r2.status == 200
    # Forwarded untouched, both ways.
    got = upstream.received_for("/json")[0]
    for k in ("authorization", "x-api-key", "cookie"):
        assert got.header(k) == SECRETS[k], f"upstream got {k}: {got.header(k)!r}"
    assert U.SET_COOKIE_SECRET in (r2.header("set-cookie") or ""), r2.headers
    # Stored redacted: not a byte of any value in the database or its WAL.
    raw = db_file_bytes(db_path)
    assert b"[REDACTED]" in raw and b"/set-cookie" in raw, "read the wrong file?"
    leaked = [v for v in [*SECRETS.values(), U.SET_COOKIE_SECRET, "sk-secret-XYZ"]
              if v.encode() in raw]
    assert not leaked, f"secrets found in {db_path}: {leaked}"
    stored = dict((k.lower(), v) for k, v in
                  json.loads(only_exchange(db_path, "/json")["request_headers"]))
    assert stored.get("authorization") == "[REDACTED]", stored
    assert stored.get("x-api-key") == "[REDACTED]", stored
    resp = json.loads(only_exchange(db_path, "/set-cookie")["response_headers"])
    assert ["[REDACTED]"] == [v for k, v in resp if k.lower() == "set-cookie"], resp


def test_redact_header_flag(apisim, upstream, db_path):
    rec = apisim("record", "--upstream", upstream.url, "--db", db_path,
                 "--redact-header", "X-Custom-Token")
    assert curl(rec.url + "/json", "-H", "X-Custom-Token: custom-secret-MNO").status == 200
    assert rec.stop().rc == 0
    assert upstream.received_for("/json")[0].header("x-custom-token") == "custom-secret-MNO"
    assert b"custom-secret-MNO" not in db_file_bytes(db_path)


def test_forwarding_host_hop_by_hop_methods_bodies(apisim, upstream, db_path):
    rec = apisim("record", "--upstream", upstream.url, "--db", db_path)
    r = curl(rec.url + "/echo?x=1", "-H", "Authorization: Bearer fwd-token",
             "-H", "Keep-Alive: timeout=5", "-H", "Proxy-Connection: keep-alive",
             "-H", "X-Custom: yes")
    assert r.status == 200
    got = upstream.received_for("/echo")[0]
    assert got.header("host") == f"127.0.0.1:{upstream.port}", "Host is rewritten"
    assert got.header("authorization") == "Bearer fwd-token"
    assert got.header("x-custom") == "yes"
    assert got.query == "x=1"
    for hop in ("keep-alive", "proxy-connection"):
        assert got.header(hop) is None, f"hop-by-hop {hop} forwarded: {got.headers}"
    binary = bytes(range(256)) * 3
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        r = curl(rec.url + "/echo", "-X", method, "-H", "Content-Type: text/plain",
                 "--data-binary", f"{method.lower()}-body")
        assert r.status == 200 and r.json()["method"] == method
        assert r.json()["body"] == f"{method.lower()}-body"
    body_file = db_path.parent / "binary.bin"
    body_file.write_bytes(binary)
    r = curl(rec.url + "/echo", "-X", "POST", "-H", "Content-Type: application/octet-stream",
             "--data-binary", f"@{body_file}")
    assert r.status == 200
    assert upstream.received[-1].body == binary, "a binary request body arrives intact"
    assert [x.method for x in upstream.received_for("/echo")[1:5]] == [
        "PUT", "PATCH", "DELETE", "POST"]
    assert rec.stop().rc == 0
    row = query_db(db_path, "SELECT request_body, typeof(request_body) AS t FROM exchanges "
                   "ORDER BY id DESC LIMIT 1")[0]
    assert row["t"] == "blob" and row["request_body"] == binary


def test_32_clients_recording_at_once(apisim, upstream, db_path):
    clients, per_client = 32, 4
    rec = apisim("record", "--upstream", upstream.url, "--db", db_path)

    def client(i):
        out = []
        for j in range(per_client):
            r = curl(f"{rec.url}/echo?client={i}&req={j}")
            out.append((r.status, r.json()["query"]))
        return out

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    for i, res in enumerate(results):
        assert res == [(200, f"client={i}&req={j}") for j in range(per_client)], res
    stopped = rec.stop()
    assert stopped.rc == 0, stopped.stderr
    rows = query_db(db_path, "SELECT query, seq, status FROM exchanges ORDER BY seq")
    assert len(rows) == clients * per_client, f"{len(rows)} exchanges stored"
    assert sorted(r["query"] for r in rows) == sorted(
        f"client={i}&req={j}" for i in range(clients) for j in range(per_client))
    assert all(r["status"] == 200 for r in rows)
    assert len({r["seq"] for r in rows}) == len(rows), "seq is unique within the session"
    for i in range(clients):  # each client's requests were sequential: their order is kept
        seqs = [r["seq"] for r in rows if r["query"].startswith(f"client={i}&")]
        mine = [r["query"] for r in rows if r["query"].startswith(f"client={i}&")]
        assert mine == [f"client={i}&req={j}" for j in range(per_client)], (mine, seqs)


# --- servers: signals, ls, streaming -------------------------------------------------------


@pytest.mark.parametrize("mode", ["record", "replay"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_stops_gracefully(apisim, upstream, db_path, mode, sig):
    _record(apisim, upstream, db_path, ["/json"])
    args = (["record", "--upstream", upstream.url] if mode == "record" else ["replay"])
    p = apisim(*args, "--db", db_path)
    assert curl(p.url + "/json").status == 200
    stopped = p.stop(sig)
    assert stopped.rc == 0, f"{mode} on {sig.name}: {stopped}"
    n = query_db(db_path, "SELECT count(*) FROM exchanges")[0][0]
    assert n == (2 if mode == "record" else 1)
    with pytest.raises(OSError):  # the port is closed
        socket.create_connection(("127.0.0.1", p.port), timeout=1).close()


def test_sigterm_lets_an_inflight_exchange_finish(apisim, upstream, db_path):
    rec = apisim("record", "--upstream", upstream.url, "--db", db_path)
    result = {}
    t = threading.Thread(target=lambda: result.update(
        r=curl(rec.url + "/slow?ms=700", check=False)))
    t.start()
    wait_until(lambda: upstream.received_for("/slow"), 5, what="upstream to receive /slow")
    rec.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "SIGTERM received" in rec.stderr_text(), 5, what="the SIGTERM log line")
    # Draining: a new connection is not served (it would otherwise be cut mid-answer).
    late = curl(rec.url + "/json", timeout=5, check=False)
    assert late.status == 0 and late.exit_code != 0, f"served while draining: {late.status}"
    stopped = rec.stop(signal.SIGTERM)
    t.join(10)
    assert stopped.rc == 0, stopped
    r = result["r"]
    assert r.status == 200 and r.json() == {"slept_ms": 700}, f"in-flight request: {r!r}"
    row = only_exchange(db_path, "/slow")
    assert row["status"] == 200 and row["response_body"] == '{"slept_ms": 700}'


def test_sigterm_in_replay_drains_delayed_requests_and_takes_no_new_ones(apisim, upstream,
                                                                         db_path):
    """Replay's thread pool: a request held by --latency finishes after SIGTERM, a new
    connection is not served, and the exit is clean (libmicrohttpd's quiesce raced here)."""
    _record(apisim, upstream, db_path, ["/json"])
    upstream.stop()
    rep = apisim("replay", "--db", db_path, "--latency", "fixed:700ms", "--threads", "2")
    result = {}
    t = threading.Thread(target=lambda: result.update(r=curl(rep.url + "/json", check=False)))
    t.start()
    wait_until(lambda: curl(rep.url + "/__apisim/requests/count?path=/json").json()["count"],
               5, what="the delayed request in the journal")
    assert "r" not in result, "answered before its 700 ms delay"
    rep.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "SIGTERM received" in rep.stderr_text(), 5, what="the SIGTERM log line")
    late = curl(rep.url + "/json", timeout=5, check=False)
    assert late.status == 0 and late.exit_code != 0, f"served while draining: {late.status}"
    stopped = rep.stop()
    t.join(10)
    assert stopped.rc == 0, stopped
    assert result["r"].status == 200 and result["r"].body == U.JSON_BODY, result["r"]


def test_ls_lists_every_exchange(apisim, upstream, db_path):
    _record(apisim, upstream, db_path, ["/json", "/status/404"], "--session", "alpha")
    rec = apisim("record", "--upstream", upstream.url, "--db", db_path, "--session", "beta")
    curl(rec.url + "/echo?q=1", *JSON_POST, "--data-binary", '{"k": 1}')
    assert rec.stop().rc == 0
    p = run_apisim("ls", "--db", db_path)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.rstrip("\n").split("\n")
    assert len(lines) == 1 + 3, f"header + 3 exchanges expected:\n{p.stdout}"
    header = re.split(r" {2,}", lines[0].strip())
    assert len(header) == 7, f"header columns: {header}"
    assert header[0].lower() == "id" and "method" in lines[0].lower()
    rows = {r["id"]: r for r in query_db(
        db_path, "SELECT id, session, method, path, query, status, "
        "length(response_body) AS n FROM exchanges")}
    seen = set()
    for line in lines[1:]:
        cols = re.split(r" {2,}", line.strip())
        assert len(cols) == 7, f"ls line {line!r} has {len(cols)} columns"
        ex = rows[int(cols[0])]
        seen.add(ex["id"])
        assert cols[1] == ex["session"] and cols[2] == ex["method"]
        assert ex["path"] in cols[3], f"URL column {cols[3]!r} vs path {ex['path']}"
        if ex["query"]:
            assert ex["query"] in cols[3]
        assert cols[4] == str(ex["status"])
        assert re.fullmatch(rf"{ex['n']}( ?B| bytes)?", cols[5]), (cols[5], ex["n"])
        assert re.search(r"\d", cols[6]), f"ttfb column {cols[6]!r}"
    assert seen == set(rows)
    beta = run_apisim("ls", "--db", db_path, "--session", "beta")
    assert beta.returncode == 0, beta.stderr
    blines = beta.stdout.rstrip("\n").split("\n")
    assert len(blines) == 2 and "/echo" in blines[1] and "beta" in blines[1], beta.stdout


def test_sse_stays_live_through_record(apisim, upstream, db_path):
    rec = apisim("record", "--upstream", upstream.url, "--db", db_path)
    with socket.create_connection(("127.0.0.1", rec.port), timeout=5) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /sse?events=3&gap_ms=300 HTTP/1.1\r\nHost: x\r\n"
                  b"Accept: text/event-stream\r\nConnection: close\r\n\r\n")
        buf, first_at = b"", None
        while buf.count(b"data: ") < 3:
            b = s.recv(65536)
            if not b:
                break
            buf += b
            if first_at is None and b"data: " in buf:
                first_at = time.monotonic()
    assert buf.count(b"data: ") == 3, f"stream through record: {buf!r}"
    # The upstream notes an event's time after writing it: the client can read the last
    # event before the note is made.
    sent = wait_until(lambda: len(upstream.sse_sent) == 3 and [t for _, t in upstream.sse_sent],
                      5, what="the upstream to note its 3 events")
    # The first event reaches the client while the upstream is still producing the rest
    # (the last one is sent 600 ms after the first).
    assert first_at < sent[-1] - 0.2, (
        f"first event arrived {first_at - t0:.3f} s after the request; upstream sent events "
        f"at {[round(t - t0, 3) for t in sent]} s")
    assert first_at - t0 < 0.45
    assert rec.stop().rc == 0
