"""apisim.FakeClaude against the real `apisim claude`: every preset, every scenario method,
run()'s results and session logs, and the context manager that puts `claude` on PATH."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from apisim import PRESETS, ApisimError, FakeClaude, slug

STREAM = ["-p", "hello", "--output-format", "stream-json", "--verbose"]


def assistant(text):
    return {"type": "assistant", "message": {
        "id": "msg_test", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": text}], "stop_reason": None,
        "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 2}},
        "parent_tool_use_id": None}


def result(text, is_error=False):
    return {"type": "result", "subtype": "success", "is_error": is_error, "num_turns": 1,
            "result": text, "stop_reason": "end_turn", "total_cost_usd": 0}


@pytest.fixture
def claudes():
    """Factory of FakeClaude objects, closed (temporary files removed) after the test."""
    made = []

    def make(**kwargs):
        made.append(FakeClaude(**kwargs))
        return made[-1]

    yield make
    for fc in made:
        fc.close()


@pytest.fixture
def two_records(claudes):
    """Factory: a FakeClaude with one assistant text record ("one") and a result."""
    return lambda: claudes().add_message(assistant("one")).add_message(result("one"))


def texts(records):
    return [c.get("text") for r in records if r.get("type") == "assistant"
            for c in r["message"].get("content", []) if c.get("type") == "text"]


def assert_well_formed(res):
    """Every record parsed is a typed object of one session, the init record first."""
    assert res.records, f"no records; stderr: {res.stderr}"
    assert all(isinstance(r, dict) and "type" in r for r in res.records)
    assert (res.records[0]["type"], res.records[0].get("subtype")) == ("system", "init")
    assert res.session_id
    assert {r["session_id"] for r in res.records if "session_id" in r} == {res.session_id}


# ---- presets: what a session classifier sees ---------------------------------------------

def check_success(res):
    assert res.result["subtype"] == "success" and res.result["is_error"] is False
    assert res.result["result"] == texts(res.records)[-1]


def check_context_exhaustion(res):
    assert "prompt is too long" in res.stdout.lower()


def check_max_turns(res):
    assert res.result["subtype"] == "error_max_turns" and res.result["is_error"] is True


def check_api_retry(res):
    retries = res.records_of("system", "api_retry")
    assert len(retries) >= 1 and all(r["error_status"] == 529 for r in retries)
    assert [r["attempt"] for r in retries] == list(range(1, len(retries) + 1))
    assert res.result["is_error"] is False


def check_api_retry_exhausted(res):
    retries = res.records_of("system", "api_retry")
    assert len(retries) == retries[0]["max_retries"]
    assert res.result["is_error"] is True and res.result["api_error_status"] == 529


def check_corrupt_stream(res):
    assert len(res.invalid_lines) == 1
    index, line = res.invalid_lines[0]
    assert index > 0
    with pytest.raises(ValueError):
        json.loads(line)


def check_truncated(res):
    assert res.result is None
    assert res.stdout.endswith("\n")   # cut between records, not inside one


def check_interrupted(res):
    assert res.result is None


PRESET_CASES = {
    # name: (exit code, check)
    "success": (0, check_success),
    "context-exhaustion": (1, check_context_exhaustion),
    "max-turns": (1, check_max_turns),
    "api-retry": (0, check_api_retry),
    "api-retry-exhausted": (1, check_api_retry_exhausted),
    "corrupt-stream": (1, check_corrupt_stream),
    "truncated": (1, check_truncated),
    "interrupted": (130, check_interrupted),
}


def test_every_preset_is_covered():
    assert set(PRESET_CASES) | {"hang-after-result"} == set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESET_CASES))
def test_preset_records_exit_code_and_session_log(name, fake_claude, tmp_path):
    exit_code, check = PRESET_CASES[name]
    res = fake_claude.preset(name).run(STREAM, cwd=tmp_path)
    assert res.exit_code == exit_code, f"{name}: stderr {res.stderr!r}"
    assert not res.timed_out
    assert_well_formed(res)
    check(res)
    # the session log lives in the temporary CLAUDE_CONFIG_DIR, under the slug of the cwd
    assert res.session_log_dir != os.path.expanduser("~/.claude")
    expected = os.path.join(res.session_log_dir, "projects", slug(str(tmp_path)),
                            res.session_id + ".jsonl")
    assert res.session_log_path == expected
    assert os.path.isfile(expected), f"files: {os.listdir(res.session_log_dir)}"
    assert {e.get("sessionId") for e in res.session_log() if "sessionId" in e} == {
        res.session_id}


def test_hang_after_result_preset_stays_alive_until_interrupted(fake_claude):
    t0 = time.monotonic()
    res = fake_claude.preset("hang-after-result").run(STREAM, timeout=1.0)
    assert time.monotonic() - t0 >= 1.0
    assert res.timed_out
    assert res.result is not None and res.result["is_error"] is False
    assert res.exit_code == 130   # run() interrupts it with SIGINT


def test_no_scenario_runs_the_success_preset(fake_claude):
    res = fake_claude.run()       # no args: DEFAULT_ARGS, stream-json
    assert res.exit_code == 0
    assert res.result["subtype"] == "success"
    assert res.args == ["-p", "hello", "--output-format", "stream-json", "--verbose"]


def test_preset_and_scenario_edits_do_not_mix():
    with pytest.raises(ApisimError, match="preset"):
        FakeClaude().preset("success").add_message(result("x"))
    with pytest.raises(ApisimError, match="preset"):
        FakeClaude().set_exit_code(3).preset("success")


def test_unknown_preset_fails_with_apisims_message(fake_claude):
    res = fake_claude.preset("no-such-preset").run(STREAM)
    assert res.exit_code == 2
    assert "no-such-preset" in res.stderr


# ---- building a scenario -----------------------------------------------------------------

def test_add_message_records_follow_a_prepended_init(tmp_path, claudes):
    fc = claudes(session_id="11111111-2222-3333-4444-555555555555", model="claude-test-1")
    fc.add_message(assistant("first")).add_message(assistant("second"))
    fc.add_message(result("second"))
    res = fc.run(STREAM, cwd=tmp_path)
    assert res.exit_code == 0, res.stderr
    assert_well_formed(res)
    assert [r["type"] for r in res.records] == ["system", "assistant", "assistant", "result"]
    assert texts(res.records) == ["first", "second"]
    assert res.result["result"] == "second"
    assert res.session_id == "11111111-2222-3333-4444-555555555555"
    assert res.records[0]["model"] == "claude-test-1"
    assert res.records[0]["cwd"] == str(tmp_path.resolve())
    assert os.path.isfile(res.session_log_path)


def test_records_that_start_with_an_init_get_no_second_one(claudes):
    init = {"type": "system", "subtype": "init", "cwd": "/somewhere", "tools": [],
            "model": "claude-sonnet-4-5", "permissionMode": "default"}
    fc = claudes().add_message(init).add_message(assistant("x")).add_message(result("x"))
    res = fc.run(STREAM)
    assert res.exit_code == 0, res.stderr
    assert [(r["type"], r.get("subtype")) for r in res.records] == [
        ("system", "init"), ("assistant", None), ("result", "success")]


def test_scenario_dict_is_the_documented_file_format(two_records):
    fc = (two_records().delay_message(1, 20).inject_api_retry(1, error_status=503, attempts=2)
          .corrupt_stream(2, "oops").truncate_after(9).inject_exit(8, 4).set_exit_code(5)
          .set_stderr("bye").hang_after_result())
    assert fc.scenario() == {
        "version": 2,
        "records": [assistant("one"), result("one")], "delays_ms": {"1": 20},
        "api_retry": {"at": 1, "status": 503, "attempts": 2, "exhaust": False},
        "corrupt": {"at": 2, "text": "oops"}, "truncate_after": 9,
        "exit_at": {"at": 8, "code": 4}, "exit_code": 5, "stderr": "bye",
        "hang_after_result": True}


def test_delay_message_waits_before_that_record(two_records):
    fc = two_records().delay_message(1, 300)
    t0 = time.monotonic()
    res = fc.run(STREAM)
    elapsed = time.monotonic() - t0
    assert res.exit_code == 0 and texts(res.records) == ["one"]
    assert elapsed >= 0.3, f"took {elapsed:.3f} s"


def test_inject_api_retry_recovered_and_exhausted(two_records):
    fc = two_records().inject_api_retry(0, error_status=503, attempts=2)
    res = fc.run(STREAM)
    assert res.exit_code == 0, res.stderr
    retries = res.records_of("system", "api_retry")
    assert [(r["attempt"], r["error_status"]) for r in retries] == [(1, 503), (2, 503)]
    assert res.records[1:3] == retries          # just before message 0, after init
    assert texts(res.records) == ["one"]

    fc = two_records().inject_api_retry(1, attempts=3, exhaust=True)
    res = fc.run(STREAM)
    assert res.exit_code == 1                   # exhausted retries exit 1
    assert [r["type"] for r in res.records] == ["system", "assistant"] + ["system"] * 3
    assert [r["error_status"] for r in res.records_of("system", "api_retry")] == [529] * 3
    assert res.result is None                   # nothing from message 1 on


def test_corrupt_stream_replaces_the_message(two_records):
    fc = two_records().corrupt_stream(1, "<<not json>>")
    res = fc.run(STREAM)
    assert res.invalid_lines == [(2, "<<not json>>")]
    assert [r["type"] for r in res.records] == ["system", "assistant"]


def test_truncate_after_and_inject_exit_and_set_exit_code(two_records):
    fc = two_records().truncate_after(1)
    res = fc.run(STREAM)
    assert res.exit_code == 1 and res.returncode == 1
    assert [r["type"] for r in res.records] == ["system", "assistant"]

    fc = two_records().inject_exit(0, 7)
    res = fc.run(STREAM)
    assert res.exit_code == 7
    assert [r["type"] for r in res.records] == ["system", "assistant"]

    fc = two_records().set_exit_code(3).set_stderr("something went wrong\n")
    res = fc.run(STREAM)
    assert res.exit_code == 3
    assert res.result is not None
    assert "something went wrong" in res.stderr


def test_positions_past_the_end_raise_before_anything_runs(tmp_path, two_records):
    for edit, call in ((lambda fc: fc.inject_api_retry(3), "inject_api_retry(at_message)=3"),
                       (lambda fc: fc.corrupt_stream(2, "x"), "corrupt_stream(at_message)=2"),
                       (lambda fc: fc.inject_exit(2, 1), "inject_exit(at_message)=2"),
                       (lambda fc: fc.truncate_after(3), "truncate_after(n)=3"),
                       (lambda fc: fc.delay_message(5, 10), "delay_message(n)=5")):
        fc = edit(two_records())
        with pytest.raises(ApisimError, match=r"past the end: the scenario has 2 messages"):
            fc.run(STREAM)
        path = tmp_path / "s.json"
        with pytest.raises(ApisimError, match=call.replace("(", r"\(").replace(")", r"\)")):
            fc.write_scenario(path)
        assert not path.exists()                # nothing half-written
    with pytest.raises(ApisimError, match="from 0"):
        FakeClaude().truncate_after(-1)


def test_hang_after_result_scenario_keeps_running_after_its_result(two_records):
    res = two_records().hang_after_result().run(STREAM, timeout=0.5)
    assert res.timed_out
    assert res.result is not None and res.result["result"] == "one"
    assert res.exit_code == 130


def test_run_env_and_output_formats(tmp_path, two_records):
    fc = two_records()
    own = tmp_path / "own-config"
    res = fc.run(STREAM, env={"CLAUDE_CONFIG_DIR": str(own)})
    assert res.session_log_dir == str(own)
    assert os.path.isfile(res.session_log_path)

    js = fc.run(["-p", "hi", "--output-format", "json"])
    assert js.exit_code == 0 and len(js.records) == 1
    assert js.records[0]["type"] == "result" and js.records[0]["result"] == "one"

    text = fc.run(["-p", "hi"])
    assert text.exit_code == 0 and text.stdout.strip() == "one"


def test_write_scenario_is_read_by_apisim_scenario_flag(tmp_path, apisim_bin, two_records):
    path = two_records().set_exit_code(6).write_scenario(tmp_path / "s.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APISIM_CLAUDE")}
    env["CLAUDE_CONFIG_DIR"] = str(tmp_path / "cfg")
    proc = subprocess.run([apisim_bin, "claude", "--apisim-scenario", str(path), *STREAM],
                          capture_output=True, text=True, env=env, timeout=30, cwd=tmp_path)
    assert proc.returncode == 6, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["type"] for r in lines] == ["system", "assistant", "result"]


# ---- `claude` on PATH ----------------------------------------------------------------------

def test_context_manager_puts_claude_on_path_and_restores_the_environment(tmp_path,
                                                                           two_records):
    before = {k: os.environ.get(k) for k in ("PATH", "APISIM_CLAUDE_SCENARIO",
                                             "APISIM_CLAUDE_PRESET", "CLAUDE_CONFIG_DIR")}
    fc = two_records()
    with fc:
        assert shutil.which("claude") == os.path.join(fc.bin_dir, "claude")
        assert os.environ["CLAUDE_CONFIG_DIR"] == fc.session_log_dir
        assert os.path.isfile(os.environ["APISIM_CLAUDE_SCENARIO"])
        # code under test spawns `claude` through PATH
        proc = subprocess.run(["claude", *STREAM], capture_output=True, text=True,
                              timeout=30, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        records = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [r["type"] for r in records] == ["system", "assistant", "result"]
        sid = records[0]["session_id"]
        assert fc.session_logs() == [os.path.join(
            fc.session_log_dir, "projects", slug(str(tmp_path.resolve())), sid + ".jsonl")]
        # an edit inside the block applies to the next spawn
        fc.set_exit_code(4)
        again = subprocess.run(["claude", *STREAM], capture_output=True, timeout=30)
        assert again.returncode == 4
    after = {k: os.environ.get(k) for k in before}
    assert after == before


def test_context_manager_with_a_preset_and_a_hanging_claude(fake_claude):
    with fake_claude.preset("hang-after-result"):
        assert "APISIM_CLAUDE_SCENARIO" not in os.environ
        assert os.environ["APISIM_CLAUDE_PRESET"] == "hang-after-result"
        proc = subprocess.Popen(["claude", *STREAM], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            for line in proc.stdout:
                if json.loads(line)["type"] == "result":
                    break
            else:
                pytest.fail(f"no result record; exit {proc.wait()}")
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)              # it hangs after its result
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 130
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
    assert "APISIM_CLAUDE_PRESET" not in os.environ
