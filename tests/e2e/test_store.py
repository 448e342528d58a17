"""The recording file itself: `apisim init` creates or upgrades one, and processes that open
the same new database at the same moment (two recorders started together on one --db) all
get a complete schema, applied once.
"""

import os
import signal
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor

from harness import ApisimProcess, child_env, query_db, run_apisim

SCHEMA_DIR = os.path.join(os.environ.get("APISIM_SOURCE_DIR",
                                         os.path.join(os.path.dirname(__file__), "..", "..")),
                          "schema")


def rows(db, sql):
    """The rows of sql on the file db, as tuples."""
    return [tuple(r) for r in query_db(db, sql)]


def schema_of(db):
    """(user_version, [(type, name, sql), ...] of every schema object), for comparing."""
    version = query_db(db, "PRAGMA user_version")[0][0]
    objects = rows(db, "SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
    return version, objects


def fresh_schema(tmp_path):
    """The schema of a database one `apisim init` created alone."""
    db = tmp_path / "alone.db"
    p = run_apisim("init", "--db", db)
    assert p.returncode == 0, p.stderr
    return schema_of(db)


# --- apisim init ------------------------------------------------------------------------


def test_init_creates_an_empty_database_with_the_schema(apisim_bin, tmp_path):
    db = tmp_path / "new.db"
    p = run_apisim("init", "--db", db)
    assert p.returncode == 0, p.stderr
    version, objects = schema_of(db)
    assert version == len([f for f in os.listdir(SCHEMA_DIR) if f.endswith(".sql")])
    assert p.stdout == f"{db}: apisim schema version {version} (created)\n"
    names = {name for _, name, _ in objects}
    assert {"sessions", "exchanges", "claude_runs", "claude_lines",
            "scenario_steps"} <= names, names
    for table in ("sessions", "exchanges", "claude_runs", "scenario_steps"):
        assert rows(db, f"SELECT count(*) FROM {table}") == [(0,)]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]

    # Again on the same file: nothing to do, nothing changed, the same answer.
    p = run_apisim("init", "--db", db)
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"{db}: apisim schema version {version}\n"
    assert schema_of(db) == (version, objects)


def test_init_defaults_to_apisim_db_in_the_working_directory(apisim_bin, tmp_path):
    p = run_apisim("init", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("apisim.db: apisim schema version ")
    assert rows(tmp_path / "apisim.db", "PRAGMA integrity_check") == [("ok",)]


def test_init_upgrades_an_older_database_keeping_its_rows(apisim_bin, tmp_path):
    want = fresh_schema(tmp_path)
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    with open(os.path.join(SCHEMA_DIR, sorted(os.listdir(SCHEMA_DIR))[0])) as f:
        con.executescript(f.read())
    con.execute("PRAGMA user_version = 1")
    con.execute("INSERT INTO sessions (name, created_at) VALUES ('old', '2026-01-01T00:00:00Z')")
    con.commit()
    con.close()
    p = run_apisim("init", "--db", db)
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"{db}: apisim schema version {want[0]}\n"
    assert schema_of(db) == want
    assert rows(db, "SELECT name FROM sessions") == [("old",)]


def test_init_bad_input(apisim_bin, tmp_path):
    p = run_apisim("init", "--db", tmp_path / "x.sql")
    assert p.returncode == 2 and "text dump" in p.stderr and "x.sql" in p.stderr, p.stderr
    p = run_apisim("init", "stray", cwd=tmp_path)
    assert p.returncode == 2 and "stray" in p.stderr, p.stderr
    p = run_apisim("init", "--session", "s", cwd=tmp_path)
    assert p.returncode == 2 and "--session" in p.stderr, p.stderr
    assert os.listdir(tmp_path) == [], "a usage error wrote a file"

    missing = tmp_path / "no-such-dir" / "x.db"
    p = run_apisim("init", "--db", missing)
    assert p.returncode == 1 and str(missing) in p.stderr, p.stderr

    text = tmp_path / "notes.db"
    text.write_text("not a database\n")
    p = run_apisim("init", "--db", text)
    assert p.returncode == 1 and "notes.db" in p.stderr and "SQLite" in p.stderr, p.stderr
    assert text.read_text() == "not a database\n"


# --- many processes, one new database -------------------------------------------------------


def start_together(argvs, cwd):
    """Start every argv before waiting for any; return their CompletedProcess-like results
    (returncode, stdout, stderr) in order."""
    procs = [subprocess.Popen(a, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=child_env(), cwd=cwd, text=True)
             for a in argvs]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        results.append((p.returncode, out, err))
    return results


def test_processes_creating_one_database_at_once_all_succeed(apisim_bin, tmp_path):
    """Before migrations took the write lock first, most of these failed with `table
    sessions already exists`: each saw version 0 and applied the schema again."""
    want = fresh_schema(tmp_path)
    n = 8
    for round_ in range(3):
        db = tmp_path / f"new{round_}.db"
        argvs = []
        for k in range(n):
            if k % 4 == 3:
                argvs.append([apisim_bin, "init", "--db", str(db)])
            else:
                argvs.append([apisim_bin, "claude-record", "--db", str(db), "--session",
                              f"s{k}", "--", "sh", "-c", f"echo '{{\"k\":{k}}}'"])
        results = start_together(argvs, tmp_path)
        for argv, (rc, out, err) in zip(argvs, results):
            assert rc == 0, f"round {round_}: {argv[1]} exited {rc}: {err}"
        assert rows(db, "PRAGMA integrity_check") == [("ok",)]
        assert schema_of(db) == want
        recorded = n - n // 4
        assert rows(db, "SELECT count(*), count(DISTINCT session) FROM claude_runs") == \
            [(recorded, recorded)]
        assert rows(db, "SELECT line FROM claude_lines WHERE run_id IN "
                            "(SELECT id FROM claude_runs WHERE session = 's0')") == \
            [('{"k":0}',)]


def test_record_servers_started_together_on_one_new_database(apisim_bin, tmp_path):
    want = fresh_schema(tmp_path)
    db = tmp_path / "new.db"
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(ApisimProcess, ["record", "--upstream", "http://127.0.0.1:9",
                                                 "--db", db, "--session", f"r{k}"])
                   for k in range(3)]
        servers, errors = [], []
        for f in futures:
            try:
                servers.append(f.result())
            except AssertionError as e:  # exited before listening: the race
                errors.append(str(e))
    try:
        assert not errors, errors
        assert rows(db, "PRAGMA integrity_check") == [("ok",)]
        assert schema_of(db) == want
    finally:
        for s in servers:
            rc, err = s.stop(signal.SIGTERM)
            assert rc == 0, err
