"""Issue 6, end to end: the README's "Inspecting recordings with sqlite3" queries, `apisim ls`
(text and --json) and `apisim show`, all against a recording made by the real binary in
record mode through a real upstream.

Every ```sh block of that README section is run as it is written (by sh, in a directory
holding rec.db) and must exit 0 and print the rows the recording implies, so the README
cannot drift from the schema.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

import upstream as U
from harness import ApisimProcess, curl, db_file_bytes, query_db, run_apisim, upstream_server

SECTION = "## Inspecting recordings with sqlite3"
SECRET_TOKEN = "Bearer inspect-secret-token-77"
SECRET_COOKIE = "sid=inspect-cookie-secret-88"
POST_BODY = '{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
SLOW_MS = 600
SSE_EVENTS, SSE_GAP_MS = 4, 60


def source_dir():
    d = os.environ.get("APISIM_SOURCE_DIR")
    return Path(d) if d else Path(__file__).resolve().parents[2]


def inspect_section():
    """The README section (or docs/inspect.md until it is folded into the README)."""
    for name in ("README.md", "docs/inspect.md"):
        p = source_dir() / name
        if p.exists():
            text = p.read_text()
            start = text.find(SECTION)
            if start >= 0:
                end = text.find("\n## ", start + len(SECTION))
                return name, text[start:end if end >= 0 else len(text)]
    pytest.fail(f"no '{SECTION}' section in README.md or docs/inspect.md")


def sh_blocks(section):
    return [b for b in re.findall(r"```sh\n(.*?)```", section, re.S)
            if b.lstrip().startswith("sqlite3 ")]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A real recording: the real binary in record mode against the real upstream."""
    d = tmp_path_factory.mktemp("inspect")
    db = d / "rec.db"
    results = {}
    with upstream_server() as up:
        rec = ApisimProcess(["record", "--upstream", up.url, "--db", db])
        try:
            u = rec.url
            # Secrets go to an endpoint that does not echo them back in its body.
            results["json"] = curl(u + "/json", "-H", f"Authorization: {SECRET_TOKEN}",
                                   "-H", f"Cookie: {SECRET_COOKIE}")
            results["echo_get"] = curl(u + "/echo?b=2&a=1", "-H", "X-Test: 1")
            results["echo_post"] = curl(
                u + "/echo", "-X", "POST", "-H", "Content-Type: application/json",
                "--data-binary", POST_BODY)
            results["404"] = curl(u + "/status/404")
            results["500"] = curl(u + "/status/500")
            results["slow"] = curl(u + f"/slow?ms={SLOW_MS}")
            results["sse"] = curl(u + f"/sse?events={SSE_EVENTS}&gap_ms={SSE_GAP_MS}")
            results["gzip"] = curl(u + "/gzip", "--compressed")
            results["binary"] = curl(u + "/binary?n=64")
            stop = rec.stop()
        finally:
            rec.kill()
    assert stop.rc == 0, f"record exited {stop.rc}; stderr:\n{stop.stderr}"
    assert results["sse"].body == U.sse_body(SSE_EVENTS)
    return db, results


def ids_by_path(db):
    return {r["path"]: r["id"] for r in query_db(db, "SELECT id, path FROM exchanges")}


def run_block(block, cwd):
    p = subprocess.run(["sh", "-c", block], cwd=cwd, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, f"README query failed (exit {p.returncode}):\n{block}\n{p.stderr}"
    assert p.stderr == "", f"README query wrote to stderr:\n{block}\n{p.stderr}"
    return p.stdout.splitlines()


# --- what each README query must print ----------------------------------------------------


def check_summary(lines, db, res):
    statuses = {}
    for r in res.values():
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    assert len(lines) == 1, lines
    session, count, st = lines[0].split("|", 2)
    assert (session, int(count)) == ("default", len(res))
    assert json.loads(st) == statuses


def check_by_path(lines, db, res):
    ids = [r["id"] for r in query_db(db, "SELECT id FROM exchanges WHERE path = '/echo' "
                                         "ORDER BY id")]
    assert lines == [f"{ids[0]}|GET|b=2&a=1|200", f"{ids[1]}|POST||200"]


def check_body(lines, db, res):
    assert "\n".join(lines).encode() == U.JSON_BODY


def check_json_extract(lines, db, res):
    assert lines == ["world|3|application/json"]


def check_slow(lines, db, res):
    slow_id = ids_by_path(db)["/slow"]
    rows = [ln.split("|") for ln in lines]
    assert str(slow_id) in [r[0] for r in rows], f"/slow not listed as slow: {lines}"
    for r in rows:
        assert float(r[4]) > 400, f"listed as slow but took {r[4]} ms: {r}"
    slow = [r for r in rows if r[0] == str(slow_id)][0]
    assert slow[1:3] == ["GET", "/slow"] and float(slow[4]) >= SLOW_MS
    # Everything faster than the threshold stays out.
    fast = query_db(db, "SELECT id FROM exchanges WHERE duration_us <= 400000")
    assert not {str(r["id"]) for r in fast} & {r[0] for r in rows}


def check_by_status(lines, db, res):
    counts = {}
    for r in res.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    assert lines == [f"{s}|{n}" for s, n in sorted(counts.items())]


def check_chunks(lines, db, res):
    rows = [ln.split("|") for ln in lines]
    assert len(rows) >= 2, f"a stream with {SSE_GAP_MS} ms gaps arrived in one piece? {lines}"
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    offsets = [float(r[1]) for r in rows]
    assert offsets == sorted(offsets)
    assert offsets[-1] - offsets[0] >= (SSE_EVENTS - 1) * SSE_GAP_MS * 0.8, offsets
    assert sum(int(r[2]) for r in rows) == len(U.sse_body(SSE_EVENTS))


def check_encoded_or_binary(lines, db, res):
    assert lines == [f"/gzip|gzip|{len(U.ENCODED_TEXT)}", "/binary|binary|64"]


def check_secrets(lines, db, res):
    json_id = ids_by_path(db)["/json"]
    rows = sorted(tuple(ln.split("|")) for ln in lines)
    assert (str(json_id), "Authorization", "[REDACTED]") in rows, lines
    assert (str(json_id), "Cookie", "[REDACTED]") in rows, lines
    assert all(r[2] == "[REDACTED]" for r in rows), lines
    raw = db_file_bytes(db)
    assert SECRET_TOKEN.encode() not in raw and SECRET_COOKIE.encode() not in raw


CHECKS = [
    ("FROM session_summary", check_summary),
    ("WHERE path = '/echo'", check_by_path),
    ("SELECT response_body FROM exchanges_text", check_body),
    ("json_extract(response_body", check_json_extract),
    ("duration_ms > 400", check_slow),
    ("GROUP BY status", check_by_status),
    ("FROM chunks", check_chunks),
    ("response_encoding IS NOT NULL", check_encoded_or_binary),
    ("'authorization'", check_secrets),
]


def test_readme_queries_run_against_a_real_recording(recording):
    db, res = recording
    name, section = inspect_section()
    blocks = sh_blocks(section)
    assert len(blocks) >= 6, f"{name}: the section needs at least six sqlite3 queries"
    used = set()
    for block in blocks:
        assert block.lstrip().startswith("sqlite3 rec.db"), block
        matched = [(key, fn) for key, fn in CHECKS if key in block]
        assert len(matched) == 1, (
            f"{name}: every query needs exactly one expectation in CHECKS; this one has "
            f"{len(matched)}:\n{block}")
        key, fn = matched[0]
        assert key not in used, f"two README queries match {key!r}"
        used.add(key)
        fn(run_block(block, db.parent), db, res)
    assert used == {k for k, _ in CHECKS}, f"queries gone from {name}: {set(dict(CHECKS)) - used}"


def test_views_exist_with_comments(recording):
    db, _ = recording
    views = {r["name"]: r["sql"] for r in query_db(
        db, "SELECT name, sql FROM sqlite_master WHERE type = 'view'")}
    for v in ("exchanges_text", "session_summary", "misses", "stubs"):
        assert v in views, f"view {v} missing"
        assert "--" in views[v], f"view {v} has no comments inside its statement"


def test_exchanges_text_headers_are_json_objects(recording):
    db, _ = recording
    row = query_db(db, "SELECT request_headers, response_headers, request_body, response_body, "
                       "response_bytes FROM exchanges_text WHERE method = 'POST'")[0]
    req = json.loads(row["request_headers"])
    assert req["content-type"] == "application/json"
    secret = json.loads(query_db(db, "SELECT request_headers FROM exchanges_text "
                                     "WHERE path = '/json'")[0]["request_headers"])
    assert secret["authorization"] == "[REDACTED]" and secret["cookie"] == "[REDACTED]"
    assert json.loads(row["response_headers"])["content-type"] == "application/json"
    assert row["request_body"] == POST_BODY
    assert row["response_bytes"] == len(row["response_body"].encode())
    binary = query_db(db, "SELECT response_body, response_bytes FROM exchanges_text "
                          "WHERE path = '/binary'")[0]
    assert binary["response_body"] is None and binary["response_bytes"] == 64


# --- apisim ls ------------------------------------------------------------------------------


def test_ls_text_columns(recording):
    db, res = recording
    p = run_apisim("ls", "--db", db)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "ID  SESSION  METHOD  URL  STATUS  BYTES  TTFB_MS"
    rows = [ln.split("  ") for ln in lines[1:]]
    assert all(len(r) == 7 for r in rows), lines
    db_rows = query_db(db, "SELECT id, method, path, query, status, "
                           "length(CAST(response_body AS BLOB)) AS n, ttfb_us FROM exchanges "
                           "ORDER BY id")
    assert len(rows) == len(db_rows) == len(res)
    for r, d in zip(rows, db_rows):
        url = d["path"] + ("?" + d["query"] if d["query"] else "")
        assert r[:6] == [str(d["id"]), "default", d["method"], url, str(d["status"]),
                         str(d["n"] or 0)]
        assert abs(float(r[6]) - d["ttfb_us"] / 1000) <= 0.05 + 1e-9


def test_ls_json_is_one_array(recording):
    db, res = recording
    p = run_apisim("ls", "--db", db, "--json")
    assert p.returncode == 0, p.stderr
    items = json.loads(p.stdout)
    assert isinstance(items, list) and len(items) == len(res)
    by_url = {i["url"]: i for i in items}
    b = by_url["/binary?n=64"]
    assert (b["method"], b["status"], b["bytes"], b["session"]) == ("GET", 200, 64, "default")
    assert by_url["/echo?b=2&a=1"]["query"] == "b=2&a=1"
    assert by_url[f"/slow?ms={SLOW_MS}"]["duration_ms"] >= SLOW_MS
    assert [i["id"] for i in items] == sorted(i["id"] for i in items)


def test_ls_unknown_session_names_the_ones_there(recording):
    db, _ = recording
    p = run_apisim("ls", "--db", db, "--session", "nope")
    assert p.returncode == 1
    assert "nope" in p.stderr and "default" in p.stderr


def test_ls_usage_errors(recording):
    db, _ = recording
    p = run_apisim("ls", "--db", db, "--bogus")
    assert p.returncode == 2 and "--bogus" in p.stderr
    p = run_apisim("ls", "--db", db.parent / "missing.db")
    assert p.returncode == 1 and "missing.db" in p.stderr


# --- apisim show ----------------------------------------------------------------------------


def test_show_prints_an_http_transcript(recording):
    db, res = recording
    post_id = query_db(db, "SELECT id FROM exchanges WHERE method = 'POST'")[0]["id"]
    p = run_apisim("show", "--db", db, post_id)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    req_start = lines.index("> POST /echo HTTP/1.1")
    assert "> Content-Type: application/json" in lines
    blank = lines.index("", req_start)
    assert all(ln.startswith("> ") for ln in lines[req_start:blank])
    assert lines[blank + 1] == POST_BODY
    resp_start = lines.index("< HTTP/1.1 200 OK")
    assert resp_start > blank + 1
    resp_blank = lines.index("", resp_start)
    assert "< Content-Type: application/json" in lines[resp_start:resp_blank]
    body = "\n".join(lines[resp_blank + 1:])
    assert json.loads(body) == res["echo_post"].json()


def test_show_redacted_headers(recording):
    db, _ = recording
    p = run_apisim("show", "--db", db, ids_by_path(db)["/json"])
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "> GET /json HTTP/1.1" in lines
    assert "> Authorization: [REDACTED]" in lines and "> Cookie: [REDACTED]" in lines
    assert SECRET_TOKEN not in p.stdout and SECRET_COOKIE not in p.stdout
    assert "\n".join(lines[lines.index("", lines.index("< HTTP/1.1 200 OK")) + 1:]).encode() \
        == U.JSON_BODY


def test_show_binary_body_and_query(recording):
    db, _ = recording
    bin_id = ids_by_path(db)["/binary"]
    p = run_apisim("show", "--db", db, bin_id)
    assert p.returncode == 0, p.stderr
    assert "> GET /binary?n=64 HTTP/1.1" in p.stdout.splitlines()
    assert p.stdout.rstrip("\n").endswith("[64 bytes binary]")


def test_show_errors(recording):
    db, _ = recording
    p = run_apisim("show", "--db", db, "99999")
    assert p.returncode == 1 and "99999" in p.stderr
    p = run_apisim("show", "--db", db, "abc")
    assert p.returncode == 2 and "abc" in p.stderr
    p = run_apisim("show", "--db", db)
    assert p.returncode == 2 and "ID" in p.stderr
