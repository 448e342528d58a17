"""The recording file itself: `apisim init` creates or upgrades one."""

import os
import sqlite3

from harness import query_db, run_apisim

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
