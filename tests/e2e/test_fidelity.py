"""Issue 3, end to end: replay fidelity. Match rules (--match, --match-header, --ignore-query,
--ignore-json with `*`), --config with per-route rules, miss diagnostics, --sequence-end,
--on-miss forward|record, and the bad input of all of these.

Every recording is made through the real binary (`apisim record`) with no rules at all; the
rules are given to `apisim replay` only, so each test also shows that they apply at match
time. Replays run with the upstream stopped unless the test is about reaching it (--on-miss).
Latency models are in test_latency.py.
"""

import json
import subprocess
import uuid
from datetime import datetime, timezone

import pytest

import harness
from harness import curl, query_db, run_apisim, timed_get

JSON_POST = ("-X", "POST", "-H", "Content-Type: application/json")


# --- helpers -------------------------------------------------------------------------------


def record(apisim, upstream, db, requests, *args):
    """Record `requests` [(path, *curl args)] through `apisim record`; stop it (SIGTERM, exit 0)
    and return the CurlResults."""
    rec = apisim("record", "--upstream", upstream.url, "--db", db, *args)
    out = [curl(rec.url + path, *cargs) for path, *cargs in requests]
    stopped = rec.stop()
    assert stopped.rc == 0, f"record exited {stopped.rc}; stderr:\n{stopped.stderr}"
    return out


def post_json(url, body, *extra):
    text = body if isinstance(body, str) else json.dumps(body)
    return curl(url, *JSON_POST, *extra, "--data-binary", text)


def assert_hit(res, recorded, what):
    """A replayed answer that is the recorded one (no miss)."""
    assert res.header("x-apisim-miss") is None and res.status == recorded.status, (
        f"{what}: expected a hit answering {recorded.status}, got {res!r}")
    assert res.body == recorded.body, (
        f"{what}: replayed body differs from the recorded one:\n"
        f"  got      {res.body[:300]!r}\n  recorded {recorded.body[:300]!r}")


def assert_miss(res, what):
    """A miss: 404, X-Apisim-Miss: 1, the contract's JSON body. Returns the parsed body."""
    assert res.status == 404 and res.header("x-apisim-miss") == "1", (
        f"{what}: expected a miss (404 with X-Apisim-Miss: 1), got {res!r}")
    body = res.json()
    assert isinstance(body.get("error"), str) and "nearest" in body, (
        f"{what}: miss body lacks error/nearest: {body}")
    return body


def all_differences(miss_body):
    return [d for n in miss_body.get("nearest", []) for d in n.get("differences", [])]


def stop_ok(proc):
    stopped = proc.stop()
    assert stopped.rc == 0, f"{proc.args}: exit {stopped.rc}; stderr:\n{stopped.stderr}"
    return stopped


def count_rows(db):
    return query_db(db, "SELECT count(*) FROM exchanges")[0][0]


# --- --match FIELDS ------------------------------------------------------------------------


def test_match_method_path_ignores_body_and_query(apisim, upstream, db_path):
    recorded = record(apisim, upstream, db_path, [
        ("/echo?v=1", *JSON_POST, "--data-binary", '{"a": 1}'),
    ])
    assert recorded[0].status == 200
    upstream.stop()

    strict = apisim("replay", "--db", db_path)
    assert_miss(post_json(strict.url + "/echo?v=1", {"a": 2}),
                "different body under the default rules (method,path,query,body)")
    assert_miss(post_json(strict.url + "/echo?v=2", {"a": 1}),
                "different query under the default rules")
    stop_ok(strict)

    loose = apisim("replay", "--db", db_path, "--match", "method,path")
    assert_hit(post_json(loose.url + "/echo?v=1", {"a": 2}), recorded[0],
               "--match method,path: POST /echo with a different body")
    assert_hit(post_json(loose.url + "/echo?v=9", {"b": [1, 2]}), recorded[0],
               "--match method,path: POST /echo with a different query and body")
    assert_miss(curl(loose.url + "/echo?v=1"), "--match method,path: GET instead of POST")
    assert_miss(post_json(loose.url + "/json", {"a": 1}), "--match method,path: another path")
    stop_ok(loose)


def test_match_method_path_query_ignores_only_the_body(apisim, upstream, db_path):
    recorded = record(apisim, upstream, db_path, [
        ("/echo?v=1", *JSON_POST, "--data-binary", '{"a": 1}'),
    ])
    upstream.stop()
    rep = apisim("replay", "--db", db_path, "--match", "query,path,method")
    assert_hit(post_json(rep.url + "/echo?v=1", {"a": 2}), recorded[0],
               "--match query,path,method: different body")
    assert_miss(post_json(rep.url + "/echo?v=2", {"a": 1}),
                "--match query,path,method: different query")
    stop_ok(rep)


def test_match_body_only(apisim, upstream, db_path):
    recorded = record(apisim, upstream, db_path, [
        ("/echo?v=1", *JSON_POST, "--data-binary", '{"a": 1, "b": 2}'),
    ])
    upstream.stop()
    rep = apisim("replay", "--db", db_path, "--match", "body")
    assert_hit(post_json(rep.url + "/json?v=7", '{"b":2,"a":1}'), recorded[0],
               "--match body: another path and query, the same JSON body")
    assert_hit(curl(rep.url + "/other", "-X", "PUT", "--data-binary", '{"a": 1, "b": 2}'),
               recorded[0], "--match body: another method too")
    assert_miss(post_json(rep.url + "/echo?v=1", {"a": 1, "b": 3}), "--match body: body differs")
    stop_ok(rep)


# --- --match-header NAME ---------------------------------------------------------------------


def test_match_header(apisim, upstream, db_path):
    recorded = record(apisim, upstream, db_path, [("/echo", "-H", "X-Tenant: alpha")])
    assert recorded[0].json()["headers"]["x-tenant"] == "alpha"
    upstream.stop()

    plain = apisim("replay", "--db", db_path)
    assert_hit(curl(plain.url + "/echo", "-H", "X-Tenant: beta"), recorded[0],
               "without --match-header a header value difference is no miss")
    assert_hit(curl(plain.url + "/echo"), recorded[0],
               "without --match-header a missing header is no miss")
    stop_ok(plain)

    rep = apisim("replay", "--db", db_path, "--match-header", "X-Tenant")
    assert_hit(curl(rep.url + "/echo", "-H", "X-Tenant: alpha"), recorded[0],
               "--match-header X-Tenant, same value")
    assert_hit(curl(rep.url + "/echo", "-H", "x-tenant: alpha"), recorded[0],
               "--match-header X-Tenant, same value, name in lower case")
    miss = assert_miss(curl(rep.url + "/echo", "-H", "X-Tenant: beta"),
                       "--match-header X-Tenant, another value")
    diffs = all_differences(miss)
    assert any("header x-tenant" in d.lower() for d in diffs), (
        f"the miss report does not name header x-tenant: {diffs}")
    assert_miss(curl(rep.url + "/echo"), "--match-header X-Tenant, header absent")
    stop_ok(rep)


# --- --ignore-query NAME ---------------------------------------------------------------------


def test_ignore_query(apisim, upstream, db_path):
    recorded = record(apisim, upstream, db_path, [("/echo?a=1&ts=1700000000&b=x",)])
    upstream.stop()

    plain = apisim("replay", "--db", db_path)
    miss = assert_miss(curl(plain.url + "/echo?a=1&ts=1800000000&b=x"),
                       "ts differs, without --ignore-query")
    diffs = all_differences(miss)
    assert any("query ts" in d for d in diffs), f"the miss report does not name query ts: {diffs}"
    stop_ok(plain)

    rep = apisim("replay", "--db", db_path, "--ignore-query", "ts")
    assert_hit(curl(rep.url + "/echo?a=1&ts=1800000000&b=x"), recorded[0],
               "--ignore-query ts, ts differs")
    assert_hit(curl(rep.url + "/echo?b=x&a=1"), recorded[0],
               "--ignore-query ts, ts absent, other parameters reordered")
    assert_miss(curl(rep.url + "/echo?a=2&ts=1800000000&b=x"),
                "--ignore-query ts, another parameter (a) differs")
    stop_ok(rep)


# --- --ignore-json POINTER -------------------------------------------------------------------


def volatile_body(content="hello"):
    """What a real SDK client sends: a timestamp and random ids in every request."""
    return {
        "model": "test-model",
        "messages": [
            {"role": "user", "content": content, "id": "msg_" + uuid.uuid4().hex},
            {"role": "assistant", "content": "ok", "id": "msg_" + uuid.uuid4().hex},
        ],
        "metadata": {
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            "request_id": str(uuid.uuid4()),
        },
    }


def test_ignore_json_timestamp_and_random_id(apisim, upstream, db_path):
    first = volatile_body()
    recorded = record(apisim, upstream, db_path, [
        ("/echo", *JSON_POST, "--data-binary", json.dumps(first)),
    ])
    assert recorded[0].status == 200
    upstream.stop()
    again = volatile_body()  # same conversation, fresh timestamp and ids
    assert again["metadata"] != first["metadata"]

    plain = apisim("replay", "--db", db_path)
    miss = assert_miss(post_json(plain.url + "/echo", again), "fresh timestamp/ids, no flags")
    diffs = [d for d in all_differences(miss) if d.startswith("body ")]
    volatile = ("/messages/0/id", "/messages/1/id", "/metadata/timestamp",
                "/metadata/request_id")
    assert diffs and all(d.split(":")[0][len("body "):] in volatile for d in diffs), (
        f"the miss report should name the differing JSON pointers {volatile}: "
        f"{all_differences(miss)}")
    stop_ok(plain)

    only_ts = apisim("replay", "--db", db_path, "--ignore-json", "/metadata/timestamp")
    assert_miss(post_json(only_ts.url + "/echo", volatile_body()),
                "only the timestamp ignored: the ids still differ")
    stop_ok(only_ts)

    rep = apisim("replay", "--db", db_path,
                 "--ignore-json", "/metadata/timestamp",
                 "--ignore-json", "/metadata/request_id",
                 "--ignore-json", "/messages/*/id")
    assert_hit(post_json(rep.url + "/echo", volatile_body()), recorded[0],
               "timestamp, request id and every message id ignored")
    assert_hit(post_json(rep.url + "/echo", volatile_body()), recorded[0],
               "a second request with other fresh values")
    miss = assert_miss(post_json(rep.url + "/echo", volatile_body("goodbye")),
                       "ignored pointers, but the message content differs")
    assert any(d.startswith("body /messages/0/content") for d in all_differences(miss)), (
        f"the report should name body /messages/0/content: {all_differences(miss)}")
    stop_ok(rep)


def test_ignore_json_keeps_a_recorded_sequence_in_order(apisim, upstream, db_path):
    """Three requests that differ only in volatile fields, recorded in a row, become one
    sequence once those fields are ignored: the n-th replayed request gets the n-th answer."""
    record(apisim, upstream, db_path, [
        ("/counter", *JSON_POST, "--data-binary", json.dumps(volatile_body())),
    ] * 3)
    upstream.stop()
    rep = apisim("replay", "--db", db_path, "--ignore-json", "/metadata/*",
                 "--ignore-json", "/messages/*/id")
    got = [post_json(rep.url + "/counter", volatile_body()) for _ in range(4)]
    assert [r.status for r in got] == [200] * 4, got
    assert [r.json()["n"] for r in got] == [1, 2, 3, 3], [r.body for r in got]
    stop_ok(rep)


def test_ignore_json_star_matches_object_members(apisim, upstream, db_path):
    first = volatile_body()
    recorded = record(apisim, upstream, db_path, [
        ("/echo", *JSON_POST, "--data-binary", json.dumps(first)),
    ])
    upstream.stop()
    rep = apisim("replay", "--db", db_path,
                 "--ignore-json", "/metadata/*", "--ignore-json", "/messages/*/id")
    assert_hit(post_json(rep.url + "/echo", volatile_body()), recorded[0],
               "--ignore-json /metadata/* (every member) and /messages/*/id")
    assert_miss(post_json(rep.url + "/echo", {**volatile_body(), "model": "other"}),
                "/metadata/* must not ignore /model")
    stop_ok(rep)


# --- --config FILE ---------------------------------------------------------------------------


def write_config(tmp_path, obj, name="apisim.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_config_route_rule_applies_to_its_route_only(apisim, upstream, db_path, tmp_path):
    recorded = record(apisim, upstream, db_path, [("/echo?v=1",), ("/json?v=1",)])
    upstream.stop()
    cfg = write_config(tmp_path, {"routes": [
        {"method": "GET", "path": "/ech*", "match": {"ignore_query": ["v"]}},
    ]})
    rep = apisim("replay", "--db", db_path, "--config", cfg)
    assert_hit(curl(rep.url + "/echo?v=2"), recorded[0], "route /ech* ignores v on /echo")
    assert_hit(curl(rep.url + "/json?v=1"), recorded[1], "/json unchanged")
    assert_miss(curl(rep.url + "/json?v=2"), "route /ech* must not apply to /json")
    stop_ok(rep)


def test_config_route_fields_and_ignore_json(apisim, upstream, db_path, tmp_path):
    recorded = record(apisim, upstream, db_path, [
        ("/echo", *JSON_POST, "--data-binary", json.dumps(volatile_body())),
        ("/json", *JSON_POST, "--data-binary", '{"q": 1}'),
    ])
    upstream.stop()
    cfg = write_config(tmp_path, {"routes": [
        {"method": "POST", "path": "/echo",
         "match": {"ignore_json": ["/metadata/timestamp", "/metadata/request_id",
                                   "/messages/*/id"]}},
        {"path": "/json", "match": {"fields": ["method", "path"]}},
    ]})
    rep = apisim("replay", "--db", db_path, "--config", cfg)
    assert_hit(post_json(rep.url + "/echo", volatile_body()), recorded[0],
               "route /echo ignore_json")
    assert_hit(post_json(rep.url + "/json", {"q": 2}), recorded[1],
               "route /json fields [method, path]")
    assert_miss(post_json(rep.url + "/echo", volatile_body("other")),
                "route /echo still compares the content")
    stop_ok(rep)


def test_config_top_level_match_and_flags_win(apisim, upstream, db_path, tmp_path):
    recorded = record(apisim, upstream, db_path, [
        ("/echo?v=1", *JSON_POST, "--data-binary", '{"a": 1}'),
    ])
    upstream.stop()
    cfg = write_config(tmp_path, {"match": {"fields": ["method", "path", "query", "body"],
                                            "ignore_query": ["v"]}})
    rep = apisim("replay", "--db", db_path, "--config", cfg)
    assert_hit(post_json(rep.url + "/echo?v=2", {"a": 1}), recorded[0],
               "top-level ignore_query v from the file")
    assert_miss(post_json(rep.url + "/echo?v=1", {"a": 2}),
                "the file's fields include body")
    stop_ok(rep)

    rep = apisim("replay", "--db", db_path, "--config", cfg, "--match", "method,path")
    assert_hit(post_json(rep.url + "/echo?v=1", {"a": 2}), recorded[0],
               "--match method,path wins over the file's fields")
    stop_ok(rep)


def test_config_redaction_is_applied_and_left_out_of_matching(apisim, upstream, db_path,
                                                              tmp_path):
    cfg = write_config(tmp_path, {"redact": {"headers": ["X-Tenant-Secret"],
                                             "query": ["token"],
                                             "json": ["/auth/password"]}})
    secrets = ("hdr-secret-111", "query-secret-222", "json-secret-333")
    body = json.dumps({"user": "u", "auth": {"password": secrets[2]}})
    recorded = record(apisim, upstream, db_path, [
        (f"/echo?token={secrets[1]}&x=1", *JSON_POST, "-H", f"X-Tenant-Secret: {secrets[0]}",
         "--data-binary", body),
    ], "--config", cfg)
    assert recorded[0].status == 200
    echoed = recorded[0].json()  # the upstream got the real values
    assert echoed["headers"]["x-tenant-secret"] == secrets[0] and secrets[2] in echoed["body"]
    # /echo repeats the request in its response body: look at the stored request side.
    row = query_db(db_path, "SELECT query, request_headers, request_body FROM exchanges")
    assert len(row) == 1
    stored = {k: str(row[0][k]) for k in ("query", "request_headers", "request_body")}
    for s, col in zip(secrets, ("request_headers", "query", "request_body")):
        assert s not in json.dumps(stored), (
            f"{s} reached the database despite the config's redact: {stored}")
        assert "REDACTED" in stored[col], f"{col} holds no [REDACTED] marker: {stored[col]}"
    upstream.stop()
    rep = apisim("replay", "--db", db_path, "--config", cfg)
    res = curl(rep.url + "/echo?token=another-token&x=1", *JSON_POST,
               "-H", "X-Tenant-Secret: another-secret", "--data-binary",
               json.dumps({"user": "u", "auth": {"password": "another-password"}}))
    assert res.status == 200 and res.header("x-apisim-miss") is None, (
        f"redacted fields should be left out of the match key: {res!r}")
    stop_ok(rep)


def test_config_per_route_latency_and_latency_flag_wins(apisim, upstream, db_path, tmp_path):
    record(apisim, upstream, db_path, [("/json",), ("/echo",)])
    upstream.stop()
    cfg = write_config(tmp_path, {"routes": [{"path": "/json", "latency": "fixed:400ms"}]})
    rep = apisim("replay", "--db", db_path, "--config", cfg)
    st, _, slow = timed_get(rep.url, "/json")
    assert st == 200 and slow >= 0.38, f"route /json fixed:400ms answered in {slow:.3f} s"
    st, _, fast = timed_get(rep.url, "/echo")
    assert st == 200 and fast < 0.3, f"/echo (no route latency) took {fast:.3f} s"
    stop_ok(rep)

    cfg2 = write_config(tmp_path, {"latency": "fixed:1s"}, "top.json")
    rep = apisim("replay", "--db", db_path, "--config", cfg2)
    st, _, t = timed_get(rep.url, "/echo")
    assert st == 200 and t >= 0.95, f"top-level latency fixed:1s: answered in {t:.3f} s"
    stop_ok(rep)
    rep = apisim("replay", "--db", db_path, "--config", cfg2, "--latency", "none")
    st, _, t = timed_get(rep.url, "/echo")
    assert st == 200 and t < 0.5, f"--latency none should win over the file's fixed:1s: {t:.3f} s"
    stop_ok(rep)


# --- miss diagnostics ------------------------------------------------------------------------


def test_miss_names_query_pointer_header_and_path(apisim, upstream, db_path):
    record(apisim, upstream, db_path, [
        ("/echo?a=1&b=2",),
        ("/echo", *JSON_POST, "--data-binary", '{"x": {"y": 1, "z": [1, 2]}, "w": "same"}'),
        ("/echo?h=1", "-H", "X-Variant: one"),
    ])
    upstream.stop()
    rep = apisim("replay", "--db", db_path, "--match-header", "X-Variant")

    miss = assert_miss(curl(rep.url + "/echo?a=1&b=3"), "query b differs")
    assert miss["request"]["path"] == "/echo" and "b=3" in miss["request"]["query"], miss
    assert isinstance(miss["key"], str) and miss["key"], miss
    near = miss["nearest"][0]
    want_id = query_db(db_path, "SELECT id FROM exchanges WHERE query = 'a=1&b=2'")[0][0]
    assert near["path"] == "/echo" and near["method"] == "GET" and near["id"] == want_id, (
        f"nearest[0] should be exchange {want_id} (GET /echo?a=1&b=2): {miss['nearest']}")
    assert any(d.startswith("query b") and "3" in d and "2" in d for d in near["differences"]), (
        f"nearest should say query b: 3 != 2; got {miss['nearest']}")
    assert not any(d.startswith("query a") for d in near["differences"]), near

    miss = assert_miss(post_json(rep.url + "/echo", '{"w": "same", "x": {"z": [1, 2], "y": 5}}'),
                       "body /x/y differs")
    near = miss["nearest"][0]
    assert near["method"] == "POST", miss["nearest"]
    assert any(d.startswith("body /x/y") for d in near["differences"]), (
        f"nearest should name body /x/y; got {miss['nearest']}")

    miss = assert_miss(post_json(rep.url + "/echo", '{"w": "same", "x": {"z": [1, 7], "y": 1}}'),
                       "body /x/z/1 differs")
    assert any(d.startswith("body /x/z/1") for d in miss["nearest"][0]["differences"]), (
        f"nearest should name body /x/z/1; got {miss['nearest']}")

    miss = assert_miss(curl(rep.url + "/echo?h=1", "-H", "X-Variant: two"), "header differs")
    near = miss["nearest"][0]
    assert any(d.lower().startswith("header x-variant") for d in near["differences"]), (
        f"nearest should name header x-variant; got {miss['nearest']}")

    miss = assert_miss(curl(rep.url + "/echoes?a=1&b=2"), "path differs")
    assert any(d.startswith("path") and "/echoes" in d
               for d in all_differences(miss)), f"no path difference: {miss['nearest']}"
    stop_ok(rep)


# --- --sequence-end --------------------------------------------------------------------------


@pytest.mark.parametrize("policy,expected", [
    (None, [1, 2, 3, 3, 3]),
    ("repeat-last", [1, 2, 3, 3, 3]),
    ("cycle", [1, 2, 3, 1, 2, 3, 1]),
    ("error", [1, 2, 3, "exhausted", "exhausted"]),
])
def test_sequence_end(apisim, upstream, db_path, policy, expected):
    got = [r.json()["n"] for r in record(apisim, upstream, db_path, [("/counter",)] * 3)]
    assert got == [1, 2, 3]
    upstream.stop()
    args = ["--sequence-end", policy] if policy else []
    rep = apisim("replay", "--db", db_path, *args)
    answers = []
    for i in range(len(expected)):
        r = curl(rep.url + "/counter")
        if r.status == 404:
            body = assert_miss(r, f"--sequence-end {policy}: answer {i + 1}")
            assert body["error"] == "sequence exhausted", (
                f"answer {i + 1}: error is {body['error']!r}, expected 'sequence exhausted'")
            answers.append("exhausted")
        else:
            assert r.status == 200 and r.header("x-apisim-miss") is None, r
            answers.append(r.json()["n"])
    assert answers == expected, f"--sequence-end {policy}: {answers}"
    stop_ok(rep)


def test_sequence_error_only_ends_its_own_sequence(apisim, upstream, db_path):
    record(apisim, upstream, db_path, [("/counter",), ("/json",)])
    upstream.stop()
    rep = apisim("replay", "--db", db_path, "--sequence-end", "error", "--strict")
    assert curl(rep.url + "/counter").json() == {"n": 1}
    assert_miss(curl(rep.url + "/counter"), "second /counter of one recorded")
    assert curl(rep.url + "/json").status == 200, "another key is not exhausted"
    stopped = rep.stop()
    assert stopped.rc == 3, f"an exhausted sequence is a miss: --strict exits 3, got {stopped}"


# --- --on-miss forward|record ----------------------------------------------------------------


def test_on_miss_forward_is_a_spy(apisim, upstream, db_path):
    recorded = record(apisim, upstream, db_path, [("/json",)])
    rows = count_rows(db_path)
    assert len(upstream.received_for("/json")) == 1
    rep = apisim("replay", "--db", db_path, "--on-miss", "forward", "--upstream", upstream.url)
    assert_hit(curl(rep.url + "/json"), recorded[0], "a recorded request in forward mode")
    assert len(upstream.received_for("/json")) == 1, "a hit was forwarded to the upstream"

    for n in (1, 2):
        res = curl(rep.url + "/echo?spy=1")
        assert res.status == 200 and res.header("x-apisim-miss") is None, (
            f"miss #{n} should be answered by the live upstream: {res!r}")
        assert res.json()["query"] == "spy=1", res.body
        assert len(upstream.received_for("/echo")) == n, (
            f"miss #{n}: the upstream received {len(upstream.received_for('/echo'))} /echo")
    stop_ok(rep)
    assert count_rows(db_path) == rows, "--on-miss forward stored something"


def test_on_miss_forward_needs_upstream(good_db):
    p = run_apisim("replay", "--db", good_db, "--on-miss", "forward",
                   "--listen", "127.0.0.1:0", timeout=10)
    assert p.returncode == 2 and "--upstream" in p.stderr, (p.returncode, p.stderr)


def test_on_miss_record_grows_the_session(apisim, upstream, db_path):
    recorded = record(apisim, upstream, db_path, [("/json",)])
    assert count_rows(db_path) == 1
    rep = apisim("replay", "--db", db_path, "--on-miss", "record", "--upstream", upstream.url)
    assert_hit(curl(rep.url + "/json"), recorded[0], "the recorded request")
    new = curl(rep.url + "/echo?new=1")
    assert new.status == 200 and new.header("x-apisim-miss") is None, new
    assert new.json()["query"] == "new=1"
    stop_ok(rep)
    assert len(upstream.received_for("/json")) == 1, "a hit was forwarded"
    rows = query_db(db_path, "SELECT session, path, query, status FROM exchanges ORDER BY id")
    assert len(rows) == 2, f"row count should grow by one: {[tuple(r) for r in rows]}"
    assert tuple(rows[1]) == (rows[0]["session"], "/echo", "new=1", 200), tuple(rows[1])

    upstream.stop()
    again = apisim("replay", "--db", db_path, "--strict")
    assert_hit(curl(again.url + "/json"), recorded[0], "second replay, /json")
    assert_hit(curl(again.url + "/echo?new=1"), new, "second replay, the request recorded on miss")
    stopped = again.stop()
    assert stopped.rc == 0, f"the second replay had a miss (--strict exit {stopped.rc}):\n" \
                            f"{stopped.stderr}"


def test_on_miss_record_answers_a_repeat_from_the_new_recording(apisim, upstream, db_path):
    record(apisim, upstream, db_path, [("/json",)])
    rep = apisim("replay", "--db", db_path, "--on-miss", "record", "--upstream", upstream.url)
    first = curl(rep.url + "/echo?twice=1")
    second = curl(rep.url + "/echo?twice=1")
    assert first.status == second.status == 200
    stop_ok(rep)
    assert len(upstream.received_for("/echo")) == 1, (
        "only what is missing is recorded: the repeat should come from the new exchange, "
        f"but the upstream got {len(upstream.received_for('/echo'))} requests")
    assert count_rows(db_path) == 2


# --- bad input -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_db(tmp_path_factory, apisim_bin):
    """A valid recording, so the only thing wrong in a bad-input run is the input."""
    db = tmp_path_factory.mktemp("fidelity-bad") / "good.db"
    with harness.upstream_server() as up:
        with harness.ApisimProcess(["record", "--upstream", up.url, "--db", db]) as rec:
            curl(rec.url + "/json")
            assert rec.stop().rc == 0
    return db


def refused(args, value, accepted, names=()):
    """Run `apisim replay ARGS`: it must exit 2 without listening; stderr must name `value`,
    at least one word of `accepted` outside the quoted value, and each of `names`."""
    try:
        p = run_apisim("replay", *args, "--listen", "127.0.0.1:0", timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"apisim replay {args}: still running after 10 s (it accepted the input)")
    assert "listening on" not in p.stdout, f"{args}: it listened: {p.stdout}"
    assert p.returncode == 2, f"{args}: exit {p.returncode}, expected 2; stderr: {p.stderr}"
    err = p.stderr
    assert value in err, f"{args}: stderr does not name {value!r}: {err}"
    rest = err.replace(value, "").lower()
    assert any(a.lower() in rest for a in accepted), (
        f"{args}: stderr does not say what is accepted (any of {accepted}): {err}")
    for n in names:
        assert n in err, f"{args}: stderr does not name {n!r}: {err}"
    return p


LATENCY_FORMS = ("fixed", "uniform", "lognormal", "recorded")
DURATION_UNITS = ("ms", "us", "duration")


@pytest.mark.parametrize("spec,accepted", [
    ("sometimes", LATENCY_FORMS),
    ("fixed:abc", DURATION_UNITS),
    ("fixed:", DURATION_UNITS),
    ("fixed:10parsecs", DURATION_UNITS),
    ("uniform:10ms", ("..",)),
    ("recorded*fast", ("number", "factor", "recorded*0.5", "recorded*k")),
    ("lognormal:40ms", ("p99", "median", ",200ms")),
])
def test_bad_latency_spec(good_db, spec, accepted):
    refused(["--db", good_db, "--latency", spec], spec, accepted)


@pytest.mark.parametrize("ptr,accepted", [
    ("metadata", ("/", "pointer")),
    ("/a/~2b", ("~0", "~1")),
])
def test_bad_json_pointer(good_db, ptr, accepted):
    refused(["--db", good_db, "--ignore-json", ptr], ptr, accepted)


@pytest.mark.parametrize("fields", ["method,colour", "headers"])
def test_unknown_match_field(good_db, fields):
    bad = "colour" if "colour" in fields else fields
    refused(["--db", good_db, "--match", fields], bad, ("query", "body"))


@pytest.mark.parametrize("flag,value,accepted", [
    ("--sequence-end", "forever", ("repeat-last", "cycle")),
    ("--on-miss", "explode", ("forward", "record")),
    ("--seed", "abc", ("integer", "number")),
])
def test_bad_policy_values(good_db, flag, value, accepted):
    refused(["--db", good_db, flag, value], value, accepted)


@pytest.mark.parametrize("config,names,accepted", [
    ({"latency": 5}, ["latency"], ("string",)),
    ({"match": {"fields": "method"}}, ["match.fields"], ("array", "list")),
    ({"routes": {"path": "/x"}}, ["routes"], ("array", "list")),
    ({"routes": [{"path": "/x", "latency": 200}]}, ["routes[0].latency"], ("string",)),
    ({"routes": [{"path": "/x", "match": {"ignore_query": [1]}}]},
     ["routes[0].match.ignore_query[0]"], ("string",)),
    ({"routes": [{"path": "/x", "match": {"headers": "x-a"}}]},
     ["routes[0].match.headers"], ("array", "list")),
    ({"redact": {"json": ["metadata"]}}, ["redact.json[0]", "metadata"], ("pointer", "/")),
    ({"match": {"ignore_json": ["metadata"]}}, ["match.ignore_json[0]", "metadata"],
     ("pointer", "/")),
    ({"latency": "fixed:abc"}, ["latency", "fixed:abc"], DURATION_UNITS),
    ({"match": {"fields": ["method", "colour"]}}, ["match.fields[1]", "colour"],
     ("query", "body")),
    ({"routes": [{"path": "/x", "latncy": "fixed:1ms"}]}, ["latncy"], ("unknown", "key")),
    ({"mtach": {}}, ["mtach"], ("unknown", "key")),
])
def test_bad_config_file(good_db, tmp_path, config, names, accepted):
    path = write_config(tmp_path, config, "bad-config.json")
    refused(["--db", good_db, "--config", path], str(path), accepted, names)


def test_config_file_not_json(good_db, tmp_path):
    path = write_config(tmp_path, '{"latency": "none",', "broken.json")
    refused(["--db", good_db, "--config", path], str(path), ("json", "parse", "syntax"))


def test_config_file_missing(good_db, tmp_path):
    path = tmp_path / "nowhere.json"
    refused(["--db", good_db, "--config", path], str(path),
            ("no such file", "cannot open", "not found"))
