"""Multi-step scenarios: record every `claude` step of an agent run into cassettes, then
replay the whole run with a fake `claude` per step (apisim.claude.make_scenario_recorder,
make_scenario_player).

The recording is done by `apisim claude-record` (one run per session step, in
<output_dir>/scenario.db, tables claude_runs / claude_lines / claude_stderr /
scenario_steps); the replay by the fake `claude` (APISIM_DB + APISIM_SESSION). This module
only runs them, names the cassettes and writes the files around them:

    <output_dir>/scenario.json                  {"recipe": ..., "steps": [...]}
    <output_dir>/scenario.db                    the same steps, in apisim's schema
    <output_dir>/sessions/<step>/stdout.jsonl   what the command wrote on stdout
    <output_dir>/sessions/<step>/meta.json      exit code, duration, each line's time
    <output_dir>/sessions/<step>/stderr.txt     what it wrote on stderr (when it did)

A step recorded again gets <step>-2, <step>-3, ...
"""

import json
import os
import sqlite3
import subprocess
import threading

from ._binary import find_binary
from .claude import _SCENARIO_VARS, DEFAULT_ARGS, ClaudeResult
from .errors import ScenarioError

__all__ = ["ScenarioPlayer", "ScenarioRecorder", "make_scenario_player",
           "make_scenario_recorder"]

SCENARIO_FILE = "scenario.json"
SCENARIO_DB = "scenario.db"
SESSIONS = "sessions"
_STEP_NAME_MAX = 200


def _check_step_name(step_name):
    if not isinstance(step_name, str) or not step_name:
        raise ScenarioError(f"step_name must be a non-empty string, not {step_name!r}")
    if "/" in step_name or "\\" in step_name or "\0" in step_name or step_name in (".", ".."):
        raise ScenarioError(f"step_name {step_name!r} cannot name a cassette directory: use no "
                            "'/', '\\' or NUL, and not '.' or '..'")
    if len(step_name) > _STEP_NAME_MAX:
        raise ScenarioError(f"step_name is {len(step_name)} characters long: at most "
                            f"{_STEP_NAME_MAX}")
    return step_name


def _write_json(path, obj):
    """Write obj to path through a temporary file, so a reader never sees half of it."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


class StepResult:
    """What record_step returns: cassette_path (<output_dir>/sessions/<step>/),
    cassette_exit_code, cassette_duration_ms; also step_name, stdout, stderr."""

    def __init__(self, step_name, cassette_path, exit_code, duration_ms, stdout, stderr):
        self.step_name, self.cassette_path = step_name, cassette_path
        self.cassette_exit_code, self.cassette_duration_ms = exit_code, duration_ms
        self.stdout, self.stderr = stdout, stderr

    @property
    def returncode(self):
        return self.cassette_exit_code

    def __repr__(self):
        return (f"StepResult({self.step_name!r}, exit={self.cassette_exit_code}, "
                f"{self.cassette_duration_ms} ms, {self.cassette_path})")


class ScenarioRecorder:
    """Records the steps of one run of a recipe into output_dir (see the module comment).
    Every method may be called from any thread."""

    def __init__(self, output_dir, recipe_name, binary=None):
        self.output_dir = os.path.abspath(os.fspath(output_dir))
        self.recipe_name = recipe_name
        self.binary = find_binary(binary)
        self.db_path = os.path.join(self.output_dir, SCENARIO_DB)
        self.sessions_dir = os.path.join(self.output_dir, SESSIONS)
        self._lock = threading.Lock()
        self._steps = []      # in the order the steps were begun; None while one is running
        self._taken = set()   # cassette names in use

    def _check_dir(self):
        if not os.path.isdir(self.output_dir):
            raise ScenarioError(f"output_dir {self.output_dir} no longer exists")

    def _claim(self, step_name):
        """A fresh cassette directory for step_name (created), and the step's slot."""
        with self._lock:
            self._check_dir()
            os.makedirs(self.sessions_dir, exist_ok=True)
            n = 1
            while True:
                name = step_name if n == 1 else f"{step_name}-{n}"
                if name not in self._taken:
                    try:
                        os.mkdir(os.path.join(self.sessions_dir, name))
                        break
                    except FileExistsError:
                        pass
                n += 1
            self._taken.add(name)
            self._steps.append(None)
            return name, len(self._steps) - 1

    def _release(self, name, slot):
        with self._lock:
            self._taken.discard(name)
            self._steps[slot] = False  # dropped: not written to scenario.json
        path = os.path.join(self.sessions_dir, name)
        for f in os.listdir(path) if os.path.isdir(path) else []:
            os.unlink(os.path.join(path, f))
        if os.path.isdir(path):
            os.rmdir(path)

    def _run(self, argv):
        """Run an apisim command line. scenario.db is created by whichever comes first: apisim
        migrates a new database once however many processes open it at the same moment."""
        return subprocess.run(argv, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def record_step(self, step_name, tool, args, model=None, session_log_dir=None):
        """Run `args` (inherited environment and working directory) under
        `apisim claude-record`, and keep its stdout with each line's time in a cassette.
        Returns a StepResult. Raises ScenarioError, leaving no cassette, when the step name
        cannot name a directory or the command cannot be run."""
        _check_step_name(step_name)
        if isinstance(args, (str, bytes)) or not args or \
                not all(isinstance(a, (str, os.PathLike)) for a in args):
            raise ScenarioError(f"args must be a non-empty list of strings (the command and "
                                f"its arguments), not {args!r}")
        args = [os.fspath(a) for a in args]
        name, slot = self._claim(step_name)
        cassette = os.path.join(self.sessions_dir, name)
        try:
            argv = [self.binary, "claude-record", "--db", self.db_path, "--session", name,
                    "--step", step_name, "--recipe", str(self.recipe_name)]
            if tool is not None:
                argv += ["--tool", str(tool)]
            if model:
                argv += ["--model", str(model)]
            proc = self._run(argv + ["--", *args])
            run = _read_run(self.db_path, name)
            if run is None:
                err = proc.stderr.decode("utf-8", "replace").strip()
                raise ScenarioError(f"step {step_name!r}: {args[0]} was not recorded "
                                    f"(exit {proc.returncode}): {err or 'no message'}")
            stdout, stderr, offsets, exit_code, duration_ms, unfinished = run
            with open(os.path.join(cassette, "stdout.jsonl"), "wb") as f:
                f.write(stdout)
            if stderr:
                with open(os.path.join(cassette, "stderr.txt"), "wb") as f:
                    f.write(stderr)
            _write_json(os.path.join(cassette, "meta.json"), {
                "step_name": step_name, "tool": tool, "model": model, "args": args,
                "session_log_dir": (os.fspath(session_log_dir) if session_log_dir is not None
                                    else None),
                "exit_code": exit_code, "duration_ms": duration_ms,
                "line_offsets_ms": offsets, "last_line_unfinished": unfinished,
                "db_session": name})
        except BaseException:
            self._release(name, slot)
            raise
        step = {"step_name": step_name, "tool": tool, "model": model,
                "session_dir": f"{SESSIONS}/{name}", "exit_code": exit_code,
                "duration_ms": duration_ms, "result_summary": None}
        with self._lock:
            self._steps[slot] = step
        return StepResult(step_name, cassette, exit_code, duration_ms,
                          stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"))

    def record_non_session_step(self, step_name, tool, result_summary=None):
        """Record a step that ran no CLI session, by its summary (a JSON object, e.g.
        {"exit_code": 0, "stdout_head": "..."}), which a player hands back for it."""
        _check_step_name(step_name)
        summary = {} if result_summary is None else result_summary
        if not isinstance(summary, dict):
            raise ScenarioError(f"result_summary must be a dict, not {type(summary).__name__}")
        try:
            text = json.dumps(summary)
        except (TypeError, ValueError) as e:
            raise ScenarioError(f"result_summary is not JSON-serialisable: {e}") from None
        with self._lock:
            self._check_dir()
            argv = [self.binary, "claude-record", "--db", self.db_path, "--step", step_name,
                    "--recipe", str(self.recipe_name), "--summary", text]
            if tool is not None:
                argv[argv.index("--summary"):argv.index("--summary")] = ["--tool", str(tool)]
            proc = self._run(argv)
            if proc.returncode != 0:
                raise ScenarioError(f"step {step_name!r}: apisim claude-record refused it: "
                                    f"{proc.stderr.decode('utf-8', 'replace').strip()}")
            self._steps.append({"step_name": step_name, "tool": tool, "session_dir": None,
                                "result_summary": json.loads(text)})

    @property
    def steps(self):
        """The steps recorded so far, in the order they were begun."""
        with self._lock:
            return [dict(s) for s in self._steps if s]

    def finalize(self):
        """Write <output_dir>/scenario.json ({"recipe": ..., "steps": [...]}, also with no
        steps), after making sure <output_dir>/scenario.db exists (`apisim init` creates it,
        with apisim's schema and no step, when no step did). Safe from any thread, once or
        more; returns the path of scenario.json. Raises ScenarioError, writing no
        scenario.json, when scenario.db cannot be created."""
        with self._lock:
            self._check_dir()
            if not os.path.exists(self.db_path):
                proc = self._run([self.binary, "init", "--db", self.db_path])
                if proc.returncode != 0:
                    raise ScenarioError(f"cannot create {self.db_path}: "
                                        f"{proc.stderr.decode('utf-8', 'replace').strip()}")
            path = os.path.join(self.output_dir, SCENARIO_FILE)
            _write_json(path, {"recipe": self.recipe_name,
                               "steps": [s for s in self._steps if s]})
            return path


def _read_run(db_path, session):
    """(stdout bytes, stderr bytes, line offsets in ms, exit code, duration in ms, last line
    unfinished) of the latest run recorded under session, or None."""
    if not os.path.exists(db_path):
        return None
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT id, exit_code, duration_us, stderr FROM claude_runs "
                          "WHERE session = ? ORDER BY id DESC LIMIT 1", (session,)).fetchone()
        if row is None:
            return None
        run_id, exit_code, duration_us, stderr = row
        lines = con.execute("SELECT offset_us, line, newline FROM claude_lines WHERE run_id = ? "
                            "ORDER BY idx", (run_id,)).fetchall()
    finally:
        con.close()
    out, offsets, unfinished = bytearray(), [], False
    for offset_us, line, newline in lines:
        out += line.encode("utf-8") if isinstance(line, str) else bytes(line)
        if newline:
            out += b"\n"
        else:
            unfinished = True
        offsets.append(round(offset_us / 1000.0, 3))
    if isinstance(stderr, str):
        stderr = stderr.encode("utf-8")
    return (bytes(out), bytes(stderr or b""), offsets, exit_code,
            round(duration_us / 1000.0, 3), unfinished)


def make_scenario_recorder(output_dir, recipe_name, binary=None):
    """A ScenarioRecorder writing into output_dir, which must exist. Raises ScenarioError
    (writing nothing) when it does not, ApisimError when there is no apisim binary."""
    path = os.fspath(output_dir)
    if not os.path.isdir(path):
        raise ScenarioError(f"output_dir {path} is not an existing directory: create it first "
                            "(the recorder writes sessions/, scenario.json and scenario.db in it)")
    if not isinstance(recipe_name, str) or not recipe_name:
        raise ScenarioError(f"recipe_name must be a non-empty string, not {recipe_name!r}")
    return ScenarioRecorder(path, recipe_name, binary)


# ---- playing ---------------------------------------------------------------------------


class StepRecord:
    """One step of a recorded scenario: step_name, tool, model, session_dir (the cassette's
    absolute path, None for a non-session step), result_summary (None for a session step),
    exit_code and duration_ms (session steps)."""

    def __init__(self, d, scenario_dir):
        self.step_name = d["step_name"]
        self.tool = d.get("tool")
        self.model = d.get("model")
        sd = d.get("session_dir")
        self.session_dir = os.path.join(scenario_dir, sd) if sd else None
        self.result_summary = d.get("result_summary")
        self.exit_code = d.get("exit_code")
        self.duration_ms = d.get("duration_ms")
        self.db_session = os.path.basename(sd) if sd else None

    def __repr__(self):
        return f"StepRecord({self.step_name!r}, session_dir={self.session_dir!r})"


class Scenario:
    """A recorded scenario: recipe, step_sequence (StepRecords in recorded order)."""

    def __init__(self, recipe, step_sequence):
        self.recipe, self.step_sequence = recipe, step_sequence


class StepMeta:
    """What a session step recorded: exit_code, duration_ms, model, tool, step_name,
    cassette_path."""

    def __init__(self, rec):
        self.step_name, self.tool, self.model = rec.step_name, rec.tool, rec.model
        self.exit_code, self.duration_ms = rec.exit_code, rec.duration_ms
        self.cassette_path = rec.session_dir


class ReplayCLI:
    """The fake `claude` of one recorded step: run() writes the step's recorded stdout (and
    stderr) with its recorded pacing and exits with its recorded status."""

    def __init__(self, player, rec):
        self.player, self.step = player, rec

    def run(self, args=(), env=None, timeout=None, cwd=None):
        """Run the fake `claude` at the player's binary_path and return a ClaudeResult
        (returncode/exit_code, stdout, stderr, records, ...)."""
        p = self.player
        args = [str(a) for a in (args or DEFAULT_ARGS)]
        config_dir = os.path.join(p.output_dir, "claude-config", self.step.db_session)
        os.makedirs(config_dir, exist_ok=True)
        child = {k: v for k, v in os.environ.items() if k not in _SCENARIO_VARS}
        child.update({"APISIM_DB": p.db_path, "APISIM_SESSION": self.step.db_session,
                      "CLAUDE_CONFIG_DIR": config_dir})
        child.update(env or {})
        run_cwd = os.path.realpath(cwd if cwd is not None else p.output_dir)
        # A link named claude is the fake CLI; under another name, apisim needs the command.
        argv = [p.binary_path, *args]
        if os.path.basename(p.binary_path) != "claude":
            argv.insert(1, "claude")
        proc = subprocess.Popen(argv, cwd=run_cwd, env=child,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            out, err = proc.communicate()
        return ClaudeResult(args, proc.returncode, out.decode("utf-8", "replace"),
                            err.decode("utf-8", "replace"), config_dir, run_cwd, timed_out)

    def __repr__(self):
        return f"<apisim replay of step {self.step.step_name!r} ({self.step.session_dir})>"


class ScenarioPlayer:
    """Plays a directory written by a ScenarioRecorder (see make_scenario_player)."""

    def __init__(self, scenario_dir, output_dir, binary_path, scenario):
        self.scenario_dir, self.output_dir = scenario_dir, output_dir
        self.binary_path = binary_path
        self.db_path = os.path.join(scenario_dir, SCENARIO_DB)
        self._scenario = scenario

    def scenario(self):
        return self._scenario

    def build_session_map(self):
        """{step_name: [(cli, meta), ...]} for the session steps, in recorded order."""
        out = {}
        for rec in self._scenario.step_sequence:
            if rec.session_dir is not None:
                out.setdefault(rec.step_name, []).append((ReplayCLI(self, rec), StepMeta(rec)))
        return out


def _load_scenario(scenario_dir):
    path = os.path.join(scenario_dir, SCENARIO_FILE)
    if not os.path.isdir(scenario_dir):
        raise ScenarioError(f"scenario_dir {scenario_dir} is not an existing directory")
    if not os.path.isfile(path):
        raise ScenarioError(f"no {SCENARIO_FILE} in {scenario_dir}: it is written by the "
                            "recorder's finalize() (make_scenario_recorder(...).finalize())")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise ScenarioError(f"{path} cannot be read as JSON: {e}") from None
    steps = doc.get("steps") if isinstance(doc, dict) else None
    if not isinstance(steps, list):
        raise ScenarioError(f"{path} has no \"steps\" list")
    records = []
    for i, d in enumerate(steps):
        if not isinstance(d, dict) or not isinstance(d.get("step_name"), str):
            raise ScenarioError(f"{path}: steps[{i}] is not an object with a step_name")
        rec = StepRecord(d, scenario_dir)
        if rec.session_dir is not None and not os.path.isfile(
                os.path.join(rec.session_dir, "stdout.jsonl")):
            raise ScenarioError(f"{path}: steps[{i}] ({rec.step_name!r}) has no cassette at "
                                f"{rec.session_dir}/stdout.jsonl")
        records.append(rec)
    if any(r.session_dir for r in records) and \
            not os.path.isfile(os.path.join(scenario_dir, SCENARIO_DB)):
        raise ScenarioError(f"no {SCENARIO_DB} in {scenario_dir}: the session steps are "
                            "replayed from it")
    return Scenario(doc.get("recipe"), records)


def make_scenario_player(scenario_dir, output_dir, binary_path, binary=None):
    """A ScenarioPlayer of scenario_dir. Session logs of the replays go under output_dir
    (created); binary_path is the fake `claude` the replays run: a link to the apisim binary
    is made there when nothing is. Raises ScenarioError, writing nothing, when scenario_dir
    has no (valid) scenario.json."""
    scenario_dir = os.path.abspath(os.fspath(scenario_dir))
    scenario = _load_scenario(scenario_dir)
    apisim = find_binary(binary)
    output_dir = os.path.abspath(os.fspath(output_dir))
    binary_path = os.path.abspath(os.fspath(binary_path))
    os.makedirs(output_dir, exist_ok=True)
    if not os.path.lexists(binary_path):
        os.makedirs(os.path.dirname(binary_path), exist_ok=True)
        os.symlink(apisim, binary_path)
    elif not os.access(binary_path, os.X_OK):
        raise ScenarioError(f"binary_path {binary_path} exists and is not executable: remove "
                            "it, and a link to apisim is made there")
    return ScenarioPlayer(scenario_dir, output_dir, binary_path, scenario)

