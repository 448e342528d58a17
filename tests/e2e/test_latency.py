"""Issue 3, end to end: latency models of `apisim replay`, measured by real clients.

fixed (in us, ms and s), uniform within its bounds, lognormal around its median, --seed
determinism (same seed, same delays in the same order; another seed, others), recorded
(time to first byte, and an SSE stream's gaps between events within 20% of the recorded
ones), recorded*0.5, and 100 concurrent requests delayed 200 ms finishing together.

Recordings are made through the real binary from the stdlib upstream, which is stopped
before any replay. Tolerances are set for a loaded 2-core machine: a delay may come late by
scheduling, never early.
"""

import http.client
import socket
import statistics
import threading
import time
from urllib.parse import urlsplit

import pytest

import harness
import upstream as U
from harness import ApisimProcess, curl, query_db, timed_get

SSE_EVENTS, SSE_GAP_MS = 6, 200
SSE_PATH = f"/sse?events={SSE_EVENTS}&gap_ms={SSE_GAP_MS}"
SLOW_MS = 300


@pytest.fixture(scope="module")
def recording(tmp_path_factory, apisim_bin):
    """One recording of /json, /slow?ms=300 and an SSE stream with 200 ms between events,
    made through `apisim record`; the upstream is gone once it is made."""
    db = tmp_path_factory.mktemp("latency") / "rec.db"
    with harness.upstream_server() as up:
        with ApisimProcess(["record", "--upstream", up.url, "--db", db]) as rec:
            assert curl(rec.url + "/json").status == 200
            assert curl(rec.url + f"/slow?ms={SLOW_MS}").status == 200
            sse = curl(rec.url + SSE_PATH)
            assert sse.status == 200 and sse.body == U.sse_body(SSE_EVENTS), sse
            stopped = rec.stop()
            assert stopped.rc == 0, stopped.stderr
    return db


def delays(base_url, n, path="/json"):
    """n sequential GETs; their durations. Every one must answer 200 from the recording."""
    out = []
    for i in range(n):
        status, body, dt = timed_get(base_url, path)
        assert status == 200, f"request {i + 1} to {path}: status {status}, body {body[:200]!r}"
        out.append(dt)
    return out


def replay(db, *args):
    return ApisimProcess(["replay", "--db", db, *args])


def stop_ok(proc):
    stopped = proc.stop()
    assert stopped.rc == 0, f"{proc.args}: exit {stopped.rc}; stderr:\n{stopped.stderr}"


def fmt(xs):
    return "[" + ", ".join(f"{x * 1000:.0f}" for x in xs) + "] ms"


# --- fixed, uniform, lognormal -------------------------------------------------------------


@pytest.mark.parametrize("spec,seconds,n", [
    ("fixed:200ms", 0.2, 3),
    ("fixed:200000us", 0.2, 2),
    ("fixed:1s", 1.0, 1),
])
def test_fixed(recording, spec, seconds, n):
    rep = replay(recording, "--latency", spec)
    got = delays(rep.url, n)
    stop_ok(rep)
    assert all(d >= seconds - 0.01 for d in got), f"--latency {spec}: answered in {fmt(got)}"
    assert all(d < seconds + 0.4 for d in got), f"--latency {spec}: far too slow: {fmt(got)}"


def test_none_is_the_default_and_fast(recording):
    rep = replay(recording)
    got = delays(rep.url, 3)
    stop_ok(rep)
    assert max(got) < 0.15, f"no --latency: {fmt(got)}"


def test_uniform_within_bounds(recording):
    rep = replay(recording, "--latency", "uniform:100ms..300ms", "--seed", "5")
    got = delays(rep.url, 10)
    stop_ok(rep)
    assert all(d >= 0.095 for d in got), f"uniform:100ms..300ms: below 100 ms: {fmt(got)}"
    assert all(d <= 0.3 + 0.35 for d in got), f"uniform:100ms..300ms: above 300 ms: {fmt(got)}"
    assert max(got) - min(got) > 0.03, f"uniform:100ms..300ms: no spread at all: {fmt(got)}"


def test_lognormal_around_its_median(recording):
    rep = replay(recording, "--latency", "lognormal:40ms,150ms", "--seed", "3")
    got = delays(rep.url, 15)
    stop_ok(rep)
    med = statistics.median(got)
    assert 0.02 <= med <= 0.12, f"lognormal:40ms,150ms: median {med * 1000:.0f} ms: {fmt(got)}"
    assert max(got) - min(got) > 0.01, f"lognormal: no spread at all: {fmt(got)}"


# --- --seed --------------------------------------------------------------------------------

SEED_SPEC = "uniform:0ms..400ms"


def test_seed_determinism(recording):
    """Three runs with --seed 42 and one with --seed 43, 10 sequential requests each.

    Measured delays are the drawn delay plus scheduling noise that is never negative, so
    the same seed must give, request by request, delays of which at least two of the three
    runs agree within 30 ms (one run hit by a load spike cannot fail it; a seed that does
    not fix the draws can hardly pass it)."""
    runs = []
    for seed in ("42", "42", "42", "43"):
        rep = replay(recording, "--latency", SEED_SPEC, "--seed", seed)
        runs.append(delays(rep.url, 10))
        stop_ok(rep)
    same, other = runs[:3], runs[3]
    shown = "\n".join(f"  --seed {s} {fmt(r)}" for s, r in zip((42, 42, 42, 43), runs))
    assert max(same[0]) - min(same[0]) > 0.1, f"{SEED_SPEC} drew no spread:\n{shown}"
    for i in range(10):
        vals = sorted(r[i] for r in same)
        assert vals[1] - vals[0] <= 0.03 or vals[2] - vals[1] <= 0.03, (
            f"--seed 42 gave request {i + 1} different delays in three runs:\n{shown}")
    # The same order too: of two requests whose least measured delays are more than 60 ms
    # apart, the longer one is the longer one in at least two of the three runs.
    best = [min(r[i] for r in same) for i in range(10)]
    for i in range(10):
        for k in range(10):
            if best[i] - best[k] > 0.06:
                assert sum(r[i] > r[k] for r in same) >= 2, (
                    f"--seed 42 reordered requests {i + 1} and {k + 1}:\n{shown}")
    differ = sum(abs(x - y) > 0.06 for x, y in zip(best, other))
    assert differ >= 3, f"--seed 43 gave (nearly) the delays of --seed 42:\n{shown}"


# --- recorded --------------------------------------------------------------------------------


def recorded_timing(db, path, query):
    """(ttfb_us, [offset_us at which each SSE event was complete]) as recorded."""
    ex = query_db(db, "SELECT id, ttfb_us FROM exchanges WHERE path = ? AND query = ?",
                  path, query)
    assert len(ex) == 1, f"expected one recorded {path}?{query}, found {len(ex)}"
    chunks = query_db(db, "SELECT offset_us, size FROM chunks WHERE exchange_id = ? "
                          "ORDER BY idx", ex[0]["id"])
    ends, pos = [], 0
    for c in chunks:
        pos += c["size"]
        while len(ends) < SSE_EVENTS and pos >= len(U.sse_body(len(ends) + 1)):
            ends.append(c["offset_us"])
    return ex[0]["ttfb_us"], ends, len(chunks)


def sse_arrivals(base_url, path, timeout=15):
    """Send a GET for an SSE stream on a raw socket and timestamp the moment each event is
    complete. Returns (time request sent, [arrival times], all bytes)."""
    u = urlsplit(base_url)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        t0 = time.monotonic()
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nAccept: text/event-stream\r\n"
                  f"Connection: close\r\n\r\n".encode())
        raw, times = b"", []
        deadline = t0 + timeout
        while len(times) < SSE_EVENTS and time.monotonic() < deadline:
            b = s.recv(65536)
            if not b:
                break
            now = time.monotonic()
            raw += b
            head_end = raw.find(b"\r\n\r\n")
            done = raw[head_end + 4:].count(b"}\n\n") if head_end >= 0 else 0
            times += [now] * (done - len(times))
    assert raw.startswith(b"HTTP/1.1 200"), raw[:300]
    return t0, times, raw


@pytest.mark.parametrize("spec,factor", [("recorded", 1.0), ("recorded*0.5", 0.5)])
def test_recorded_sse_gaps(recording, spec, factor):
    query = SSE_PATH.split("?", 1)[1]
    _, ends, nchunks = recorded_timing(recording, "/sse", query)
    assert len(ends) == SSE_EVENTS and nchunks >= SSE_EVENTS, (
        f"the recording should hold one chunk per event: {nchunks} chunks, ends {ends}")
    rec_gaps = [(b - a) / 1e6 for a, b in zip(ends, ends[1:])]
    assert all(g > SSE_GAP_MS / 1000 * 0.8 for g in rec_gaps), f"recorded gaps {fmt(rec_gaps)}"

    want = [g * factor for g in rec_gaps]
    # One retry: a gap is measured by two recv() timestamps, and a load spike on this shared
    # machine can hold either one up by more than 20%; a model that does not pace the
    # stream fails both attempts.
    attempts = []
    for _ in range(2):
        rep = replay(recording, "--latency", spec)
        t0, times, raw = sse_arrivals(rep.url, SSE_PATH)
        stop_ok(rep)
        assert len(times) == SSE_EVENTS, f"--latency {spec}: {len(times)} events: {raw!r}"
        got = [b - a for a, b in zip(times, times[1:])]
        bad = [i for i, (g, w) in enumerate(zip(got, want)) if abs(g - w) > 0.2 * w]
        attempts.append(f"{fmt(got)} (off at gap(s) {bad})")
        if not bad:
            break
    assert not bad, (
        f"--latency {spec}: gaps between events {' then '.join(attempts)}; expected "
        f"{fmt(want)} within 20% (recorded {fmt(rec_gaps)})")
    first = times[0] - t0
    assert first < ends[0] / 1e6 * factor + 0.15, (
        f"--latency {spec}: first event after {first * 1000:.0f} ms; recorded at "
        f"{ends[0] / 1000:.0f} ms")


@pytest.mark.parametrize("spec,factor", [("recorded", 1.0), ("recorded*0.5", 0.5)])
def test_recorded_time_to_first_byte(recording, spec, factor):
    rows = query_db(recording, "SELECT ttfb_us FROM exchanges WHERE path = '/slow'")
    assert len(rows) == 1, f"expected one recorded /slow, found {len(rows)}"
    ttfb = rows[0]["ttfb_us"] / 1e6
    assert ttfb >= SLOW_MS / 1000 * 0.95, f"recorded ttfb of /slow?ms={SLOW_MS}: {ttfb:.3f} s"
    rep = replay(recording, "--latency", spec)
    got = delays(rep.url, 2, f"/slow?ms={SLOW_MS}")
    stop_ok(rep)
    want = ttfb * factor
    assert all(want * 0.9 <= d <= want * 1.2 + 0.1 for d in got), (
        f"--latency {spec}: /slow answered in {fmt(got)}; recorded ttfb {ttfb * 1000:.0f} ms "
        f"x {factor} = {want * 1000:.0f} ms")


# --- concurrency -----------------------------------------------------------------------------


def test_100_concurrent_delayed_requests(recording):
    n, delay = 100, 0.2
    rep = replay(recording, "--latency", "fixed:200ms")
    u = urlsplit(rep.url)
    barrier = threading.Barrier(n + 1)
    results = [None] * n

    def one(i):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
        try:
            barrier.wait(10)
            t0 = time.monotonic()
            conn.request("GET", "/json")
            resp = conn.getresponse()
            body = resp.read()
            results[i] = (resp.status, body, t0, time.monotonic())
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = (repr(e), b"", 0.0, 0.0)
        finally:
            conn.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait(10)
    start = time.monotonic()
    for t in threads:
        t.join(30)
    wall = time.monotonic() - start
    stop_ok(rep)
    failed = [(i, r[0]) for i, r in enumerate(results) if r is None or r[0] != 200]
    assert not failed, f"{len(failed)} of {n} requests did not get 200: {failed[:10]}"
    assert all(r[1] == U.JSON_BODY for r in results), "a replayed body differs"
    each = [r[3] - r[2] for r in results]
    assert min(each) >= delay - 0.01, f"a request was answered early: {min(each):.3f} s"
    assert wall < 1.5, (
        f"{n} concurrent requests delayed {delay * 1000:.0f} ms took {wall:.2f} s in all "
        f"(slowest single one {max(each):.2f} s): delays hold each other up")
