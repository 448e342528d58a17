"""Tests written the way the seed's api-simulator users write theirs (a quota guard and a
session classifier, with the fixtures mock_http_server and fake_claude), after changing
`api_simulator` to `apisim` in the imports. Nothing here knows apisim's own names: if these
pass on the real binary, such a suite runs unchanged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from apisim.claude import ClaudeCLI, FakeClaudeCLI
from apisim.errors import ApisimError
from apisim.http import MockResponseSpec as PyResponseSpec

QUOTA_ENDPOINT = "/api/oauth/usage"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---- the code under test: a quota guard and a session classifier ---------------------------


def check_quota(base_url, token="test-token-abc123", threshold=80.0, timeout=2.0):
    """Poll the usage endpoint; sleep when the worst window is at or over threshold (until it
    resets, 60 s when it does not say), fail open on any error."""
    req = urllib.request.Request(base_url + QUOTA_ENDPOINT, headers={
        "Authorization": f"Bearer {token}", "anthropic-beta": "oauth-2025-04-20"})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            usage = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as e:
        return {"should_sleep": False, "error": str(e)}
    windows = [(name, w) for name, w in usage.items()
               if isinstance(w, dict) and w.get("utilization") is not None]
    if not windows:
        return {"should_sleep": False, "utilization": 0.0}
    name, worst = max(windows, key=lambda nw: nw[1]["utilization"])
    result = {"utilization": worst["utilization"], "window_name": name,
              "resets_at": worst["resets_at"], "should_sleep": False}
    if worst["utilization"] >= threshold:
        result["should_sleep"] = True
        if worst["resets_at"] is None:
            result.update(sleep_seconds=60, reason="unknown_reset")
        else:
            resets = datetime.fromisoformat(worst["resets_at"].replace("Z", "+00:00"))
            result["sleep_seconds"] = (resets - datetime.now(timezone.utc)).total_seconds() + 60
    return result


def classify(stdout, returncode):
    """What a harness makes of a claude run: the last result record wins; none is
    'unparseable'; a non-zero exit is a failure whatever the stream says."""
    results = []
    for line in stdout.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a corrupt line is skipped
        if isinstance(rec, dict) and rec.get("type") == "result":
            results.append(rec)
    if not results:
        return {"success": False, "subtype": "unparseable", "is_error": True,
                "exit_code": returncode}
    last = results[-1]
    return {"success": returncode == 0 and not last.get("is_error") and
            last.get("subtype") == "success", "subtype": last.get("subtype"),
            "is_error": bool(last.get("is_error")), "result": last.get("result"),
            "exit_code": returncode}


def _result_msg(result_text="done", subtype="success", is_error=False,
                session_id="fake-session-001"):
    return {"type": "result", "subtype": subtype, "is_error": is_error,
            "result": result_text, "session_id": session_id, "errors": []}


def _assistant_msg(model="claude-sonnet-4-6"):
    return {"type": "assistant", "message": {
        "model": model, "content": "working...",
        "usage": {"input_tokens": 100, "output_tokens": 50, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0}}}


def _classify(fake_claude):
    proc = fake_claude.run()
    return classify(proc.stdout, proc.returncode)


# ---- the quota guard against mock_http_server -----------------------------------------------


@pytest.fixture(autouse=True)
def _reset_mock(mock_http_server):
    mock_http_server.reset()


def test_normal_utilization_and_the_headers_sent(mock_http_server):
    mock_http_server.register("GET", QUOTA_ENDPOINT, PyResponseSpec(body={
        "five_hour": {"utilization": 50.0, "resets_at": "2026-04-05T00:00:00+00:00"}}))
    result = check_quota(mock_http_server.url)
    assert result["should_sleep"] is False and result["utilization"] == 50.0
    assert not mock_http_server.url.endswith("/")
    requests = mock_http_server.get_requests("GET", QUOTA_ENDPOINT)
    assert len(requests) == 1
    assert requests[0]["headers"]["authorization"] == "Bearer test-token-abc123"
    assert requests[0].headers["anthropic-beta"] == "oauth-2025-04-20"   # attribute access
    assert requests[0].method == "GET" and requests[0].path == QUOTA_ENDPOINT


def test_above_threshold_sequence_and_request_count(mock_http_server):
    resets_at = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat()
    mock_http_server.register_sequence("GET", QUOTA_ENDPOINT, [
        PyResponseSpec(body={"five_hour": {"utilization": 95.0, "resets_at": resets_at}}),
        PyResponseSpec(body={"five_hour": {"utilization": 30.0, "resets_at": resets_at}})])
    first, second = check_quota(mock_http_server.url), check_quota(mock_http_server.url)
    assert first["should_sleep"] is True and 7000 < first["sleep_seconds"] < 7300
    assert second["should_sleep"] is False
    assert mock_http_server.request_count("GET", QUOTA_ENDPOINT) == 2


def test_multi_window_worst_case_and_null_windows(mock_http_server):
    resets_at = (datetime.now(timezone.utc) + timedelta(minutes=45)).isoformat()
    mock_http_server.register("GET", QUOTA_ENDPOINT, PyResponseSpec(body={
        "five_hour": {"utilization": None, "resets_at": None},
        "seven_day": {"utilization": 35.0, "resets_at": None},
        "one_hour": {"utilization": 91.0, "resets_at": resets_at}}))
    result = check_quota(mock_http_server.url)
    assert result["window_name"] == "one_hour" and result["should_sleep"] is True
    assert result["sleep_seconds"] == pytest.approx(45 * 60 + 60, abs=30)


def test_resets_at_null_blocks_with_fallback(mock_http_server):
    mock_http_server.register("GET", QUOTA_ENDPOINT, PyResponseSpec(
        body={"five_hour": {"utilization": 95.0, "resets_at": None}}))
    result = check_quota(mock_http_server.url)
    assert result["reason"] == "unknown_reset" and result["sleep_seconds"] == 60


@pytest.mark.parametrize("status", [429, 503])
def test_http_errors_fail_open(mock_http_server, status):
    mock_http_server.register("GET", QUOTA_ENDPOINT, PyResponseSpec(status=status))
    result = check_quota(mock_http_server.url)
    assert result["should_sleep"] is False and str(status) in result["error"]


def test_slow_answer_times_out_and_fails_open(mock_http_server):
    mock_http_server.register("GET", QUOTA_ENDPOINT, PyResponseSpec(body={}, delay_ms=1500))
    result = check_quota(mock_http_server.url, timeout=0.2)
    assert result["should_sleep"] is False and "error" in result


def test_headers_as_tuples_or_dict(mock_http_server):
    mock_http_server.register("GET", "/a", PyResponseSpec(body="x", headers=[
        ("X-One", "1"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]))
    mock_http_server.register("GET", "/b", PyResponseSpec(body="y", headers={"X-Two": "2"}))
    with _OPENER.open(mock_http_server.url + "/a") as resp:
        assert resp.headers["X-One"] == "1"
        assert resp.headers.get_all("Set-Cookie") == ["a=1", "b=2"]
    with _OPENER.open(mock_http_server.url + "/b") as resp:
        assert resp.headers["X-Two"] == "2" and resp.read() == b"y"


# ---- the older keyword form -----------------------------------------------------------------


def test_older_register_keywords(mock_http_server):
    mock_http_server.register("GET", QUOTA_ENDPOINT, json={
        "five_hour": {"utilization": 97.0, "resets_at": None}}, status=200)
    assert check_quota(mock_http_server.url)["should_sleep"] is True
    mock_http_server.register("POST", "/v1/messages", json={"error": "overloaded"}, status=529,
                              headers={"retry-after": "1"})
    req = urllib.request.Request(mock_http_server.url + "/v1/messages", data=b"{}",
                                 method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        _OPENER.open(req)
    assert e.value.code == 529 and json.load(e.value) == {"error": "overloaded"}
    assert e.value.headers["retry-after"] == "1"


def test_older_delay_seconds(mock_http_server):
    mock_http_server.register("GET", QUOTA_ENDPOINT, json={}, delay_seconds=1.5)
    assert "error" in check_quota(mock_http_server.url, timeout=0.2)
    mock_http_server.reset()
    mock_http_server.register("GET", QUOTA_ENDPOINT, json={}, delay_seconds=0.3)
    t0 = time.monotonic()
    assert check_quota(mock_http_server.url, timeout=5)["utilization"] == 0.0
    assert time.monotonic() - t0 >= 0.3


def test_older_register_sequence_responses(mock_http_server):
    mock_http_server.register_sequence("GET", QUOTA_ENDPOINT, responses=[
        {"json": {"five_hour": {"utilization": 10.0, "resets_at": None}}},
        {"json": {"five_hour": {"utilization": 99.0, "resets_at": None}}},
        {"status": 503}])
    got = [check_quota(mock_http_server.url) for _ in range(4)]
    assert [g.get("utilization") for g in got[:2]] == [10.0, 99.0]
    assert "503" in got[2]["error"] and "503" in got[3]["error"]   # the last repeats
    assert mock_http_server.request_count("GET", QUOTA_ENDPOINT) == 4


def test_json_keyword_takes_any_json_value(mock_http_server):
    mock_http_server.register("GET", "/s", json="just a string")
    mock_http_server.register("GET", "/n", json=None)
    with _OPENER.open(mock_http_server.url + "/s") as resp:
        assert json.load(resp) == "just a string"
    with _OPENER.open(mock_http_server.url + "/n") as resp:
        assert json.load(resp) is None


def test_bad_keywords_are_clear_errors(mock_http_server):
    with pytest.raises(TypeError, match="unknown keyword 'jsn'"):
        mock_http_server.register("GET", "/x", jsn={})
    with pytest.raises(TypeError, match="json= or body="):
        mock_http_server.register("GET", "/x", json={}, body="x")
    with pytest.raises(TypeError, match="list of ResponseSpecs"):
        mock_http_server.register_sequence("GET", "/x", responses={"json": {}})
    assert mock_http_server.request_count() == 0


def test_fault_and_dribble_go_into_the_stub():
    spec = PyResponseSpec(body={"a": 1}, fault="reset-mid-body", after_bytes=10,
                          dribble={"chunks": 4, "over_ms": 200})
    d = spec.to_json()
    assert d["fault"] == "reset-mid-body" and d["after_bytes"] == 10
    assert d["dribble"] == {"chunks": 4, "over_ms": 200} and d["json"] == {"a": 1}
    assert "fault" not in PyResponseSpec().to_json()
    assert "dribble" not in PyResponseSpec().to_json()


def test_fault_reaches_apisim(mock_http_server):
    """MockResponseSpec(fault=...) reaches apisim and is played: a reset, no HTTP answer."""
    mock_http_server.register("GET", "/f", PyResponseSpec(body="never", fault="reset"))
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)) as e:
        _OPENER.open(mock_http_server.url + "/f", timeout=5).read()
    assert not isinstance(e.value, urllib.error.HTTPError)
    assert mock_http_server.get_requests("GET", "/f")[0].fault == "reset"


def test_dribble_reaches_apisim(mock_http_server):
    mock_http_server.register("GET", "/d", PyResponseSpec(body="abcdef",
                                                          dribble={"chunks": 3, "over_ms": 30}))
    assert _OPENER.open(mock_http_server.url + "/d", timeout=5).read() == b"abcdef"


# ---- the session classifier against fake_claude ---------------------------------------------


def test_fixture_is_the_seeds_class(fake_claude):
    assert isinstance(fake_claude, ClaudeCLI) and ClaudeCLI is FakeClaudeCLI


def test_api_retry_events_before_the_result(fake_claude):
    fake_claude.inject_api_retry(at_message=0, error_status=529, attempts=3)
    fake_claude.add_message(_result_msg())
    proc = fake_claude.run()
    skill = classify(proc.stdout, proc.returncode)
    assert skill["success"] is True and skill["subtype"] == "success"
    assert skill["exit_code"] == 0
    kinds = [(r["type"], r.get("subtype")) for r in map(json.loads, proc.stdout.splitlines())]
    assert kinds == [("system", "init")] + [("system", "api_retry")] * 3 + [
        ("result", "success")]


def test_api_retry_exhaustion_no_result(fake_claude):
    fake_claude.inject_api_retry(at_message=0, error_status=529, attempts=10, exhaust=True)
    fake_claude.add_message(_result_msg())  # unreachable due to exhaust=True
    skill = _classify(fake_claude)
    assert skill["success"] is False and skill["subtype"] == "unparseable"
    assert skill["exit_code"] == 1


def test_stream_corruption_replaces_the_message(fake_claude):
    fake_claude.add_message(_assistant_msg())
    fake_claude.add_message(_assistant_msg())  # placeholder to corrupt
    fake_claude.add_message(_result_msg())
    fake_claude.corrupt_stream(at_message=1, error_text="API Error (503 upstream...)")
    proc = fake_claude.run()
    lines = proc.stdout.splitlines()
    assert lines[2] == "API Error (503 upstream...)"
    assert [json.loads(x)["type"] for x in lines[:2] + lines[3:]] == [
        "system", "assistant", "result"]
    assert classify(proc.stdout, proc.returncode)["success"] is True


def test_multiple_result_records_last_wins(fake_claude):
    fake_claude.add_message(_result_msg("first", "success"))
    fake_claude.add_message(_result_msg("second", "error", is_error=True))
    skill = _classify(fake_claude)
    assert skill["success"] is False and skill["is_error"] is True
    assert skill["result"] == "second"


def test_truncated_stream_exits_1(fake_claude):
    fake_claude.add_message(_assistant_msg())
    fake_claude.add_message(_result_msg())
    fake_claude.add_message(_assistant_msg())
    fake_claude.truncate_after(1)   # message 0 only
    proc = fake_claude.run()
    assert proc.returncode == 1
    assert [json.loads(x)["type"] for x in proc.stdout.splitlines()] == ["system", "assistant"]
    assert classify(proc.stdout, proc.returncode)["subtype"] == "unparseable"


def test_interrupted_nonzero_exit(fake_claude):
    fake_claude.add_message(_result_msg(subtype="interrupted"))
    fake_claude.set_exit_code(1)
    skill = _classify(fake_claude)
    assert skill["success"] is False and skill["exit_code"] == 1
    assert skill["subtype"] == "interrupted"


def test_hang_after_result_killed_by_process_group(fake_claude):
    fake_claude.add_message(_result_msg("completed work"))
    fake_claude.hang_after_result()
    with fake_claude:  # `claude` on PATH
        proc = subprocess.Popen(["claude", "--output-format", "stream-json", "-p", "test"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                proc.communicate(timeout=1.0)
        finally:
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert classify(stdout, 0)["result"] == "completed work"


def test_inject_exit_mid_stream(fake_claude):
    fake_claude.add_message(_assistant_msg())
    fake_claude.add_message(_result_msg("mid-stream"))
    fake_claude.add_message(_assistant_msg())
    fake_claude.inject_exit(1, code=2)
    proc = fake_claude.run()
    assert proc.returncode == 2
    assert [json.loads(x)["type"] for x in proc.stdout.splitlines()] == [
        "system", "assistant", "result"]   # messages 0..1
    skill = classify(proc.stdout, proc.returncode)
    assert skill["result"] == "mid-stream" and skill["success"] is False


def test_run_with_args_and_env(fake_claude, tmp_path):
    fake_claude.add_message(_result_msg("x"))
    proc = fake_claude.run(["-p", "hi", "--output-format", "json"],
                           {"CLAUDE_CONFIG_DIR": str(tmp_path)})
    assert proc.returncode == proc.exit_code == 0
    assert json.loads(proc.stdout)["result"] == "x"
    assert proc.session_log_dir == str(tmp_path)


def test_at_message_past_the_end_is_a_clear_error(fake_claude):
    fake_claude.add_message(_result_msg())
    fake_claude.corrupt_stream(at_message=3, error_text="x")
    with pytest.raises(ApisimError, match=r"corrupt_stream\(at_message\)=3 is past the end"):
        fake_claude.run()
