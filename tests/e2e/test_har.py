"""Issue 6, end to end: HAR 1.2 and JSONL export/import, the reference HAR files of other
tools, and deterministic SQL text dumps. Recordings are made by the real binary in record
mode against the real upstream; replays run with that upstream stopped.
"""

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

import upstream as U
from harness import ApisimProcess, curl, query_db, run_apisim, upstream_server

REFERENCE_DIR = Path(os.environ.get("APISIM_SOURCE_DIR", Path(__file__).resolve().parents[2])) \
    .parent / "shared" / "reference" / "har"
POST_BODY = b'{"b": 2, "a": [1, 2], "text": "caf\xc3\xa9"}'
BINARY_POST = bytes(range(256)) * 3
SECRET = "Bearer har-secret-token-55"

# (path, curl args) recorded, then asked again of a replay of the re-imported recording.
REQUESTS = [
    ("/json", ("-H", f"Authorization: {SECRET}")),
    ("/echo?b=2&a=1", ()),
    ("/echo", ("-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
               POST_BODY)),
    ("/echo", ("-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary",
               "@BINARY")),
    ("/binary?n=300", ()),
    ("/gzip", ("--compressed",)),
    ("/sse?events=3&gap_ms=40", ()),
    ("/status/404", ()),
]


def curl_args(args, tmp):
    out = []
    for a in args:
        if a == "@BINARY":
            f = tmp / "binary.bin"
            f.write_bytes(BINARY_POST)
            a = f"@{f}"
        out.append(a.decode() if isinstance(a, bytes) else a)
    return out


def record(tmp, db, requests=REQUESTS):
    """Record `requests` through the real binary; returns the curl results."""
    got = []
    with upstream_server() as up:
        rec = ApisimProcess(["record", "--upstream", up.url, "--db", db])
        try:
            for path, args in requests:
                got.append(curl(rec.url + path, *curl_args(args, tmp)))
            stop = rec.stop()
        finally:
            rec.kill()
    assert stop.rc == 0, f"record exited {stop.rc}; stderr:\n{stop.stderr}"
    return got


def replay(tmp, db, requests, *extra):
    rep = ApisimProcess(["replay", "--db", db, *extra])
    try:
        got = [curl(rep.url + path, *curl_args(args, tmp)) for path, args in requests]
        stop = rep.stop()
    finally:
        rep.kill()
    assert stop.rc == 0, f"replay exited {stop.rc}; stderr:\n{stop.stderr}"
    return got


def assert_same_answers(recorded, replayed, requests):
    for (path, _), a, b in zip(requests, recorded, replayed):
        assert b.header("x-apisim-miss") is None, f"{path}: replay missed: {b!r}"
        assert (b.status, b.body) == (a.status, a.body), f"{path}: {b!r} != recorded {a!r}"


def export(db, fmt, out, *extra):
    p = run_apisim("export", "--db", db, "--format", fmt, "--output", out, *extra)
    assert p.returncode == 0, f"export --format {fmt} failed: {p.stderr}"
    assert p.stdout == "", "export with --output must write nothing to stdout"
    return Path(out)


def import_(db, f, *extra):
    return run_apisim("import", "--db", db, *extra, f)


EXCHANGE_FIELDS = ("method", "path", "query", "status", "request_headers", "request_body",
                   "response_headers", "response_body", "response_encoding", "ttfb_us",
                   "duration_us", "started_at", "complete", "error")


def exchanges(db):
    return [dict(r) for r in query_db(db, f"SELECT {', '.join(EXCHANGE_FIELDS)}, source, "
                                          "(SELECT json_group_array(json_array(offset_us, size))"
                                          " FROM chunks WHERE exchange_id = id) AS chunks "
                                          "FROM exchanges ORDER BY id")]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("har")
    db = tmp / "rec.db"
    return tmp, db, record(tmp, db)


# --- HAR and JSONL round trips --------------------------------------------------------------


def test_har_export_is_valid_har_1_2(recorded):
    tmp, db, _ = recorded
    har = json.loads(export(db, "har", tmp / "out.har").read_text())
    log = har["log"]
    assert log["version"] == "1.2"
    assert log["creator"]["name"] == "apisim" and log["creator"]["version"]
    assert len(log["entries"]) == len(REQUESTS)
    for e, (path, _) in zip(log["entries"], REQUESTS):
        assert e["startedDateTime"].endswith("Z") and isinstance(e["time"], (int, float))
        req, resp = e["request"], e["response"]
        assert req["url"].startswith("http://127.0.0.1:") and req["url"].endswith(path)
        assert req["httpVersion"] == "HTTP/1.1" and req["headersSize"] == -1
        assert all(set(h) == {"name", "value"} for h in req["headers"] + resp["headers"])
        assert isinstance(req["queryString"], list) and isinstance(req["cookies"], list)
        assert resp["redirectURL"] == "" and resp["headersSize"] == -1
        assert {"size", "mimeType"} <= set(resp["content"])
        t = e["timings"]
        assert t["send"] == 0 and t["wait"] >= 0 and t["receive"] >= 0
        assert abs(t["send"] + t["wait"] + t["receive"] - e["time"]) < 0.01
        assert e["cache"] == {}
    by_path = {e["request"]["url"].split("127.0.0.1:", 1)[1].split("/", 1)[1]: e
               for e in log["entries"] if e["request"]["method"] == "GET"}
    binary = by_path["binary?n=300"]["response"]["content"]
    assert binary["encoding"] == "base64"
    assert base64.b64decode(binary["text"]) == U.binary_body(300)
    text = by_path["json"]["response"]["content"]
    assert "encoding" not in text and text["text"].encode() == U.JSON_BODY
    gz = by_path["gzip"]["response"]["content"]
    assert gz["text"].encode() == U.ENCODED_TEXT, "HAR content is stored decoded"
    qs = by_path["echo?b=2&a=1"]["request"]["queryString"]
    assert qs == [{"name": "b", "value": "2"}, {"name": "a", "value": "1"}]
    post = [e for e in log["entries"] if e["request"]["method"] == "POST"][0]["request"]
    assert post["postData"]["text"].encode() == POST_BODY
    assert post["postData"]["mimeType"] == "application/json"
    put = [e for e in log["entries"] if e["request"]["method"] == "PUT"][0]["request"]
    assert put["postData"]["_encoding"] == "base64"
    assert base64.b64decode(put["postData"]["text"]) == BINARY_POST
    assert SECRET not in json.dumps(har)


@pytest.mark.parametrize("fmt", ["har", "jsonl"])
def test_round_trip_then_replay_answers_the_same(recorded, fmt):
    """record -> export -> import into a new database -> replay answers the same bytes."""
    tmp, db, answers = recorded
    f = export(db, fmt, tmp / f"rt.{fmt}")
    if fmt == "jsonl":
        lines = f.read_text().splitlines()
        assert len(lines) == len(REQUESTS)
        assert [json.loads(ln)["path"] for ln in lines] == [p.split("?")[0] for p, _ in REQUESTS]
    new = tmp / f"imported-{fmt}.db"
    p = import_(new, f)
    assert p.returncode == 0, p.stderr
    assert f"imported {len(REQUESTS)} of {len(REQUESTS)}" in p.stdout
    before, after = exchanges(db), exchanges(new)
    assert len(after) == len(before)
    for a, b in zip(before, after):
        for k in EXCHANGE_FIELDS:
            assert a[k] == b[k], f"{fmt} round trip changed {k} of {a['method']} {a['path']}"
        assert json.loads(a["chunks"]) == json.loads(b["chunks"]), "chunk timings lost"
        assert b["source"] == "import"
    assert_same_answers(answers, replay(tmp, new, REQUESTS), REQUESTS)


def test_round_trip_twice_gives_the_same_har(recorded):
    """Export is deterministic, and a HAR apisim wrote comes back exactly."""
    tmp, db, _ = recorded
    one = export(db, "har", tmp / "one.har").read_text()
    assert export(db, "har", tmp / "one-again.har").read_text() == one
    new = tmp / "again.db"
    assert import_(new, tmp / "one.har").returncode == 0
    two = json.loads(export(new, "har", tmp / "two.har").read_text())
    first = json.loads(one)
    for e in first["log"]["entries"] + two["log"]["entries"]:
        e["_apisim"].pop("source")  # record vs import
        e["request"]["url"] = e["request"]["url"].split("/", 3)[3]  # imports keep no upstream
    assert two["log"]["entries"] == first["log"]["entries"]


def test_export_one_session_and_stdout(tmp_path, recorded):
    tmp, db, _ = recorded
    p = run_apisim("export", "--db", db, "--format", "jsonl", "--session", "default",
                   cwd=tmp_path)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == len(REQUESTS)
    p = run_apisim("export", "--db", db, "--format", "har", "--session", "other", cwd=tmp_path)
    assert p.returncode == 1 and "other" in p.stderr and "default" in p.stderr
    assert not list(tmp_path.iterdir()), "export wrote a file nobody asked for"


# --- reference HAR files from other tools ---------------------------------------------------


def reference_files():
    return sorted(REFERENCE_DIR.glob("*.har")) if REFERENCE_DIR.is_dir() else []


@pytest.mark.parametrize("har_file", reference_files(), ids=lambda p: p.name)
def test_import_reference_har_and_replay(tmp_path, har_file):
    har = json.loads(har_file.read_text())
    entries = har["log"]["entries"]
    db = tmp_path / "ref.db"
    p = import_(db, har_file, "--session", "ref")
    assert p.returncode == 0, p.stderr
    assert f"imported {len(entries)} of {len(entries)}" in p.stdout
    rows = query_db(db, "SELECT * FROM exchanges ORDER BY id")
    assert len(rows) == len(entries)
    assert {r["source"] for r in rows} == {"import"} and {r["session"] for r in rows} == {"ref"}
    # No Cookie, Set-Cookie or Authorization header value from the file is stored (the
    # /echo bodies repeat the browser's cookie: bodies are the upstream's words, kept).
    for r in rows:
        for col in ("request_headers", "response_headers"):
            for name, value in json.loads(r[col]):
                if name.lower() in ("cookie", "set-cookie", "authorization"):
                    assert value == "[REDACTED]", f"{har_file.name}: {name} stored"
            assert "secret" not in r[col] and "test-token-123" not in r[col], r[col]
    assert any(json.loads(r["response_headers"]) for r in rows)
    assert query_db(db, "SELECT count(*) AS n FROM exchanges WHERE request_headers LIKE "
                        "'%[REDACTED]%'")[0]["n"] >= 1
    by = {(r["method"], r["path"], r["query"]): r for r in rows}
    gz = by[("GET", "/gzip", "")]
    assert gz["response_encoding"] == "gzip"
    assert json.loads(gz["response_body"])["compressed"] is True, "gzip body stored decoded"
    assert len(gz["response_body"]) == 232
    assert by[("GET", "/binary", "n=64")]["response_body"] == base64.b64decode(
        [e for e in entries if e["request"]["url"].endswith("/binary?n=64")][0]
        ["response"]["content"]["text"])
    assert by[("POST", "/echo", "")]["request_body"] == '{"hello":"world","n":42,"list":[1,2,3]}'

    # Replay answers from the imported entries, with nothing upstream at all.
    want = {e["request"]["url"].split("8080", 1)[1]: e for e in entries}
    rep = ApisimProcess(["replay", "--db", db, "--session", "ref"])
    try:
        echo = curl(rep.url + "/echo?b=2&a=1")
        binary = curl(rep.url + "/binary?n=64")
        gzip_ = curl(rep.url + "/gzip")
        missing = curl(rep.url + "/status/404")
        stop = rep.stop()
    finally:
        rep.kill()
    assert stop.rc == 0, stop.stderr
    assert echo.status == 200 and echo.header("x-apisim-miss") is None
    assert echo.body.decode() == want["/echo?b=2&a=1"]["response"]["content"]["text"]
    assert binary.body == base64.b64decode(want["/binary?n=64"]["response"]["content"]["text"])
    assert gzip_.status == 200 and json.loads(gzip_.body)["compressed"] is True
    assert gzip_.header("content-encoding") is None, "a decoded body must not claim gzip"
    assert missing.status == 404 and missing.header("x-apisim-miss") is None, (
        "the recorded 404 is an answer, not a miss")


# --- malformed input --------------------------------------------------------------------------


def entry(method="GET", url="http://h/ok", status=200, text="fine", **extra):
    e = {"startedDateTime": "2026-11-24T15:35:56.050Z", "time": 5,
         "request": {"method": method, "url": url, "httpVersion": "HTTP/1.1", "headers": []},
         "response": {"status": status, "statusText": "", "headers": [],
                      "content": {"size": len(text), "mimeType": "text/plain", "text": text}},
         "timings": {"send": 0, "wait": 2, "receive": 3}}
    e.update(extra)
    return e


def write_har(path, entries):
    path.write_text(json.dumps({"log": {"version": "1.2", "creator": {"name": "t"},
                                        "entries": entries}}))
    return path


def count(db):
    if not Path(db).exists():
        return 0
    return query_db(db, "SELECT count(*) AS n FROM exchanges")[0]["n"]


def test_bad_json_is_rejected_naming_file_and_place(tmp_path):
    f = tmp_path / "broken.har"
    f.write_text('{"log": {"version": "1.2",\n "entries": [{"request": ')
    db = tmp_path / "x.db"
    p = import_(db, f)
    assert p.returncode == 1
    assert "broken.har" in p.stderr and "not valid JSON" in p.stderr and "line 2" in p.stderr
    assert count(db) == 0


def test_not_a_har_is_rejected(tmp_path):
    db = tmp_path / "x.db"
    f = tmp_path / "nolog.har"
    f.write_text('{"log": {"version": "1.2"}}')
    p = import_(db, f)
    assert p.returncode == 1 and "log.entries is missing" in p.stderr
    f = tmp_path / "text.har"
    f.write_text("GET / HTTP/1.1\n")
    p = import_(db, f)
    assert p.returncode == 1 and "neither HAR nor JSONL" in p.stderr
    p = import_(db, tmp_path / "absent.har")
    assert p.returncode == 1 and "absent.har" in p.stderr
    assert count(db) == 0


def test_bad_entries_are_skipped_one_by_one_with_reasons(tmp_path):
    huge = "x" * 4096
    no_request = entry()
    del no_request["request"]
    f = write_har(tmp_path / "mixed.har", [
        entry(url="http://h/good-1"),
        no_request,
        entry(url="http://h/wrong-type", status="200"),
        entry(url="http://h/huge", text=huge),
        entry(url="http://h/bad-base64", response={
            "status": 200, "headers": [],
            "content": {"size": 3, "mimeType": "x", "text": "!!!", "encoding": "base64"}}),
        entry(url="http://h/header-type", request={
            "method": "GET", "url": "http://h/header-type",
            "headers": [{"name": "X-A", "value": {"nested": 1}}]}),
        entry(url="http://h/good-2", text="also fine"),
    ])
    db = tmp_path / "x.db"
    p = import_(db, f, "--max-body", "1KiB")
    assert p.returncode == 0, p.stderr
    assert "imported 2 of 7" in p.stdout
    skipped = [ln for ln in p.stderr.splitlines() if "skipped" in ln]
    assert len(skipped) == 5, p.stderr
    for idx, why in [(1, "request is missing"), (2, "response.status is a string"),
                     (3, "body cap"), (4, "not valid base64"),
                     (5, "request.headers[0].value is an object")]:
        assert any(f"entry {idx}" in ln and why in ln and "mixed.har" in ln for ln in skipped), (
            f"no message for entry {idx} ({why}):\n{p.stderr}")
    rows = query_db(db, "SELECT path, response_body FROM exchanges ORDER BY id")
    assert [(r["path"], r["response_body"]) for r in rows] == [
        ("/good-1", "fine"), ("/good-2", "also fine")]
    assert query_db(db, "SELECT count(*) AS n FROM chunks")[0]["n"] == 0


def test_a_file_with_nothing_usable_stores_nothing(tmp_path):
    f = write_har(tmp_path / "allbad.har", [entry(status=0), entry(method=5)])
    db = tmp_path / "x.db"
    p = import_(db, f, "--session", "s")
    assert p.returncode == 1 and "none of its 2 entries" in p.stderr
    assert "got no response" in p.stderr and "request.method is a number" in p.stderr
    assert count(db) == 0
    assert query_db(db, "SELECT count(*) AS n FROM sessions WHERE name = 's'")[0]["n"] == 0


def test_huge_entry_over_the_default_cap_is_skipped(tmp_path):
    """A 65 MiB body is over the default 64 MiB cap: skipped, the rest imported."""
    big = tmp_path / "big.har"
    with big.open("w") as f:
        f.write('{"log": {"version": "1.2", "creator": {"name": "t"}, "entries": [')
        f.write(json.dumps(entry(url="http://h/small")))
        e = entry(url="http://h/big", text="")
        e["response"]["content"]["text"] = "@@BIG@@"
        head, tail = json.dumps(e).split("@@BIG@@")
        f.write("," + head)
        chunk = "y" * (1 << 20)
        for _ in range(65):
            f.write(chunk)
        f.write(tail + "]}}")
    db = tmp_path / "x.db"
    p = import_(db, big)
    assert p.returncode == 0, p.stderr
    assert "imported 1 of 2" in p.stdout
    assert "entry 1" in p.stderr and "cap" in p.stderr
    assert [r["path"] for r in query_db(db, "SELECT path FROM exchanges")] == ["/small"]


def test_jsonl_bad_lines_are_skipped_with_line_numbers(tmp_path, recorded):
    _, db, _ = recorded
    lines = export(db, "jsonl", tmp_path / "in.jsonl").read_text().splitlines()
    broken = lines[:2] + ['{"method": "GET", "path": "/x"', "", '{"method": "GET"}'] + lines[2:3]
    f = tmp_path / "broken.jsonl"
    f.write_text("\n".join(broken) + "\n")
    new = tmp_path / "new.db"
    p = import_(new, f)
    assert p.returncode == 0, p.stderr
    assert "imported 3 of 5" in p.stdout
    assert "line 3" in p.stderr and "not valid JSON" in p.stderr
    assert "line 5" in p.stderr and "started_at is missing" in p.stderr
    assert count(new) == 3


def test_usage_errors(tmp_path, recorded):
    _, db, _ = recorded
    for args, needle in [
        (("import", "--db", tmp_path / "x.db"), "FILE"),
        (("import", "--db", tmp_path / "x.db", "--max-body", "lots", "f.har"), "lots"),
        (("import", "--db", tmp_path / "x.sql", "f.har"), "text dump"),
        (("export", "--db", db), "--format"),
        (("export", "--db", db, "--format", "xml"), "xml"),
        (("export", "--db", db, "--format", "sql", "--session", "default"), "--session"),
        (("export", "--db", db, "--format", "har", "--frobnicate"), "--frobnicate"),
    ]:
        p = run_apisim(*args)
        assert p.returncode == 2, f"{args}: exit {p.returncode}, stderr {p.stderr}"
        assert needle in p.stderr, f"{args}: {p.stderr}"
    assert not (tmp_path / "x.db").exists()


def test_export_refuses_to_overwrite_its_database(tmp_path, recorded):
    _, db, _ = recorded
    before = count(db)
    p = run_apisim("export", "--db", db, "--format", "sql", "--output", db)
    assert p.returncode == 2 and "database" in p.stderr
    assert count(db) == before


# --- SQL text dumps ---------------------------------------------------------------------------


def test_sql_dump_is_deterministic_and_loads_back_byte_identical(recorded):
    tmp, db, answers = recorded
    d1 = export(db, "sql", tmp / "d1.sql")
    text = d1.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("PRAGMA user_version=") and lines[1] == "BEGIN TRANSACTION;"
    assert text.endswith("\nCOMMIT;\n")
    assert text.count('INSERT INTO "exchanges" VALUES(') == len(REQUESTS)
    assert "X'" in text, "binary bodies are hex literals"
    assert export(db, "sql", tmp / "d1-again.sql").read_bytes() == d1.read_bytes()

    # Through the plain sqlite3 CLI.
    cli_db = tmp / "cli.db"
    with d1.open("rb") as f:
        p = subprocess.run(["sqlite3", str(cli_db)], stdin=f, capture_output=True)
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    assert export(cli_db, "sql", tmp / "d2.sql").read_bytes() == d1.read_bytes()

    # Through apisim's own loading of FILE.sql into memory.
    assert export(d1, "sql", tmp / "d3.sql").read_bytes() == d1.read_bytes()
    assert exchanges(cli_db) == exchanges(db)


def test_replay_straight_from_a_dump(recorded):
    tmp, db, answers = recorded
    d = export(db, "sql", tmp / "replay.sql")
    before = d.read_bytes()
    assert_same_answers(answers, replay(tmp, d, REQUESTS), REQUESTS)
    assert d.read_bytes() == before, "replaying a dump must not change it"
    p = run_apisim("ls", "--db", d)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == len(REQUESTS) + 1


def test_dump_of_awkward_values_round_trips(tmp_path, recorded):
    """Carriage returns (which the sqlite3 shell drops before a newline), quotes, NUL and
    non-UTF-8 text, reals and the views' trailing comments all survive dump -> load."""
    _, db, _ = recorded
    work = tmp_path / "awk.db"
    subprocess.run(["sqlite3", str(db), f".backup '{work}'"], check=True)
    subprocess.run(["sqlite3", str(work), """
        INSERT INTO exchanges (session, seq, started_at, method, path, status, response_body,
                               request_body, error)
        VALUES ('default', 100, '2026-11-24T00:00:00.000Z', 'POST', '/awkward', 200,
                'a' || char(13, 10) || 'b \\r '' ''' || char(13),
                CAST(X'00ff41' AS TEXT), 'it''s -- not a comment');
        CREATE TABLE extra (k TEXT PRIMARY KEY, r REAL, i INTEGER, b BLOB) WITHOUT ROWID;
        INSERT INTO extra VALUES ('one', 1.0, 9007199254740993, X''), ('two', 0.1, -1, NULL);
        """], check=True)
    d1 = export(work, "sql", tmp_path / "a1.sql")
    cli = tmp_path / "a-cli.db"
    with d1.open("rb") as f:
        subprocess.run(["sqlite3", str(cli)], stdin=f, check=True)
    assert export(cli, "sql", tmp_path / "a2.sql").read_bytes() == d1.read_bytes()
    assert export(d1, "sql", tmp_path / "a3.sql").read_bytes() == d1.read_bytes()
    q = ("SELECT hex(response_body) AS r, typeof(request_body) AS t, hex(request_body) AS q "
         "FROM exchanges WHERE path = '/awkward'")
    assert [dict(r) for r in query_db(cli, q)] == [dict(r) for r in query_db(work, q)]
    q = "SELECT k, r, typeof(r) AS tr, i, hex(b) AS b, typeof(b) AS tb FROM extra ORDER BY k"
    assert [dict(r) for r in query_db(cli, q)] == [dict(r) for r in query_db(work, q)]
