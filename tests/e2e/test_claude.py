"""End-to-end tests of the session fixtures: `apisim claude` (the fake claude CLI, also run
through a link named `claude`) and `apisim claude-record` with its replay.

Real binary, real processes, real SQLite files. Lines are read from the pipe as they arrive,
stamped with time.monotonic(); nothing sleeps to synchronise.
"""

import json
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

PROMPT = "say hi"
# Variables that choose what the fake CLI plays: the tests set them explicitly.
_SCENARIO_VARS = ("APISIM_CLAUDE_SCENARIO", "APISIM_CLAUDE_PRESET", "APISIM_DB",
                  "APISIM_SESSION", "APISIM_LATENCY")


def slug(path):
    return re.sub(r"[^A-Za-z0-9]", "-", str(path))


class Box:
    """A test's world: the config dir, a working directory, and the environment."""

    def __init__(self, tmp_path, apisim_bin):
        self.bin = apisim_bin
        self.tmp = tmp_path
        self.config = tmp_path / "config"
        self.work = Path(os.path.realpath(tmp_path / "work"))
        self.work.mkdir(exist_ok=True)
        env = harness.child_env({"CLAUDE_CONFIG_DIR": str(self.config)})
        for k in _SCENARIO_VARS:
            env.pop(k, None)
        self.env = env

    def environ(self, **extra):
        env = dict(self.env)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def run(self, *args, env=None, timeout=15, cwd=None):
        return subprocess.run([self.bin, "claude", *args], cwd=cwd or self.work,
                              env=env or self.env, capture_output=True, timeout=timeout)

    def popen(self, *args, env=None, cwd=None, prog=None):
        argv = [self.bin, "claude", *args] if prog is None else [prog, *args]
        return subprocess.Popen(argv, cwd=cwd or self.work, env=env or self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)

    def log_path(self, session_id, cwd=None):
        return self.config / "projects" / slug(cwd or self.work) / f"{session_id}.jsonl"

    def scenario(self, obj, name="scenario.json"):
        p = self.tmp / name
        p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        return p


@pytest.fixture
def box(tmp_path, apisim_bin):
    return Box(tmp_path, apisim_bin)


def read_lines(proc, count=None, timeout=10.0):
    """Read proc's stdout as it arrives until `count` lines or EOF: [(monotonic time, bytes)]
    for each complete line, and what is left after the last newline."""
    fd = proc.stdout.fileno()
    buf, out = b"", []
    deadline = time.monotonic() + timeout
    while count is None or len(out) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout} s with {len(out)} lines: {out!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        now = time.monotonic()
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            out.append((now, line))
    return out, buf


def kind(rec):
    return f"system/{rec['subtype']}" if rec["type"] == "system" else rec["type"]


def parse_stream(stdout):
    """Each line of stdout parsed: a dict, or the raw text for a line that is not JSON."""
    out = []
    for line in stdout.decode().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append(line)
    return out


# name: (record kinds in order, "!" for the corrupt line; exit code)
PRESETS = {
    "success": (["system/init", "assistant", "result"], 0),
    "context-exhaustion": (["system/init", "assistant"], 1),
    "max-turns": (["system/init", "assistant", "user", "result"], 1),
    "api-retry": (["system/init", "system/api_retry", "system/api_retry", "assistant",
                   "result"], 0),
    "api-retry-exhausted": (["system/init", "system/api_retry", "system/api_retry", "assistant",
                             "result"], 1),
    "corrupt-stream": (["system/init", "assistant", "!", "result"], 1),
    "truncated": (["system/init", "assistant"], 1),
    "interrupted": (["system/init", "assistant", "user"], 130),
}

INIT_KEYS = ["type", "subtype", "cwd", "session_id", "tools", "mcp_servers", "model",
             "permissionMode", "slash_commands", "apiKeySource", "claude_code_version",
             "output_style", "agents", "skills", "plugins", "analytics_disabled",
             "product_feedback_disabled", "uuid", "memory_paths", "fast_mode_state"]
RESULT_KEYS = ["type", "subtype", "is_error", "api_error_status", "duration_ms",
               "duration_api_ms", "ttft_ms", "ttft_stream_ms", "time_to_request_ms", "num_turns",
               "result", "stop_reason", "session_id", "total_cost_usd", "usage", "modelUsage",
               "permission_denials", "terminal_reason", "fast_mode_state", "uuid"]
ERROR_RESULT_KEYS = ["type", "subtype", "is_error", "api_error_status", "duration_ms",
                     "duration_api_ms", "num_turns", "result", "stop_reason", "session_id",
                     "total_cost_usd", "usage", "modelUsage", "permission_denials",
                     "terminal_reason", "fast_mode_state", "uuid"]
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset(box, preset):
    kinds, code = PRESETS[preset]
    p = box.run("-p", PROMPT, "--output-format", "stream-json", "--verbose",
                env=box.environ(APISIM_CLAUDE_PRESET=preset))
    assert p.returncode == code, p.stderr
    assert p.stdout.endswith(b"\n")
    recs = parse_stream(p.stdout)
    # Every line is a JSON object but the corrupt one.
    assert [("!" if isinstance(r, str) else kind(r)) for r in recs] == kinds
    objs = [r for r in recs if isinstance(r, dict)]
    init = objs[0]
    assert list(init) == INIT_KEYS
    assert init["cwd"] == str(box.work)
    sid = init["session_id"]
    assert UUID_RE.match(sid)
    assert all(r["session_id"] == sid for r in objs)
    uuids = [r["uuid"] for r in objs]
    assert len(set(uuids)) == len(uuids) and all(UUID_RE.match(u) for u in uuids)

    results = [r for r in objs if r["type"] == "result"]
    if preset == "success":
        (res,) = results
        assert list(res) == RESULT_KEYS
        assert res["subtype"] == "success" and res["is_error"] is False
        assert res["result"] == "Hello from apisim." and res["api_error_status"] is None
        assert res["modelUsage"].keys() == {init["model"]}
    elif preset == "max-turns":
        (res,) = results
        assert list(res) == RESULT_KEYS
        assert res["subtype"] == "error_max_turns" and res["is_error"] is True
        use = objs[1]["message"]["content"][0]
        assert use["type"] == "tool_use"
        assert objs[2]["message"]["content"][0]["tool_use_id"] == use["id"]
    elif preset == "api-retry":
        (res,) = results
        assert res["is_error"] is False and res["subtype"] == "success"
        retries = [r for r in objs if kind(r) == "system/api_retry"]
        assert [r["attempt"] for r in retries] == [1, 2]
        assert all(r["error_status"] == 529 and r["max_retries"] > 2 for r in retries)
        assert all(isinstance(r["retry_delay_ms"], (int, float)) for r in retries)
    elif preset == "api-retry-exhausted":
        (res,) = results
        assert list(res) == ERROR_RESULT_KEYS
        assert res["is_error"] is True and res["api_error_status"] == 529
        assert res["subtype"] == "success"
        assert res["result"].startswith("API Error: 529 Overloaded")
        retries = [r for r in objs if kind(r) == "system/api_retry"]
        assert [(r["attempt"], r["max_retries"]) for r in retries] == [(1, 2), (2, 2)]
        assert objs[3]["error"] == "server_error"
        assert objs[3]["message"]["model"] == "<synthetic>"
    elif preset == "context-exhaustion":
        assert results == []
        assert "prompt is too long" in objs[1]["message"]["content"][0]["text"]
    elif preset == "corrupt-stream":
        (res,) = results
        assert res["is_error"] is False
        bad = recs[2]
        with pytest.raises(ValueError):
            json.loads(bad)
    else:  # truncated, interrupted: no result
        assert results == []

    # The session log, where the CLI writes it.
    log = box.log_path(sid)
    assert log.is_file(), f"no session log at {log}"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries[0] == {**entries[0], "type": "queue-operation", "operation": "enqueue",
                          "sessionId": sid, "content": PROMPT}
    assert entries[1]["operation"] == "dequeue"
    prompt = entries[2]
    assert prompt["type"] == "user" and prompt["message"] == {"role": "user", "content": PROMPT}
    assert prompt["cwd"] == str(box.work) and prompt["parentUuid"] is None
    messages = [r for r in objs if r["type"] in ("assistant", "user")]
    logged = [e for e in entries[3:] if e["type"] in ("assistant", "user")]
    assert [e["uuid"] for e in logged] == [r["uuid"] for r in messages]
    parents = [prompt["uuid"]] + [e["uuid"] for e in logged[:-1]]
    assert [e["parentUuid"] for e in logged] == parents
    assert [e["message"] for e in logged] == [r["message"] for r in messages]
    tail = [e for e in entries if e["type"] == "last-prompt"]
    if results:
        assert tail == [{"type": "last-prompt", "lastPrompt": PROMPT,
                         "leafUuid": logged[-1]["uuid"], "sessionId": sid}]
    else:
        assert tail == []


def _reference(name):
    """A file of ../shared/reference/claude-stream-json/, looked for beside the source tree
    and above it (a worktree sits deeper); None when absent."""
    src = Path(os.environ.get("APISIM_SOURCE_DIR", Path(__file__).resolve().parents[2]))
    for d in src.resolve().parents:
        p = d / "shared" / "reference" / "claude-stream-json" / name
        if p.is_file():
            return p
    return None


REFERENCE = _reference("success.partial-messages.jsonl")


def shape(rec):
    """What identifies a record of a partial-messages stream: its type, subtype or event
    type, and its keys in order."""
    if rec["type"] == "stream_event":
        return ("stream_event", rec["event"]["type"], tuple(rec), tuple(rec["event"]))
    return (rec["type"], rec.get("subtype"), tuple(rec))


def test_include_partial_messages_writes_stream_events_as_the_cli_does(box):
    p = box.run("-p", PROMPT, "--output-format", "stream-json", "--verbose",
                "--include-partial-messages", env=box.environ(APISIM_CLAUDE_PRESET="success"))
    assert p.returncode == 0, p.stderr
    recs = parse_stream(p.stdout)
    got = [shape(r) for r in recs]
    if REFERENCE is not None:
        want = [shape(json.loads(line)) for line in REFERENCE.read_text().splitlines()]
        # The same records in the same order with the same keys (the reference's message
        # has three text deltas, as has "Hello from apisim.").
        assert got == want
    kinds = [s[1] if s[0] == "stream_event" else s[0] for s in got]
    assert kinds[:4] == ["system", "system", "message_start", "content_block_start"]
    assert kinds[-5:] == ["assistant", "content_block_stop", "message_delta", "message_stop",
                          "result"]
    text = "".join(r["event"]["delta"]["text"] for r in recs if r["type"] == "stream_event"
                   and r["event"]["type"] == "content_block_delta")
    assert text == recs[-1]["result"] == "Hello from apisim."
    sid = recs[0]["session_id"]
    assert all(r["session_id"] == sid for r in recs)
    # Without the flag, no stream_event.
    q = box.run("-p", PROMPT, "--output-format", "stream-json", "--verbose",
                env=box.environ(APISIM_CLAUDE_PRESET="success"))
    assert b"stream_event" not in q.stdout


def test_hang_after_result_stays_alive_until_signalled(box):
    for sig, want in ((signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 130)):
        proc = box.popen("-p", PROMPT, "--output-format", "stream-json",
                         env=box.environ(APISIM_CLAUDE_PRESET="hang-after-result"))
        try:
            lines, rest = read_lines(proc, count=3)
            assert json.loads(lines[-1][1])["type"] == "result"
            assert rest == b""
            # Still running after its result: it must not exit within half a second.
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
            assert proc.poll() is None
            proc.send_signal(sig)
            assert proc.wait(timeout=5) == want
            assert proc.stdout.read() == b""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()


def test_delays_are_kept(box):
    sc = box.scenario({"records": [
        {"type": "assistant", "message": {"role": "assistant", "content": []}},
        {"type": "result", "subtype": "success", "is_error": False, "result": "ok"}],
        "version": 2, "delays_ms": {"0": 400, "1": 250}})
    start = time.monotonic()
    proc = box.popen("-p", PROMPT, "--output-format", "stream-json", "--apisim-scenario", str(sc))
    try:
        lines, _ = read_lines(proc)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.stdout.close()
        proc.stderr.close()
    assert [json.loads(line)["type"] for _, line in lines] == ["system", "assistant", "result"]
    # Measured from before the start: a late reader can only make these longer, so the
    # lower bounds hold under load; the upper bounds are generous.
    t = [ts - start for ts, _ in lines]
    assert t[0] < t[1] < t[2], t  # streamed: the init line came before the first wait ended
    assert 0.4 <= t[1] < 1.4, t
    assert 0.65 <= t[2] < 1.9, t


def test_sigint_mid_stream_exits_130(box):
    sc = box.scenario({"version": 2, "records": [{"type": "assistant"}],
                       "delays_ms": {"0": 20000}})
    proc = box.popen("-p", PROMPT, "--output-format", "stream-json", "--apisim-scenario", str(sc))
    try:
        lines, _ = read_lines(proc, count=1)
        assert json.loads(lines[0][1])["subtype"] == "init"
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 130
        assert time.monotonic() - t < 2.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_output_formats(box):
    env = box.environ(APISIM_CLAUDE_PRESET="success")
    p = box.run("-p", PROMPT, "--output-format", "json", env=env)
    assert p.returncode == 0, p.stderr
    (line,) = p.stdout.decode().splitlines()
    res = json.loads(line)
    assert list(res) == RESULT_KEYS and res["result"] == "Hello from apisim."
    assert box.log_path(res["session_id"]).is_file()

    p = box.run("-p", PROMPT, env=env)  # text is the default
    assert p.returncode == 0 and p.stdout == b"Hello from apisim.\n"

    p = box.run("-p", PROMPT, "--output-format", "text",
                env=box.environ(APISIM_CLAUDE_PRESET="api-retry-exhausted"))
    assert p.returncode == 1 and p.stdout.startswith(b"API Error: 529")


def test_claude_flags(box):
    sid = "0b6d1f4e-5a53-4c1e-9a53-2f3c47a0c001"
    p = box.run("-p", "--verbose", "--output-format=stream-json", "--model", "claude-opus-4-1",
                "--session-id", sid, "--permission-mode", "acceptEdits", "--max-turns", "3",
                "--allowedTools", "Bash", "--some-future-flag", "--", "the prompt")
    assert p.returncode == 0, p.stderr
    init = json.loads(p.stdout.splitlines()[0])
    assert init["session_id"] == sid and init["model"] == "claude-opus-4-1"
    assert init["permissionMode"] == "acceptEdits"
    log = box.log_path(sid)
    assert json.loads(log.read_text().splitlines()[0])["content"] == "the prompt"
    size = log.stat().st_size
    # --resume continues the same session and appends to its log.
    p = box.run("-p", "again", "--resume", sid, "--output-format", "stream-json")
    assert p.returncode == 0
    assert json.loads(p.stdout.splitlines()[0])["session_id"] == sid
    assert log.stat().st_size > size
    # A prompt on stdin, as `echo ... | claude -p` gives it.
    p = subprocess.run([box.bin, "claude", "-p", "--output-format", "stream-json"],
                       input=b"from stdin\n", cwd=box.work, env=box.env, capture_output=True,
                       timeout=15)
    assert p.returncode == 0
    sid2 = json.loads(p.stdout.splitlines()[0])["session_id"]
    assert json.loads(box.log_path(sid2).read_text().splitlines()[0])["content"] == "from stdin"
    p = box.run("--version")
    assert p.returncode == 0 and b"(Claude Code)" in p.stdout


def test_claude_link_on_path(box):
    """A script that only knows `claude -p x --output-format stream-json` gets a session."""
    bindir = box.tmp / "bin"
    bindir.mkdir()
    (bindir / "claude").symlink_to(os.path.realpath(box.bin))
    script = box.tmp / "orchestrate.sh"
    script.write_text("#!/bin/sh\nclaude -p x --output-format stream-json > out.jsonl\n"
                      "echo \"exit=$?\"\n")
    script.chmod(0o755)
    env = box.environ(PATH=f"{bindir}:{box.env.get('PATH', '/usr/bin:/bin')}",
                      APISIM_CLAUDE_PRESET="api-retry")
    p = subprocess.run([str(script)], cwd=box.work, env=env, capture_output=True, timeout=15)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"exit=0\n"
    recs = [json.loads(line) for line in (box.work / "out.jsonl").read_text().splitlines()]
    assert [kind(r) for r in recs] == PRESETS["api-retry"][0]
    assert recs[-1]["result"] == "Hello from apisim."
    assert box.log_path(recs[0]["session_id"]).is_file()


# A command that prints JSON lines with pauses, writes stderr and a session log the way the
# CLI does, and exits 3.
RECORDED_SCRIPT = r"""
import json, os, re, sys, time
sid = "5f0c2b1e-7d7a-4c3f-9a0e-1b2c3d4e5f60"
cfg = os.environ["CLAUDE_CONFIG_DIR"]
d = os.path.join(cfg, "projects", re.sub(r"[^A-Za-z0-9]", "-", os.getcwd()))
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, sid + ".jsonl"), "w") as f:
    f.write('{"type":"queue-operation","operation":"enqueue","sessionId":"%s"}\n' % sid)
def out(o):
    sys.stdout.write(json.dumps(o) + "\n"); sys.stdout.flush()
out({"type": "system", "subtype": "init", "session_id": sid})
time.sleep(0.5)
out({"type": "assistant", "session_id": sid, "text": "caf\u00e9"})
sys.stderr.write("warning: something on stderr\n"); sys.stderr.flush()
time.sleep(0.8)
out({"type": "result", "session_id": sid, "is_error": False})
sys.stdout.write("unfinished"); sys.stdout.flush()
sys.exit(3)
"""
RECORDED_SID = "5f0c2b1e-7d7a-4c3f-9a0e-1b2c3d4e5f60"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, apisim_bin):
    """One run of RECORDED_SCRIPT recorded by claude-record: (box, db path, result)."""
    b = Box(tmp_path_factory.mktemp("recorded"), apisim_bin)
    db = b.tmp / "runs.db"
    argv = [apisim_bin, "claude-record", "--db", str(db), "--session", "script", "--",
            sys.executable, "-c", RECORDED_SCRIPT]
    proc = subprocess.Popen(argv, cwd=b.work, env=b.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=0)
    try:
        lines, rest = read_lines(proc)
        code = proc.wait(timeout=10)
        stderr = proc.stderr.read()
    finally:
        proc.stdout.close()
        proc.stderr.close()
    return b, db, {"lines": lines, "rest": rest, "code": code, "stderr": stderr}


def test_claude_record_stores_the_run(recorded):
    b, db, r = recorded
    # Passed through live, with the command's own exit status.
    assert r["code"] == 3
    assert [json.loads(line)["type"] for _, line in r["lines"]] == ["system", "assistant",
                                                                    "result"]
    assert r["rest"] == b"unfinished"
    t = [ts for ts, _ in r["lines"]]
    assert t[1] - t[0] >= 0.45 and t[2] - t[1] >= 0.75, t
    assert b"warning: something on stderr\n" in r["stderr"]

    con = sqlite3.connect(db)
    try:
        run = con.execute("SELECT id, session, argv, cwd, exit_code, duration_us, stderr, "
                          "session_id, session_log_path, session_log FROM claude_runs").fetchall()
        assert len(run) == 1
        rid, session, argv, cwd, code, duration, stderr, sid, log_path, log = run[0]
        assert session == "script" and code == 3 and cwd == str(b.work)
        assert json.loads(argv) == [sys.executable, "-c", RECORDED_SCRIPT]
        assert duration >= 1_300_000
        assert stderr == "warning: something on stderr\n"
        assert sid == RECORDED_SID
        assert log_path == str(b.log_path(RECORDED_SID))
        assert log == b.log_path(RECORDED_SID).read_text()
        rows = con.execute("SELECT idx, offset_us, line, newline FROM claude_lines "
                           "WHERE run_id = ? ORDER BY idx", (rid,)).fetchall()
    finally:
        con.close()
    assert [row[0] for row in rows] == [0, 1, 2, 3]
    assert [row[2] for row in rows[:3]] == [line.decode() for _, line in r["lines"]]
    assert rows[3][2:] == ("unfinished", 0)
    assert [row[3] for row in rows[:3]] == [1, 1, 1]
    offsets = [row[1] for row in rows]
    assert offsets == sorted(offsets)
    assert 450_000 <= offsets[1] - offsets[0] <= 1_000_000
    assert 750_000 <= offsets[2] - offsets[1] <= 1_400_000


def replay(box, db, session, *args, cwd=None, **env):
    proc = box.popen("-p", "anything", "--output-format", "stream-json", *args,
                     env=box.environ(APISIM_DB=db, APISIM_SESSION=session, **env), cwd=cwd)
    try:
        start = time.monotonic()
        lines, rest = read_lines(proc)
        code = proc.wait(timeout=10)
        stderr = proc.stderr.read()
    finally:
        proc.stdout.close()
        proc.stderr.close()
    return start, lines, rest, code, stderr


def test_replay_has_the_same_lines_gaps_stderr_exit_and_log(recorded):
    b, db, r = recorded
    con = sqlite3.connect(db)
    offsets = [row[0] for row in con.execute("SELECT offset_us FROM claude_lines ORDER BY idx")]
    con.close()
    log = b.log_path(RECORDED_SID)
    recorded_log = log.read_text()
    log.unlink()

    start, lines, rest, code, stderr = replay(b, db, "script")
    assert [line for _, line in lines] == [line for _, line in r["lines"]]
    assert rest == b"unfinished"
    assert code == 3
    assert stderr == b"warning: something on stderr\n"
    assert log.read_text() == recorded_log
    # Same gaps, within 20 %.
    t = [ts for ts, _ in lines]
    for k in (1, 2):
        want = (offsets[k] - offsets[k - 1]) / 1e6
        got = t[k] - t[k - 1]
        assert abs(got - want) <= 0.2 * want, (k, got, want)


def test_replay_latency_scales_gaps(recorded):
    b, db, _ = recorded
    start, lines, _, code, _ = replay(b, db, "script", "--latency", "none")
    assert code == 3 and len(lines) == 3
    assert lines[-1][0] - start < 0.6
    start, lines, _, code, _ = replay(b, db, "script", APISIM_LATENCY="recorded*0.5")
    assert code == 3
    gap = lines[2][0] - lines[1][0]
    assert 0.3 <= gap <= 0.6, gap


def test_record_and_replay_the_fake_cli(box):
    """claude-record of `apisim claude` itself: the replay is the same bytes and log."""
    db = box.tmp / "fake.db"
    env = box.environ(APISIM_CLAUDE_PRESET="corrupt-stream")
    p = subprocess.run([box.bin, "claude-record", "--db", str(db), "--session", "fake", "--",
                        box.bin, "claude", "-p", PROMPT, "--output-format", "stream-json"],
                       cwd=box.work, env=env, capture_output=True, timeout=15)
    assert p.returncode == 1, p.stderr
    sid = json.loads(p.stdout.splitlines()[0])["session_id"]
    log = box.log_path(sid)
    original = log.read_text()
    log.unlink()
    q = box.run("-p", "x", env=box.environ(APISIM_DB=db, APISIM_SESSION="fake",
                                            APISIM_LATENCY="none"))
    assert q.returncode == 1
    assert q.stdout == p.stdout
    assert log.read_text() == original


# ---- bad input: one line on stderr naming the file, the record and the problem; exit 2


def one_error_line(p):
    assert p.stdout == b"", "a failed scenario must not print a fake session"
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_missing_scenario_file(box):
    missing = box.tmp / "nope.json"
    p = box.run("-p", "x", "--apisim-scenario", str(missing))
    assert p.returncode == 2
    line = one_error_line(p)
    assert str(missing) in line and "cannot read" in line


def test_malformed_scenario_file(box):
    sc = box.scenario('{"records": [\n  {"type": "assistant"},\n  oops\n]}', "broken.json")
    p = box.run("-p", "x", env=box.environ(APISIM_CLAUDE_SCENARIO=sc))
    assert p.returncode == 2
    line = one_error_line(p)
    assert str(sc) in line and "not valid JSON at line 3" in line


def test_record_that_is_not_an_object(box):
    sc = box.scenario({"records": [{"type": "assistant"}, "hello"]}, "notobj.json")
    p = box.run("-p", "x", "--apisim-scenario", str(sc))
    assert p.returncode == 2
    line = one_error_line(p)
    assert str(sc) in line and "records[1] is not a JSON object (it is a string)" in line


def test_old_numbering_is_refused_with_how_to_convert(box):
    """A file with positions but no "version": 2 was written when the init record was 0."""
    sc = box.scenario({"records": [{"type": "assistant"}, {"type": "result"}],
                       "truncate_after": 2}, "old.json")
    p = box.run("-p", "x", "--apisim-scenario", str(sc))
    assert p.returncode == 2
    line = one_error_line(p)
    assert str(sc) in line and '"truncate_after" is a position' in line
    assert 'subtract 1 from each position' in line and 'add "version": 2' in line
    help_text = box.run("--help").stdout.decode()
    assert 'count its "records" from 0' in help_text and '"version": 2' in help_text


def test_unknown_preset(box):
    p = box.run("-p", "x", env=box.environ(APISIM_CLAUDE_PRESET="sucess"))
    assert p.returncode == 2
    line = one_error_line(p)
    assert 'unknown claude preset "sucess"' in line and "success" in line


def test_bad_flags_and_replay_errors(box):
    p = box.run("-p", "x", "--output-format", "yaml")
    assert p.returncode == 2 and "yaml" in one_error_line(p)
    db = box.tmp / "empty.db"
    q = subprocess.run([box.bin, "claude-record", "--db", str(db), "--", "true"],
                       cwd=box.work, env=box.env, capture_output=True, timeout=15)
    assert q.returncode == 0, q.stderr
    p = box.run("-p", "x", env=box.environ(APISIM_DB=db, APISIM_SESSION="other"))
    assert p.returncode == 2 and '"other"' in one_error_line(p)
    p = box.run("-p", "x", env=box.environ(APISIM_DB=db, APISIM_SESSION="default",
                                            APISIM_LATENCY="fast"))
    assert p.returncode == 2 and "fast" in one_error_line(p)


def test_claude_record_usage_errors(box):
    db = box.tmp / "r.db"
    p = subprocess.run([box.bin, "claude-record", "--db", str(db)], cwd=box.work, env=box.env,
                       capture_output=True, timeout=15)
    assert p.returncode == 2 and b"no command" in p.stderr
    p = subprocess.run([box.bin, "claude-record", "--db", str(db), "--",
                        "/nonexistent/claude"], cwd=box.work, env=box.env,
                       capture_output=True, timeout=15)
    assert p.returncode == 127 and b"/nonexistent/claude" in p.stderr
    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT count(*) FROM claude_runs").fetchone()[0] == 0
    finally:
        con.close()


# ---- stderr with its timing; scenario steps ----------------------------------------------

STDERR_SCRIPT = r"""
import sys, time
def err(s):
    sys.stderr.write(s); sys.stderr.flush()
def out(s):
    sys.stdout.write(s + "\n"); sys.stdout.flush()
err("starting\n")
time.sleep(0.4)
out('{"type": "system", "subtype": "init", "session_id": "s"}')
time.sleep(0.4)
err("retrying\n")
time.sleep(0.4)
out('{"type": "result", "session_id": "s"}')
sys.exit(4)
"""


def read_both(proc, timeout=10.0):
    """Everything proc writes on stdout and stderr until both close: [(time, "out"|"err",
    bytes)] in the order it was read."""
    fds = {proc.stdout.fileno(): "out", proc.stderr.fileno(): "err"}
    got, deadline = [], time.monotonic() + timeout
    while fds:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out: {got!r}"
        ready, _, _ = select.select(list(fds), [], [], left)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                del fds[fd]
            else:
                got.append((time.monotonic(), fds[fd], chunk))
    return got


def test_stderr_is_recorded_and_replayed_with_its_timing(box):
    db = box.tmp / "err.db"
    p = subprocess.run([box.bin, "claude-record", "--db", str(db), "--session", "e", "--",
                        sys.executable, "-c", STDERR_SCRIPT], cwd=box.work, env=box.env,
                       capture_output=True, timeout=15)
    assert p.returncode == 4, p.stderr
    con = sqlite3.connect(db)
    try:
        chunks = con.execute("SELECT idx, offset_us, chunk FROM claude_stderr ORDER BY idx"
                             ).fetchall()
        lines = [r[0] for r in con.execute("SELECT offset_us FROM claude_lines ORDER BY idx")]
        whole = con.execute("SELECT stderr FROM claude_runs").fetchone()[0]
    finally:
        con.close()
    assert "".join(c[2] for c in chunks) == whole == "starting\nretrying\n"
    assert chunks[0][1] < lines[0] < chunks[-1][1] < lines[1]

    proc = box.popen("-p", "x", env=box.environ(APISIM_DB=db, APISIM_SESSION="e"))
    try:
        got = read_both(proc)
        assert proc.wait(timeout=10) == 4
    finally:
        proc.stdout.close()
        proc.stderr.close()
    # Interleaved as recorded: err, out, err, out — not stderr in one block at the end.
    kinds = [k for _, k, _ in got]
    assert kinds == ["err", "out", "err", "out"], got
    assert b"".join(c for _, k, c in got if k == "err") == b"starting\nretrying\n"
    t = [ts for ts, _, _ in got]
    for k in range(1, 4):
        want = 0.4
        assert abs((t[k] - t[k - 1]) - want) <= 0.2 * want + 0.05, (k, t)


def test_claude_record_stores_scenario_steps(box):
    db = box.tmp / "steps.db"
    p = subprocess.run([box.bin, "claude-record", "--db", str(db), "--session", "plan",
                        "--step", "plan", "--tool", "run_skill", "--model", "sonnet",
                        "--recipe", "demo", "--", "sh", "-c", "echo '{\"type\":\"result\"}'"],
                       cwd=box.work, env=box.env, capture_output=True, timeout=15)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([box.bin, "claude-record", "--db", str(db), "--step", "test",
                        "--tool", "run_cmd", "--recipe", "demo",
                        "--summary", '{"exit_code": 0, "stdout_head": "ok"}'],
                       cwd=box.work, env=box.env, capture_output=True, timeout=15)
    assert p.returncode == 0, p.stderr
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT s.recipe, s.step_name, s.tool, s.model, r.session, "
                           "s.result_summary FROM scenario_steps s LEFT JOIN claude_runs r "
                           "ON r.id = s.run_id ORDER BY s.id").fetchall()
    finally:
        con.close()
    assert rows[0] == ("demo", "plan", "run_skill", "sonnet", "plan", None)
    assert rows[1][:5] == ("demo", "test", "run_cmd", None, None)
    assert json.loads(rows[1][5]) == {"exit_code": 0, "stdout_head": "ok"}
    # Bad step options: exit 2, one line saying what is wrong, nothing stored.
    for args, want in ((["--tool", "x", "--", "true"], "give its name with --step"),
                       (["--step", "s", "--summary", "[1]"], "must be a JSON object"),
                       (["--step", "s", "--summary", "{", ], "not valid JSON"),
                       (["--step", "s", "--summary", "{}", "--", "true"], "not both")):
        q = subprocess.run([box.bin, "claude-record", "--db", str(db), *args], cwd=box.work,
                           env=box.env, capture_output=True, timeout=15)
        assert q.returncode == 2 and want in q.stderr.decode(), (args, q.stderr)
    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT count(*) FROM scenario_steps").fetchone()[0] == 2
    finally:
        con.close()
