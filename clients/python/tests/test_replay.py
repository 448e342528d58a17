"""Replay through apisim.Server / the apisim_replay fixture: a recording made here against a
tiny upstream, and every bundled recording in recordings/*.sql."""

import glob
import json
import os
import sqlite3
import subprocess

import pytest

from _support import fetch, upstream
from apisim import Server

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BUNDLED = sorted(glob.glob(os.path.join(REPO, "recordings", "*.sql")))

# Request headers not worth sending back: the transport's own, and what was redacted.
_SKIP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "accept-encoding",
                 "keep-alive", "te", "upgrade", "proxy-connection"}


def record(tmp_path, apisim_bin, requests):
    """Record `requests` [(method, path, body)] through `apisim record` against a tiny
    upstream; returns (db path, [responses as the client saw them])."""
    db = tmp_path / "rec.db"
    seen = []
    with upstream() as up:
        with Server("record", args=["--upstream", up, "--db", str(db)]) as rec:
            for method, path, body in requests:
                seen.append(fetch(rec.url + path, method=method, body=body))
        assert rec.returncode == 0, rec.stderr()
    return db, seen


def test_replay_of_a_recording_made_here(tmp_path, apisim_bin, apisim_replay):
    requests = [("GET", "/hello?name=ada", None), ("POST", "/items", {"n": 1}),
                ("GET", "/hello?name=ada", None)]
    db, recorded = record(tmp_path, apisim_bin, requests)
    assert [r.status for r in recorded] == [200, 201, 200]
    assert recorded[1].json()["body"] == '{"n": 1}'

    # as a text dump, the form recordings are committed in (FILE.sql is loaded into memory)
    dump = tmp_path / "rec.sql"
    out = subprocess.run([apisim_bin, "export", "--db", str(db), "--format", "sql"],
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    dump.write_bytes(out.stdout)

    for source in (db, dump):
        server = apisim_replay(source)
        assert server.mode == "replay" and server.health()["mode"] == "replay"
        replayed = [fetch(server.url + p, method=m, body=b) for m, p, b in requests]
        assert [(r.status, r.json()) for r in replayed] == [
            (r.status, r.json()) for r in recorded]
        assert replayed[0].header("x-upstream") == "tiny"
        miss = fetch(server.url + "/never-recorded")
        assert miss.status == 404 and miss.header("x-apisim-miss") == "1"
        journal = server.get_requests()
        assert [(q["method"], q["path"]) for q in journal] == [
            ("GET", "/hello"), ("POST", "/items"), ("GET", "/hello"), ("GET", "/never-recorded")]
        assert all(q["matched"] is not None for q in journal[:3])
        assert journal[3]["matched"] is None
        assert server.request_count("GET", "/hello") == 2


def _exchanges(dump):
    """(session, [exchange rows]) of a text dump, loaded with Python's sqlite3."""
    con = sqlite3.connect(":memory:")
    con.row_factory = sqlite3.Row
    with open(dump, encoding="utf-8") as f:
        con.executescript(f.read())
    tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    if "exchanges" not in tables:
        return []
    out = []
    for (session,) in con.execute("select name from sessions order by name").fetchall():
        rows = con.execute(
            "select * from exchanges where session = ? and source != 'stub' and complete = 1 "
            "order by seq limit 20", (session,)).fetchall()
        if rows:
            out.append((session, rows))
    return out


def _as_bytes(v):
    if v is None:
        return b""
    return v.encode("utf-8") if isinstance(v, str) else bytes(v)


@pytest.mark.skipif(not BUNDLED, reason="no recordings/*.sql in this tree yet "
                    "(test_replay_of_a_recording_made_here covers replay meanwhile)")
@pytest.mark.parametrize("dump", BUNDLED, ids=[os.path.basename(p) for p in BUNDLED])
def test_bundled_recording_replays_what_it_recorded(dump, apisim_replay):
    sessions = _exchanges(dump)
    if not sessions:
        pytest.skip(f"{os.path.basename(dump)} holds no HTTP exchanges (a CLI recording)")
    for session, rows in sessions:
        server = apisim_replay(dump, session=session)
        for row in rows:
            headers = {k: v for k, v in json.loads(row["request_headers"])
                       if k.lower() not in _SKIP_HEADERS and v != "[REDACTED]"}
            path = row["path"] + ("?" + row["query"] if row["query"] else "")
            got = fetch(server.url + path, method=row["method"],
                        body=_as_bytes(row["request_body"]) or None, headers=headers)
            what = f"{session} exchange {row['id']} {row['method']} {path}"
            assert got.status == row["status"], what
            assert got.header("x-apisim-miss") is None, what
            if row["response_encoding"] is None:
                assert got.body == _as_bytes(row["response_body"]), what
        assert server.request_count() == len(rows)
        assert all(q["matched"] is not None for q in server.get_requests())
