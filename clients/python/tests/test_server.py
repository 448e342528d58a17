"""apisim.Server and ResponseSpec against the real binary: every control method."""

import base64
import http.client
import json
import re
import time
from datetime import datetime, timedelta, timezone

import pytest

from _support import fetch
from apisim import ResponseSpec, Server

USAGE = "/api/oauth/usage"
BEARER = {"Authorization": "Bearer x", "anthropic-beta": "oauth-2025-04-20"}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def server():
    with Server() as s:
        yield s


def test_server_starts_on_port_0_answers_health_and_stops_with_exit_0():
    s = Server()
    with s:
        assert re.match(r"^http://127\.0\.0\.1:\d+$", s.url)
        assert s.port > 0 and s.running
        health = s.health()
        assert health["status"] == "ok" and health["mode"] == "mock"
    assert not s.running
    assert s.returncode == 0


def test_mock_and_replay_constructors_start_the_process(tmp_path):
    s = Server.mock()
    try:
        assert s.running and s.health()["mode"] == "mock"
    finally:
        assert s.stop() == 0
    with pytest.raises(ValueError, match="db="):
        Server("replay")


def test_register_json_body_with_status_and_repeated_headers(server):
    stub_id = server.register("GET", "/v1/thing", ResponseSpec(
        status=201, body={"a": [1, 2]}, headers=[("X-One", "1"), ("X-One", "2")]))
    assert isinstance(stub_id, int)
    r = fetch(server.url + "/v1/thing")
    assert r.status == 201
    assert r.json() == {"a": [1, 2]}
    assert r.header("content-type").startswith("application/json")
    assert [v for k, v in r.headers if k.lower() == "x-one"] == ["1", "2"]


def test_register_text_bytes_and_empty_bodies(server):
    server.register("GET", "/text", ResponseSpec(body="plain words",
                                                 headers={"Content-Type": "text/plain"}))
    server.register("GET", "/bytes", ResponseSpec(body=b"\x00\xffraw\x80"))
    server.register("DELETE", "/gone", status=204)   # keyword arguments of ResponseSpec
    server.register("GET", "/teapot", 418)            # a bare status
    text = fetch(server.url + "/text")
    assert (text.status, text.body, text.header("content-type")) == (
        200, b"plain words", "text/plain")
    assert fetch(server.url + "/bytes").body == b"\x00\xffraw\x80"
    gone = fetch(server.url + "/gone", method="DELETE")
    assert (gone.status, gone.body) == (204, b"")
    assert fetch(server.url + "/teapot").status == 418


def test_response_spec_serialises_each_body_kind():
    assert ResponseSpec(body={"k": 1}).to_json() == {
        "status": 200, "headers": [], "json": {"k": 1}, "delay_ms": 0}
    assert ResponseSpec(body="t", headers=[("A", "b")]).to_json()["body"] == "t"
    assert ResponseSpec(body=b"\x01").to_json()["body_base64"] == base64.b64encode(
        b"\x01").decode()
    assert "json" not in ResponseSpec(status=204).to_json()
    with pytest.raises(TypeError):
        ResponseSpec(body=3.5)
    with pytest.raises(TypeError):
        ResponseSpec(headers=[("only-a-name",)])


def test_response_spec_faults_and_dribble(server):
    """fault=, after_bytes= and dribble= go through to apisim: a sequence that fails twice
    (reset, then cut after 3 bytes), then answers, dribbled."""
    assert ResponseSpec(body="abcdef", fault="reset-mid-body", after_bytes=3).to_json() == {
        "status": 200, "headers": [], "body": "abcdef", "delay_ms": 0,
        "fault": "reset-mid-body", "after_bytes": 3}
    assert ResponseSpec(body="x", dribble={"chunks": 2, "over_ms": 10}).to_json()[
        "dribble"] == {"chunks": 2, "over_ms": 10}
    with pytest.raises(TypeError):
        ResponseSpec(fault=1)
    with pytest.raises(TypeError):
        ResponseSpec(dribble=(2,))
    server.register_sequence("GET", "/flaky", [
        ResponseSpec(fault="reset"),
        ResponseSpec(body="abcdef", fault="reset-mid-body", after_bytes=3),
        ResponseSpec(body="abcdef", dribble=(3, 300)),
    ])
    host, port = server.url.rsplit("/", 1)[1].split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    with pytest.raises(ConnectionResetError):
        c.request("GET", "/flaky")
        c.getresponse()
    c.close()
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("GET", "/flaky")
    r = c.getresponse()
    assert r.getheader("content-length") == "6"
    with pytest.raises(ConnectionResetError):
        r.read()
    c.close()
    t0 = time.monotonic()
    r = fetch(server.url + "/flaky")
    assert r.body == b"abcdef" and time.monotonic() - t0 >= 0.3
    assert [q.get("fault") for q in server.get_requests("GET", "/flaky")] == [
        "reset", "reset-mid-body", None]
    assert server.health()["faults"] == 2


def test_register_delay_ms_delays_the_answer(server):
    server.register("GET", "/slow", ResponseSpec(body="late", delay_ms=300))
    t0 = time.monotonic()
    r = fetch(server.url + "/slow")
    elapsed = time.monotonic() - t0
    assert r.body == b"late"
    assert elapsed >= 0.3, f"answered after {elapsed:.3f} s, expected >= 0.3 s"


def test_quota_guard_polls_a_sequence_of_two_answers(server):
    """What a quota guard sees: first a window at 50 %, then a 429; the last answer repeats."""
    resets = "2026-11-24T17:00:00+00:00"
    seq_id = server.register_sequence("GET", USAGE, [
        ResponseSpec(body={"five_hour": {"utilization": 50.0, "resets_at": resets},
                           "seven_day": {"utilization": None, "resets_at": None}}),
        ResponseSpec(status=429, headers=[("retry-after", "30")],
                     body={"type": "error", "error": {"type": "rate_limit_error",
                                                      "message": "slow down"}}),
    ])
    assert isinstance(seq_id, int)
    answers = [fetch(server.url + USAGE, headers=BEARER) for _ in range(3)]
    assert answers[0].status == 200
    assert answers[0].json()["five_hour"] == {"utilization": 50.0, "resets_at": resets}
    assert [a.status for a in answers[1:]] == [429, 429]
    assert answers[1].header("retry-after") == "30"
    assert answers[2].json()["error"]["type"] == "rate_limit_error"
    assert server.request_count("GET", USAGE) == 3
    polls = server.get_requests("GET", USAGE)
    assert [p["headers"]["authorization"] for p in polls] == ["Bearer x"] * 3
    assert polls[0]["headers"]["anthropic-beta"] == "oauth-2025-04-20"


def test_get_requests_is_the_journal_with_lower_case_headers(server):
    stub_id = server.register("POST", "/v1/messages", ResponseSpec(body={"ok": True}))
    r = fetch(server.url + "/v1/messages?b=2&a=1", method="POST",
              body={"model": "m", "max_tokens": 5}, headers={"X-Custom-Thing": "yes"})
    assert r.status == 200
    fetch(server.url + "/v1/unknown")                  # a miss
    fetch(server.url + "/v1/raw", method="PUT", body=b"\xff\xfe\x00")
    [req] = server.get_requests("POST", "/v1/messages")
    assert req["method"] == "POST" and req["path"] == "/v1/messages"
    assert req["query"] == "b=2&a=1"
    assert all(name == name.lower() for name in req["headers"])
    assert req["headers"]["x-custom-thing"] == "yes"
    assert json.loads(req["body"]) == {"model": "m", "max_tokens": 5}
    assert req["matched"] == stub_id
    assert ISO_MS.match(req["received_at"]), req["received_at"]
    everything = server.get_requests()
    assert [(q["method"], q["path"]) for q in everything] == [
        ("POST", "/v1/messages"), ("GET", "/v1/unknown"), ("PUT", "/v1/raw")]
    assert everything[1]["matched"] is None
    assert base64.b64decode(everything[2]["body_base64"]) == b"\xff\xfe\x00"
    assert [q["id"] for q in everything] == sorted(q["id"] for q in everything)
    assert server.get_requests(method="GET") == [everything[1]]
    assert server.get_requests(path="/v1/raw") == [everything[2]]


def test_get_requests_joins_repeated_headers(server):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    conn.putrequest("GET", "/dup")
    conn.putheader("X-Dup", "a")
    conn.putheader("X-Dup", "b")
    conn.endheaders()
    assert conn.getresponse().status == 404
    conn.close()
    [req] = server.get_requests("GET", "/dup")
    assert req["headers"]["x-dup"] == "a, b"


def test_request_count_filters_by_method_and_path(server):
    for method, path in [("GET", "/a"), ("GET", "/a"), ("POST", "/a"), ("GET", "/b")]:
        fetch(server.url + path, method=method, body=b"x" if method == "POST" else None)
    assert server.request_count() == 4
    assert server.request_count("GET") == 3
    assert server.request_count(path="/a") == 3
    assert server.request_count("GET", "/a") == 2
    assert server.request_count("DELETE", "/a") == 0


def test_reset_clears_runtime_stubs_journal_and_sequence_counters(tmp_path):
    stubs = tmp_path / "stubs.json"
    stubs.write_text(json.dumps([{"method": "GET", "path": "/seq", "sequence": [
        {"status": 200, "body": "first"}, {"status": 200, "body": "second"}]}]))
    with Server(stubs=stubs) as s:
        s.register("GET", "/runtime", ResponseSpec(body="here"))
        assert fetch(s.url + "/runtime").body == b"here"
        assert [fetch(s.url + "/seq").body for _ in range(2)] == [b"first", b"second"]
        assert s.request_count() == 3
        s.reset()
        assert s.request_count() == 0 and s.get_requests() == []
        miss = fetch(s.url + "/runtime")
        assert miss.status == 404 and miss.header("x-apisim-miss") == "1"
        # the --stubs file stays, its sequence starts over
        assert fetch(s.url + "/seq").body == b"first"


def _resets_in(value, now):
    return datetime.fromisoformat(value) - now


def test_quota_presets_and_windows(tmp_path):
    with Server(quota="exhausted") as s:
        assert fetch(s.url + USAGE).status == 401          # no Bearer token
        now = datetime.now(timezone.utc)
        body = fetch(s.url + USAGE, headers=BEARER).json()
        assert body["five_hour"]["utilization"] == 100.0
        assert body["five_hour"]["resets_at"].endswith("+00:00")
        left = _resets_in(body["five_hour"]["resets_at"], now)
        assert timedelta(hours=2) - timedelta(seconds=5) <= left <= timedelta(hours=2, seconds=5)

        s.quota("rate-limited")
        limited = fetch(s.url + USAGE, headers=BEARER)
        assert (limited.status, limited.header("retry-after")) == (429, "30")

        active = s.quota({"five_hour": {"utilization": 95, "resets_in_s": 3600}})
        assert active["windows"]["five_hour"]["utilization"] == 95
        body = fetch(s.url + USAGE, headers=BEARER).json()
        assert body["five_hour"]["utilization"] == 95
        assert body["seven_day"] == {"utilization": None, "resets_at": None}

        s.quota({"preset": "unknown-reset"})
        body = fetch(s.url + USAGE, headers=BEARER).json()
        assert body["five_hour"] == {"utilization": 95.0, "resets_at": None}

        s.quota("slow", delay_ms=250)
        t0 = time.monotonic()
        assert fetch(s.url + USAGE, headers=BEARER).json()["five_hour"]["utilization"] == 12.0
        assert time.monotonic() - t0 >= 0.25

        assert s.request_count("GET", USAGE) == 6
        s.clear_quota()
        assert fetch(s.url + USAGE, headers=BEARER).status == 404


def test_admin_token_is_sent_on_every_control_request():
    with Server(admin_token="s3cret") as s:
        s.register("GET", "/t", status=200)
        assert s.request_count() == 0
        refused = fetch(s.url + "/__apisim/requests/count")
        assert refused.status in (401, 403), refused
