"""apisim.claude.make_scenario_recorder / make_scenario_player on real commands: a step
recorded into a cassette (and scenario.db) by `apisim claude-record`, then replayed by the
fake `claude` with the same lines, exit status and pacing."""

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from apisim._binary import find_binary
from apisim.claude import make_scenario_player, make_scenario_recorder
from apisim.errors import ApisimError, ScenarioError

# A command that prints JSON lines with pauses, says something on stderr, and exits 3.
STEP_SCRIPT = r"""
import io, json, sys, time
sys.stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8")
def out(o):
    sys.stdout.write(json.dumps(o, ensure_ascii=False) + "\n"); sys.stdout.flush()
out({"type": "system", "subtype": "init", "session_id": "rec-1"})
time.sleep(0.4)
sys.stderr.write("warning: slow\n"); sys.stderr.flush()
out({"type": "assistant", "message": {"content": [{"type": "text", "text": "caf\u00e9"}]}})
time.sleep(0.6)
out({"type": "result", "subtype": "success", "is_error": False, "result": "done"})
sys.exit(3)
"""
STEP_ARGS = [sys.executable, "-c", STEP_SCRIPT]


def lines_of(text):
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A scenario of three steps: `plan` (a session), `test` (not), `plan` again."""
    out = tmp_path_factory.mktemp("scenario")
    rec = make_scenario_recorder(output_dir=str(out), recipe_name="smoke-test")
    first = rec.record_step(step_name="plan", tool="run_skill", args=STEP_ARGS,
                            model="sonnet", session_log_dir=None)
    rec.record_non_session_step(step_name="test", tool="run_cmd",
                                result_summary={"exit_code": 0, "stdout_head": "4 passed"})
    second = rec.record_step(step_name="plan", tool="run_skill",
                             args=[sys.executable, "-c", "print('{\"type\": \"result\"}')"],
                             model="opus")
    rec.finalize()
    return out, rec, first, second


def test_cassette_path_contents_and_numbering(recorded):
    out, _, first, second = recorded
    assert first.cassette_path == str(out / "sessions" / "plan")
    assert second.cassette_path == str(out / "sessions" / "plan-2")
    assert first.cassette_exit_code == 3 and second.cassette_exit_code == 0
    assert 1000 <= first.cassette_duration_ms < 5000
    stdout = (out / "sessions" / "plan" / "stdout.jsonl").read_text(encoding="utf-8")
    assert [r["type"] for r in lines_of(stdout)] == ["system", "assistant", "result"]
    assert "café" in stdout and stdout.endswith("\n")
    assert stdout == first.stdout
    meta = json.loads((out / "sessions" / "plan" / "meta.json").read_text())
    assert meta["exit_code"] == 3 and meta["model"] == "sonnet" and meta["tool"] == "run_skill"
    assert meta["args"] == STEP_ARGS
    # Line timings: the pauses of the command, within 20 %.
    t = meta["line_offsets_ms"]
    assert len(t) == 3
    assert abs((t[1] - t[0]) - 400) <= 80 and abs((t[2] - t[1]) - 600) <= 120, t
    assert (out / "sessions" / "plan" / "stderr.txt").read_text() == "warning: slow\n"


def test_scenario_json_has_the_recipe_and_steps(recorded):
    out, rec, _, _ = recorded
    doc = json.loads((out / "scenario.json").read_text())
    assert doc["recipe"] == "smoke-test"
    assert [(s["step_name"], s["session_dir"]) for s in doc["steps"]] == [
        ("plan", "sessions/plan"), ("test", None), ("plan", "sessions/plan-2")]
    assert doc["steps"][1]["result_summary"] == {"exit_code": 0, "stdout_head": "4 passed"}
    assert doc["steps"][0]["exit_code"] == 3
    assert rec.steps == doc["steps"]


def test_scenario_db_has_the_same_steps_for_sqlite3(recorded):
    out, _, _, _ = recorded
    con = sqlite3.connect(out / "scenario.db")
    try:
        rows = con.execute(
            "SELECT s.recipe, s.step_name, s.tool, s.model, r.session, r.exit_code, "
            "s.result_summary FROM scenario_steps s LEFT JOIN claude_runs r ON r.id = s.run_id "
            "ORDER BY s.id").fetchall()
        lines = con.execute("SELECT count(*) FROM claude_lines l JOIN claude_runs r "
                            "ON r.id = l.run_id WHERE r.session = 'plan'").fetchone()[0]
    finally:
        con.close()
    assert rows[0] == ("smoke-test", "plan", "run_skill", "sonnet", "plan", 3, None)
    assert rows[1][:6] == ("smoke-test", "test", "run_cmd", None, None, None)
    assert json.loads(rows[1][6]) == {"exit_code": 0, "stdout_head": "4 passed"}
    assert rows[2][:6] == ("smoke-test", "plan", "run_skill", "opus", "plan-2", 0)
    assert lines == 3


def test_player_replays_line_for_line_with_status_and_pacing(recorded, tmp_path):
    out, _, first, _ = recorded
    player = make_scenario_player(scenario_dir=str(out), output_dir=str(tmp_path / "replay"),
                                  binary_path=str(tmp_path / "bin" / "claude"))
    scenario = player.scenario()
    assert scenario.recipe == "smoke-test"
    seq = scenario.step_sequence
    assert [r.step_name for r in seq] == ["plan", "test", "plan"]
    assert seq[1].session_dir is None
    assert seq[1].result_summary == {"exit_code": 0, "stdout_head": "4 passed"}
    assert seq[0].session_dir == str(out / "sessions" / "plan")
    session_map = player.build_session_map()
    assert list(session_map) == ["plan"]
    (cli, meta), (cli2, meta2) = session_map["plan"]
    assert (meta.exit_code, meta.model, meta2.exit_code, meta2.model) == (3, "sonnet", 0, "opus")
    assert meta.duration_ms == first.cassette_duration_ms
    assert os.path.islink(tmp_path / "bin" / "claude")

    t0 = time.monotonic()
    result = cli.run()
    elapsed = time.monotonic() - t0
    assert result.stdout.splitlines() == first.stdout.splitlines()   # line for line
    assert result.returncode == 3 == meta.exit_code
    assert result.stderr == "warning: slow\n"
    # Recorded pacing: the last line came 1.0 s after the first; within 20 %.
    t = json.loads((out / "sessions" / "plan" / "meta.json").read_text())["line_offsets_ms"]
    assert abs(elapsed * 1000 - t[-1]) <= 0.2 * t[-1], (elapsed, t)
    again = cli2.run()
    assert again.returncode == 0 and lines_of(again.stdout) == [{"type": "result"}]


def test_zero_steps_and_finalize_from_many_threads(tmp_path):
    rec = make_scenario_recorder(tmp_path, "empty-recipe")
    errors = []

    def fin():
        try:
            for _ in range(20):
                rec.finalize()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=fin) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert json.loads((tmp_path / "scenario.json").read_text()) == {
        "recipe": "empty-recipe", "steps": []}
    # no temporary files left
    assert sorted(os.listdir(tmp_path)) == ["scenario.db", "scenario.json"]
    # scenario.db has apisim's whole schema (what the binary creates) and no step.
    (tmp_path / "ref").mkdir()
    ref = tmp_path / "ref" / "init.db"
    subprocess.run([find_binary(None), "init", "--db", str(ref)], check=True,
                   capture_output=True)
    con = sqlite3.connect(tmp_path / "scenario.db")
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        schema = con.execute("PRAGMA user_version").fetchall() + con.execute(
            "SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        counts = [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("scenario_steps", "claude_runs", "claude_lines")]
    finally:
        con.close()
    con = sqlite3.connect(ref)
    try:
        want = con.execute("PRAGMA user_version").fetchall() + con.execute(
            "SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
    finally:
        con.close()
    assert schema == want and want[0][0] >= 1
    assert counts == [0, 0, 0]


def test_finalize_that_cannot_create_scenario_db_writes_no_scenario_json(tmp_path):
    rec = make_scenario_recorder(tmp_path, "r")
    # scenario.db a link into a directory that does not exist: sqlite cannot create it.
    os.symlink(tmp_path / "gone" / "x.db", tmp_path / "scenario.db")
    with pytest.raises(ScenarioError, match="cannot create .*scenario.db"):
        rec.finalize()
    assert sorted(os.listdir(tmp_path)) == ["scenario.db"]


def test_steps_from_threads_get_distinct_cassettes(tmp_path):
    rec = make_scenario_recorder(tmp_path, "parallel")
    args = [sys.executable, "-c", "print('{}')"]
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        rec.record_step(step_name="impl", tool="run_skill", args=args))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    rec.finalize()
    paths = sorted(os.path.basename(r.cassette_path) for r in results)
    assert paths == ["impl", "impl-2", "impl-3"]
    doc = json.loads((tmp_path / "scenario.json").read_text())
    assert sorted(s["session_dir"] for s in doc["steps"]) == [
        "sessions/impl", "sessions/impl-2", "sessions/impl-3"]


# ---- bad input: clear exceptions, nothing half-written ------------------------------------


def test_output_dir_that_does_not_exist(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ScenarioError, match="is not an existing directory: create it first"):
        make_scenario_recorder(str(missing), "r")
    assert not missing.exists()


def test_step_name_with_a_slash(tmp_path):
    rec = make_scenario_recorder(tmp_path, "r")
    for bad in ("a/b", "..", ""):
        with pytest.raises(ScenarioError, match="step_name"):
            rec.record_step(step_name=bad, tool="run_skill", args=["true"])
        with pytest.raises(ScenarioError, match="step_name"):
            rec.record_non_session_step(step_name=bad, tool="run_cmd", result_summary={})
    assert os.listdir(tmp_path) == []
    assert issubclass(ScenarioError, ApisimError)


def test_command_that_cannot_run_leaves_no_cassette(tmp_path):
    rec = make_scenario_recorder(tmp_path, "r")
    with pytest.raises(ScenarioError, match="/nonexistent/claude"):
        rec.record_step(step_name="plan", tool="run_skill", args=["/nonexistent/claude", "-p"])
    assert os.listdir(tmp_path / "sessions") == []
    rec.finalize()
    assert json.loads((tmp_path / "scenario.json").read_text())["steps"] == []
    with pytest.raises(ScenarioError, match="result_summary must be a dict"):
        rec.record_non_session_step(step_name="t", tool="run_cmd", result_summary=[1])


def test_player_on_a_directory_without_scenario_json(tmp_path):
    (tmp_path / "rec").mkdir()
    with pytest.raises(ScenarioError, match="no scenario.json in"):
        make_scenario_player(scenario_dir=str(tmp_path / "rec"),
                             output_dir=str(tmp_path / "out"),
                             binary_path=str(tmp_path / "out" / "claude"))
    assert not (tmp_path / "out").exists()
    (tmp_path / "rec" / "scenario.json").write_text('{"recipe": "r", "steps": [{"x": 1}]}')
    with pytest.raises(ScenarioError, match=r"steps\[0\] is not an object with a step_name"):
        make_scenario_player(tmp_path / "rec", tmp_path / "out", tmp_path / "out" / "claude")
    assert not (tmp_path / "out").exists()
