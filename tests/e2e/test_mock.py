"""Issue 4, end to end: `apisim mock`, its control API under /__apisim/ and the quota
fixture, driven over HTTP exactly as a test suite would (the curl CLI for every request).

Every test starts the real apisim binary ($APISIM_BIN) on 127.0.0.1:0.
"""

import base64
import json
import os
import re
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone

import pytest

from harness import curl, run_apisim

WINDOWS = ("five_hour", "seven_day", "seven_day_opus", "seven_day_sonnet")
BEARER = ("-H", "Authorization: Bearer test-token", "-H", "anthropic-beta: oauth-2025-04-20")
ISO_PLUS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# --- helpers --------------------------------------------------------------------------------


def api(srv, method, path, body=None, raw=None, token=None, check_status=None):
    """A control API call: `method` /__apisim/`path` with a JSON `body` (or `raw` bytes as
    they are). Returns the CurlResult; with check_status, asserts the status first."""
    args = ["-X", method]
    if token is not None:
        args += ["-H", f"X-Apisim-Token: {token}"]
    if body is not None:
        raw = json.dumps(body).encode()
    if raw is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    url = f"{srv.url}/__apisim/{path}"
    res = curl_stdin(url, args, raw)
    if check_status is not None:
        assert res.status == check_status, f"{method} /__apisim/{path}: {res!r}"
    return res


def curl_stdin(url, args, data):
    """harness.curl with `data` fed on stdin (so any bytes, even a leading '@', go as they
    are)."""
    if data is None:
        return curl(url, *args)
    with tempfile.NamedTemporaryFile(prefix="apisim-body-", delete=False) as f:
        f.write(data)
        name = f.name
    try:
        args = [a if a != "@-" else f"@{name}" for a in args]
        return curl(url, *args)
    finally:
        os.unlink(name)


def add_stub(srv, stub, token=None):
    res = api(srv, "POST", "stubs", stub, token=token)
    assert res.status == 201, f"registering {stub}: {res!r}"
    sid = res.json()["id"]
    assert isinstance(sid, int)
    return sid


def get(srv, path, *args):
    return curl(srv.url + path, *args)


def timed(fn, *a, **kw):
    t0 = time.monotonic()
    res = fn(*a, **kw)
    return res, time.monotonic() - t0


def parse_plus(s):
    assert ISO_PLUS.match(s), f"resets_at {s!r} is not ISO-8601 UTC with +00:00"
    return datetime.fromisoformat(s)


@pytest.fixture
def mock(apisim):
    return apisim("mock")


# --- stubs: register and fetch --------------------------------------------------------------


def test_register_and_fetch_json(mock):
    sid = add_stub(mock, {"method": "GET", "path": "/v1/items", "status": 201,
                          "headers": [["X-Thing", "a"], ["Cache-Control", "no-store"]],
                          "json": {"items": [1, 2], "ok": True}})
    res = get(mock, "/v1/items")
    assert res.status == 201
    assert res.header("x-thing") == "a" and res.header("cache-control") == "no-store"
    assert res.content_type == "application/json"
    assert res.json() == {"items": [1, 2], "ok": True}
    assert res.header("x-apisim-miss") is None
    # The journal says which stub answered.
    journal = api(mock, "GET", "requests?path=/v1/items", check_status=200).json()
    assert [e["matched"] for e in journal] == [sid]


def test_register_text_and_base64_bodies(mock):
    add_stub(mock, {"method": "POST", "path": "/text", "body": "plain text\n",
                    "headers": [["Content-Type", "text/plain"]]})
    blob = bytes(range(256)) * 3
    add_stub(mock, {"method": "GET", "path": "/blob",
                    "body_base64": base64.b64encode(blob).decode()})
    t = get(mock, "/text", "-X", "POST", "--data-binary", "x")
    assert t.status == 200 and t.body == b"plain text\n" and t.content_type == "text/plain"
    b = get(mock, "/blob")
    assert b.status == 200 and b.body == blob


def test_status_defaults_to_200_and_method_is_part_of_the_route(mock):
    add_stub(mock, {"method": "get", "path": "/only-get", "body": "got"})
    assert get(mock, "/only-get").status == 200
    miss = get(mock, "/only-get", "-X", "POST")
    assert miss.status == 404 and miss.header("x-apisim-miss") == "1"


def test_later_stub_wins(mock):
    add_stub(mock, {"method": "GET", "path": "/w", "body": "first"})
    add_stub(mock, {"method": "GET", "path": "/w", "body": "second", "status": 202})
    res = get(mock, "/w")
    assert (res.status, res.body) == (202, b"second")


def test_sequence_of_three_then_last_repeats(mock):
    add_stub(mock, {"method": "POST", "path": "/seq", "sequence": [
        {"status": 500, "json": {"n": 1}},
        {"status": 503, "json": {"n": 2}, "headers": [["Retry-After", "1"]]},
        {"json": {"n": 3}},
    ]})
    got = [get(mock, "/seq", "-X", "POST") for _ in range(5)]
    assert [r.status for r in got] == [500, 503, 200, 200, 200]
    assert [r.json()["n"] for r in got] == [1, 2, 3, 3, 3]
    assert got[1].header("retry-after") == "1" and got[0].header("retry-after") is None


def test_delay_ms_is_measured(mock):
    add_stub(mock, {"method": "GET", "path": "/slow", "body": "late", "delay_ms": 400})
    add_stub(mock, {"method": "GET", "path": "/fast", "body": "now"})
    res, took = timed(get, mock, "/slow")
    assert res.body == b"late"
    assert took >= 0.4, f"answered after {took:.3f} s, before the 400 ms delay"
    assert took < 5, f"answered after {took:.3f} s"
    # The delay lives in the stub: the other route answers at once.
    res, took_fast = timed(get, mock, "/fast")
    assert res.body == b"now" and took_fast < 0.4


def test_delay_in_a_sequence(mock):
    add_stub(mock, {"method": "GET", "path": "/d", "sequence": [
        {"body": "a", "delay_ms": 300}, {"body": "b"}]})
    first, t1 = timed(get, mock, "/d")
    second, t2 = timed(get, mock, "/d")
    assert first.body == b"a" and t1 >= 0.3
    assert second.body == b"b" and t2 < 0.3


# --- journal, count, reset ------------------------------------------------------------------


def test_journal_contents_and_lower_case_headers(mock):
    sid = add_stub(mock, {"method": "POST", "path": "/j", "json": {"ok": True}})
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    get(mock, "/j?b=2&a=1", "-X", "POST", "-H", "X-Custom-Header: Value One",
        "-H", "Content-Type: application/json", "--data-binary", '{"q": 1}')
    get(mock, "/nothing-here")  # a miss is journaled too
    after = datetime.now(timezone.utc) + timedelta(seconds=1)
    journal = api(mock, "GET", "requests", check_status=200).json()
    assert isinstance(journal, list) and len(journal) == 2
    first, miss = journal
    assert first["method"] == "POST" and first["path"] == "/j"
    assert first["query"] == "b=2&a=1"
    assert first["body"] == '{"q": 1}'
    assert first["matched"] == sid
    hdrs = first["headers"]
    assert hdrs["x-custom-header"] == "Value One"
    assert hdrs["content-type"] == "application/json"
    assert all(k == k.lower() for k in hdrs), f"header names not lower-case: {list(hdrs)}"
    assert ISO_MS_Z.match(first["received_at"]), first["received_at"]
    at = datetime.fromisoformat(first["received_at"].replace("Z", "+00:00"))
    assert before <= at <= after
    assert miss["path"] == "/nothing-here" and miss["matched"] is None
    assert first["id"] < miss["id"]
    # Filters, and requests to the control API are not journaled.
    only = api(mock, "GET", "requests?method=POST&path=%2Fj", check_status=200).json()
    assert [e["path"] for e in only] == ["/j"]
    assert api(mock, "GET", "requests?method=GET&path=/j", check_status=200).json() == []


def test_journal_binary_body_is_base64(mock):
    blob = bytes([0, 255, 1, 254])
    curl_stdin(mock.url + "/bin", ["-X", "PUT", "--data-binary", "@-"], blob)
    (entry,) = api(mock, "GET", "requests?path=/bin", check_status=200).json()
    assert "body" not in entry or entry["body"] is None
    assert base64.b64decode(entry["body_base64"]) == blob


def test_count(mock):
    add_stub(mock, {"method": "GET", "path": "/c", "body": "x"})
    for _ in range(3):
        get(mock, "/c")
    get(mock, "/c", "-X", "DELETE")
    get(mock, "/other")
    count = api(mock, "GET", "requests/count", check_status=200).json()
    assert count == {"count": 5}
    assert api(mock, "GET", "requests/count?path=/c").json() == {"count": 4}
    assert api(mock, "GET", "requests/count?method=GET&path=/c").json() == {"count": 3}
    assert api(mock, "GET", "requests/count?method=PATCH").json() == {"count": 0}


def test_reset_clears_stubs_journal_and_sequences(mock):
    add_stub(mock, {"method": "GET", "path": "/r", "sequence": [{"body": "1"}, {"body": "2"}]})
    assert get(mock, "/r").body == b"1"
    assert api(mock, "GET", "health").json()["stubs"] >= 1
    res = api(mock, "POST", "reset", check_status=200)
    assert res.content_type == "application/json"
    assert api(mock, "GET", "requests").json() == []
    assert api(mock, "GET", "requests/count").json() == {"count": 0}
    gone = get(mock, "/r")
    assert gone.status == 404 and gone.header("x-apisim-miss") == "1"
    # A sequence registered again starts from its first answer.
    add_stub(mock, {"method": "GET", "path": "/r", "sequence": [{"body": "1"}, {"body": "2"}]})
    assert [get(mock, "/r").body for _ in range(3)] == [b"1", b"2", b"2"]


def test_health(mock):
    h = api(mock, "GET", "health", check_status=200).json()
    assert h["status"] == "ok" and h["mode"] == "mock"
    assert h["exchanges"] == 0 and h["stubs"] == 0 and h["requests"] == 0
    assert h["misses"] == 0
    add_stub(mock, {"method": "GET", "path": "/h", "body": "x"})
    get(mock, "/h")
    get(mock, "/missing")
    h = api(mock, "GET", "health").json()
    assert h["stubs"] == 1 and h["requests"] == 2 and h["misses"] == 1


# --- placeholders ---------------------------------------------------------------------------


def test_placeholders(mock):
    body = ("now={{now}}|later={{now+2h}}|soon={{now+90s}}|ago={{now-1d}}|"
            "epoch={{now_epoch}}|epoch_ms={{now_epoch_ms}}|epoch_later={{now_epoch+10m}}|"
            "path={{request.path}}|id={{request.query.id}}|none=[{{request.query.zzz}}]|"
            "keep={{unknown.thing}}")
    add_stub(mock, {"method": "GET", "path": "/tpl", "body": body})
    t0 = time.time()
    res = get(mock, "/tpl?id=a%2Fb&x=1")
    t1 = time.time()
    assert res.status == 200
    f = dict(part.split("=", 1) for part in res.body.decode().split("|"))
    assert f["path"] == "/tpl" and f["id"] == "a%2Fb" and f["none"] == "[]"
    assert f["keep"] == "{{unknown.thing}}"
    for name in ("now", "later", "soon", "ago"):
        assert ISO_MS_Z.match(f[name]), f"{name}: {f[name]!r}"
    now = datetime.fromisoformat(f["now"].replace("Z", "+00:00")).timestamp()
    assert t0 - 1 <= now <= t1 + 1
    stamp = lambda k: datetime.fromisoformat(f[k].replace("Z", "+00:00")).timestamp()  # noqa
    assert stamp("later") - now == pytest.approx(7200, abs=0.01)
    assert stamp("soon") - now == pytest.approx(90, abs=0.01)
    assert stamp("ago") - now == pytest.approx(-86400, abs=0.01)
    assert int(f["epoch"]) == int(now)
    assert int(f["epoch_ms"]) // 1000 == int(now)
    assert int(f["epoch_later"]) == int(now) + 600


def test_placeholders_are_expanded_per_request(mock):
    add_stub(mock, {"method": "GET", "path": "/echo-path/a", "json": {
        "p": "{{request.path}}", "q": "{{request.query.q}}", "t": "{{now_epoch_ms}}"}})
    one = get(mock, "/echo-path/a?q=first").json()
    two = get(mock, "/echo-path/a?q=second").json()
    assert (one["p"], one["q"], two["q"]) == ("/echo-path/a", "first", "second")
    assert int(two["t"]) >= int(one["t"])


# --- the quota fixture ----------------------------------------------------------------------

# What each preset answers an authorised GET /api/oauth/usage: status, then for 200 the
# named windows as {window: (utilization, resets in seconds or None)}.
PRESETS = {
    "ok": (200, {"five_hour": (12.0, 3 * 3600), "seven_day": (30.0, 4 * 86400)}),
    "near-limit": (200, {"five_hour": (86.0, 3600), "seven_day": (40.0, 4 * 86400)}),
    "exhausted": (200, {"five_hour": (100.0, 2 * 3600)}),
    "long-window-exhausted": (200, {"seven_day": (100.0, 3 * 86400),
                                    "five_hour": (20.0, 3 * 3600)}),
    "unknown-reset": (200, {"five_hour": (95.0, None)}),
    "rate-limited": (429, None),
    "server-error": (503, None),
    "slow": (200, {"five_hour": (12.0, 3 * 3600), "seven_day": (30.0, 4 * 86400)}),
    "unauthorized": (401, None),
}


def assert_usage(res, preset, t_before, t_after):
    """res is what `preset` answers an authorised request made between t_before and
    t_after (epoch seconds)."""
    status, windows = PRESETS[preset]
    assert res.status == status, f"{preset}: {res!r}"
    assert res.content_type == "application/json"
    body = res.json()
    if status == 429:
        assert res.header("retry-after") == "30"
        assert body["error"]["type"] == "rate_limit_error"
        return
    assert res.header("retry-after") is None
    if status != 200:
        assert body["type"] == "error" and "message" in body["error"]
        return
    assert set(body) == set(WINDOWS), f"{preset}: windows {sorted(body)}"
    for name in WINDOWS:
        w = body[name]
        assert set(w) == {"utilization", "resets_at"}, f"{preset} {name}: {w}"
        if name not in windows:
            assert w == {"utilization": None, "resets_at": None}, f"{preset} {name}: {w}"
            continue
        util, resets_in = windows[name]
        assert isinstance(w["utilization"], float) and w["utilization"] == util, \
            f"{preset} {name}: {w}"
        if resets_in is None:
            assert w["resets_at"] is None
        else:
            at = parse_plus(w["resets_at"]).timestamp()
            assert t_before + resets_in - 1 <= at <= t_after + resets_in + 1, \
                f"{preset} {name}: resets_at {w['resets_at']} is not now + {resets_in} s"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_quota_preset_from_the_command_line(apisim, preset):
    srv = apisim("mock", "--quota", preset)
    t0 = time.time()
    res, took = timed(get, srv, "/api/oauth/usage", *BEARER)
    t1 = time.time()
    assert_usage(res, preset, t0, t1)
    if preset == "slow":
        assert took >= 2.0, f"slow answered after {took:.3f} s, before its 2 s default"
    else:
        assert took < 2.0
    # Without a bearer token every preset answers 401, as the real endpoint does.
    noauth = get(srv, "/api/oauth/usage")
    assert noauth.status == 401, f"{preset} without a token: {noauth!r}"
    assert noauth.json()["error"]["type"] == "authentication_error"
    basic = get(srv, "/api/oauth/usage", "-H", "Authorization: Basic dTpw")
    assert basic.status == 401


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_quota_preset_from_the_control_api(mock, preset):
    body = {"preset": preset}
    if preset == "slow":
        body["delay_ms"] = 300
    active = api(mock, "POST", "fixtures/quota", body, check_status=200).json()
    assert active["preset"] == preset and active["active"] is True
    assert active["path"] == "/api/oauth/usage"
    t0 = time.time()
    res, took = timed(get, mock, "/api/oauth/usage", *BEARER)
    t1 = time.time()
    assert_usage(res, preset, t0, t1)
    if preset == "slow":
        assert took >= 0.3, f"slow answered after {took:.3f} s, before its 300 ms"
    assert get(mock, "/api/oauth/usage").status == 401


def test_quota_requests_are_journaled(mock):
    api(mock, "POST", "fixtures/quota", {"preset": "exhausted"}, check_status=200)
    get(mock, "/api/oauth/usage", *BEARER)
    get(mock, "/api/oauth/usage")
    journal = api(mock, "GET", "requests?path=/api/oauth/usage").json()
    assert len(journal) == 2
    assert journal[0]["headers"]["anthropic-beta"] == "oauth-2025-04-20"


def test_quota_explicit_windows(mock):
    active = api(mock, "POST", "fixtures/quota", {"windows": {
        "five_hour": {"utilization": 95, "resets_in_s": 3600},
        "seven_day_opus": {"utilization": 42.5, "resets_in_s": None},
    }}, check_status=200).json()
    assert active["preset"] == "windows"
    t0 = time.time()
    body = get(mock, "/api/oauth/usage", *BEARER).json()
    t1 = time.time()
    assert set(body) == set(WINDOWS)
    assert body["five_hour"]["utilization"] == 95.0
    at = parse_plus(body["five_hour"]["resets_at"]).timestamp()
    assert t0 + 3599 <= at <= t1 + 3601
    assert body["seven_day_opus"] == {"utilization": 42.5, "resets_at": None}
    assert body["seven_day"] == {"utilization": None, "resets_at": None}
    assert body["seven_day_sonnet"] == {"utilization": None, "resets_at": None}


def test_quota_replaced_then_turned_off(apisim):
    srv = apisim("mock", "--quota", "ok")
    assert get(srv, "/api/oauth/usage", *BEARER).json()["five_hour"]["utilization"] == 12.0
    api(srv, "POST", "fixtures/quota", {"preset": "server-error"}, check_status=200)
    assert get(srv, "/api/oauth/usage", *BEARER).status == 503
    off = api(srv, "DELETE", "fixtures/quota", check_status=200).json()
    assert off == {"active": False}
    res = get(srv, "/api/oauth/usage", *BEARER)
    assert res.status == 404 and res.header("x-apisim-miss") == "1"


def test_unknown_quota_preset_on_the_command_line_exits_2():
    p = run_apisim("mock", "--quota", "bogus", "--listen", "127.0.0.1:0", timeout=15)
    assert p.returncode == 2, p
    assert "bogus" in p.stderr and "near-limit" in p.stderr and "unauthorized" in p.stderr
    assert "listening on" not in p.stdout


# --- admin token ----------------------------------------------------------------------------


def test_admin_token_is_required_when_given(apisim):
    srv = apisim("mock", "--admin-token", "s3cret")
    for token in (None, "wrong", "S3CRET"):
        res = api(srv, "GET", "health", token=token)
        assert res.status in (401, 403), f"token {token!r}: {res!r}"
        assert "error" in res.json()
        res = api(srv, "POST", "stubs", {"method": "GET", "path": "/t", "body": "x"},
                  token=token)
        assert res.status in (401, 403), f"token {token!r}: {res!r}"
    # Nothing was registered by the refused calls.
    assert get(srv, "/t").status == 404
    assert api(srv, "GET", "health", token="s3cret", check_status=200).json()["stubs"] == 0
    add_stub(srv, {"method": "GET", "path": "/t", "body": "x"}, token="s3cret")
    # Mocked routes need no token.
    assert get(srv, "/t").body == b"x"


# --- bad control API requests ---------------------------------------------------------------

BAD = [
    # (endpoint, raw body, what the error must name)
    ("stubs", b"not json", "not JSON"),
    ("stubs", b'{"method": "GET", "path": "/x", ', "not JSON"),
    ("stubs", b"", "empty"),
    ("stubs", b"[1, 2]", "expected a JSON object"),
    ("stubs", b'"GET /x"', "expected a JSON object"),
    ("stubs", b'{"path": "/x"}', 'field "method"'),
    ("stubs", b'{"method": "GET"}', 'field "path"'),
    ("stubs", b'{"method": 5, "path": "/x"}', 'field "method"'),
    ("stubs", b'{"method": "GET", "path": "x"}', 'field "path"'),
    ("stubs", b'{"method": "GET", "path": "/x?a=1"}', 'field "path"'),
    ("stubs", b'{"method": "GET", "path": "/__apisim/health"}', 'field "path"'),
    ("stubs", b'{"method": "GET", "path": "/x", "status": "200"}',
     'field "status": expected an integer 100..599'),
    ("stubs", b'{"method": "GET", "path": "/x", "status": 99}', 'field "status"'),
    ("stubs", b'{"method": "GET", "path": "/x", "status": 200.5}', 'field "status"'),
    ("stubs", b'{"method": "GET", "path": "/x", "headers": {"a": "b"}}', 'field "headers"'),
    ("stubs", b'{"method": "GET", "path": "/x", "headers": [["a"]]}', 'field "headers[0]"'),
    ("stubs", b'{"method": "GET", "path": "/x", "headers": [["ok", "v"], ["a b", "v"]]}',
     'field "headers[1]"'),
    ("stubs", b'{"method": "GET", "path": "/x", "headers": [["a", "v\\r\\nX: y"]]}',
     'field "headers[0]"'),
    ("stubs", b'{"method": "GET", "path": "/x", "body": 5}', 'field "body"'),
    ("stubs", b'{"method": "GET", "path": "/x", "body_base64": "!!!"}', 'field "body_base64"'),
    ("stubs", b'{"method": "GET", "path": "/x", "json": {}, "body": "x"}', "only one of"),
    ("stubs", b'{"method": "GET", "path": "/x", "delay_ms": -5}', 'field "delay_ms"'),
    ("stubs", b'{"method": "GET", "path": "/x", "delay_ms": "5"}', 'field "delay_ms"'),
    ("stubs", b'{"method": "GET", "path": "/x", "stauts": 200}', 'field "stauts"'),
    ("stubs", b'{"method": "GET", "path": "/x", "sequence": []}', 'field "sequence"'),
    ("stubs", b'{"method": "GET", "path": "/x", "sequence": {}}', 'field "sequence"'),
    ("stubs", b'{"method": "GET", "path": "/x", "sequence": [{"status": 200}, 7]}',
     'field "sequence[1]"'),
    ("stubs", b'{"method": "GET", "path": "/x", "sequence": [{"status": "x"}]}',
     'field "sequence[0].status"'),
    ("stubs", b'{"method": "GET", "path": "/x", "sequence": [{"path": "/y"}]}',
     'field "sequence[0].path"'),
    ("stubs", b'{"method": "GET", "path": "/x", "status": 200, "sequence": [{}]}',
     'field "status"'),
    ("fixtures/quota", b"{nope", "not JSON"),
    ("fixtures/quota", b"[]", "expected a JSON object"),
    ("fixtures/quota", b"{}", "preset"),
    ("fixtures/quota", b'{"preset": "almost-ok"}', 'field "preset"'),
    ("fixtures/quota", b'{"preset": 3}', 'field "preset"'),
    ("fixtures/quota", b'{"preset": "slow", "delay_ms": "2s"}', 'field "delay_ms"'),
    ("fixtures/quota", b'{"windows": {"five_hour": {"utilization": "95"}}}',
     'field "windows.five_hour.utilization"'),
    ("fixtures/quota", b'{"windows": {"six_hour": {}}}', 'field "windows.six_hour"'),
    ("fixtures/quota", b'{"windows": {"five_hour": {"resets_in_s": 1.5}}}',
     'field "windows.five_hour.resets_in_s"'),
]


def test_bad_control_api_bodies_answer_400_and_the_server_keeps_serving(mock):
    add_stub(mock, {"method": "GET", "path": "/alive", "body": "yes"})
    for endpoint, raw, names in BAD:
        res = api(mock, "POST", endpoint, raw=raw)
        assert res.status == 400, f"POST {endpoint} {raw!r}: {res!r}"
        assert res.content_type == "application/json"
        err = res.json()["error"]
        assert err.startswith(endpoint + ":"), err
        assert names in err, f"POST {endpoint} {raw!r}: {err!r}"
    # Nothing bad was registered, and the server still answers everything.
    assert get(mock, "/alive").body == b"yes"
    assert get(mock, "/x").status == 404
    h = api(mock, "GET", "health", check_status=200).json()
    assert h["stubs"] == 1
    assert mock.running


def test_bad_journal_query_answers_400(mock):
    res = api(mock, "GET", "requests?paht=/x")
    assert res.status == 400 and "paht" in res.json()["error"]
    res = api(mock, "GET", "requests/count?mthod=GET")
    assert res.status == 400 and "mthod" in res.json()["error"]


def test_unknown_endpoint_and_wrong_method(mock):
    res = api(mock, "GET", "nope")
    assert res.status == 404 and "/__apisim/nope" in res.json()["error"]
    res = api(mock, "GET", "stubs")
    assert res.status == 405 and res.header("allow") == "POST"
    res = api(mock, "POST", "health")
    assert res.status == 405 and res.header("allow") == "GET"
    res = api(mock, "PUT", "fixtures/quota")
    assert res.status == 405 and "DELETE" in res.header("allow")


def test_stubs_cannot_take_over_the_control_api(mock):
    # Only a stub under a reserved path could shadow the control API; it is refused.
    res = api(mock, "POST", "stubs", {"method": "GET", "path": "/__apisim/health", "body": "x"})
    assert res.status == 400
    assert api(mock, "GET", "health", check_status=200).json()["status"] == "ok"


# --- --stubs FILE ---------------------------------------------------------------------------


def test_stubs_file_is_loaded_and_survives_reset(apisim, tmp_path):
    f = tmp_path / "stubs.json"
    f.write_text(json.dumps([
        {"method": "GET", "path": "/from-file", "json": {"file": True}},
        {"method": "POST", "path": "/file-seq", "sequence": [{"status": 201}, {"status": 409}]},
        {"method": "GET", "path": "/file-tpl", "body": "{{request.query.n}}"},
    ]))
    srv = apisim("mock", "--stubs", f)
    assert get(srv, "/from-file").json() == {"file": True}
    assert [get(srv, "/file-seq", "-X", "POST").status for _ in range(3)] == [201, 409, 409]
    assert get(srv, "/file-tpl?n=7").body == b"7"
    assert api(srv, "GET", "health").json()["stubs"] == 3, "a sequence is one stub"
    add_stub(srv, {"method": "GET", "path": "/runtime", "body": "r"})
    api(srv, "POST", "reset", check_status=200)
    # File stubs stay (their sequence restarts), runtime stubs go.
    assert get(srv, "/from-file").json() == {"file": True}
    assert get(srv, "/file-seq", "-X", "POST").status == 201
    assert get(srv, "/runtime").status == 404
    # A runtime stub for a file route wins until reset.
    add_stub(srv, {"method": "GET", "path": "/from-file", "body": "override"})
    assert get(srv, "/from-file").body == b"override"
    api(srv, "POST", "reset", check_status=200)
    assert get(srv, "/from-file").json() == {"file": True}


@pytest.mark.parametrize("content, names", [
    ('[{"method": "GET", "path": "/a"}, {"method": "GET", "path": "/b", "status": "x"}]',
     "[1].status"),
    ('[{"method": "GET", "path": "/a", "sequence": [{"body": 1}]}]', "[0].sequence[0].body"),
    ('[{"path": "/a"}]', "[0].method"),
    ('{"method": "GET", "path": "/a"}', "expected a JSON array"),
    ("[{", "not JSON"),
])
def test_bad_stubs_file_exits_2_naming_the_file(tmp_path, content, names):
    f = tmp_path / "my-stubs.json"
    f.write_text(content)
    try:
        p = run_apisim("mock", "--stubs", f, "--listen", "127.0.0.1:0", timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("apisim mock with a bad --stubs file kept running")
    assert p.returncode == 2, p
    assert "my-stubs.json" in p.stderr and names in p.stderr, p.stderr
    assert "listening on" not in p.stdout


def test_missing_stubs_file_exits_2(tmp_path):
    p = run_apisim("mock", "--stubs", tmp_path / "absent.json", "--listen", "127.0.0.1:0",
                   timeout=15)
    assert p.returncode == 2 and "absent.json" in p.stderr, p


# --- the control API on other servers -------------------------------------------------------


def test_control_api_on_a_recorder_is_not_forwarded(apisim, upstream, db_path):
    srv = apisim("record", "--upstream", upstream.url, "--db", db_path)
    h = api(srv, "GET", "health", check_status=200).json()
    assert h["status"] == "ok"
    api(srv, "GET", "nope")
    assert upstream.received == [], "the control API reached the upstream"
    assert srv.running
