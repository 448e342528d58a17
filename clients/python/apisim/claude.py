"""apisim.FakeClaude: a scripted fake `claude` CLI (`apisim claude`)."""

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile

from ._binary import find_binary
from .errors import ApisimError

# The scenario file "version" whose positions count the added messages from 0.
SCENARIO_VERSION = 2

# What run() passes when given no arguments: print mode with stream-json records.
DEFAULT_ARGS = ("-p", "hello", "--output-format", "stream-json", "--verbose")

PRESETS = ("success", "context-exhaustion", "max-turns", "api-retry", "api-retry-exhausted",
           "corrupt-stream", "truncated", "interrupted", "hang-after-result")

# Environment variables that choose a scenario; FakeClaude sets exactly one of them.
_SCENARIO_VARS = ("APISIM_CLAUDE_SCENARIO", "APISIM_CLAUDE_PRESET", "APISIM_DB",
                  "APISIM_SESSION")


def slug(cwd):
    """The project slug the CLI uses for a working directory: every character other than a
    letter or digit becomes '-'."""
    return re.sub(r"[^A-Za-z0-9]", "-", cwd)


class ClaudeResult:
    """One run of the fake CLI.

    exit_code    the exit status (130 after SIGINT, negative for another signal); also
                 `returncode`, as subprocess names it
    stdout       text written to stdout;  stderr  text written to stderr
    records      stdout lines that are JSON, parsed, in order
    invalid_lines  [(line index, text)] of stdout lines that are not JSON (corrupt-stream)
    session_id   the session id of the records (None when none carried one)
    session_log_dir  the CLAUDE_CONFIG_DIR the run used
    session_log_path <session_log_dir>/projects/<slug of cwd>/<session_id>.jsonl
    timed_out    True when run(timeout=...) had to interrupt it
    """

    def __init__(self, args, exit_code, stdout, stderr, session_log_dir, cwd, timed_out):
        self.args, self.exit_code, self.stdout, self.stderr = args, exit_code, stdout, stderr
        self.session_log_dir, self.cwd, self.timed_out = session_log_dir, cwd, timed_out
        self.records, self.invalid_lines = [], []
        for i, line in enumerate(stdout.splitlines()):
            if not line.strip():
                continue
            try:
                self.records.append(json.loads(line))
            except ValueError:
                self.invalid_lines.append((i, line))
        self.session_id = next((r["session_id"] for r in self.records
                                if isinstance(r, dict) and r.get("session_id")), None)

    @property
    def returncode(self):
        return self.exit_code

    @property
    def result(self):
        """The last `result` record, or None (truncated, interrupted, corrupt runs)."""
        found = [r for r in self.records if isinstance(r, dict) and r.get("type") == "result"]
        return found[-1] if found else None

    def records_of(self, type_, subtype=None):
        """Records whose type (and subtype, if given) match."""
        return [r for r in self.records if isinstance(r, dict) and r.get("type") == type_
                and (subtype is None or r.get("subtype") == subtype)]

    @property
    def session_log_path(self):
        if self.session_id is None:
            return None
        return os.path.join(self.session_log_dir, "projects", slug(self.cwd),
                            self.session_id + ".jsonl")

    def session_log(self):
        """The session log's lines, parsed (ApisimError when there is none)."""
        path = self.session_log_path
        if path is None or not os.path.exists(path):
            raise ApisimError(f"no session log at {path} (files under {self.session_log_dir}: "
                              f"{_listing(self.session_log_dir)})")
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def __repr__(self):
        return (f"ClaudeResult(exit_code={self.exit_code}, records={len(self.records)}, "
                f"invalid_lines={len(self.invalid_lines)}, timed_out={self.timed_out})")


def _position(value, what):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} is a message position (an int), not {type(value).__name__}")
    if value < 0:
        raise ApisimError(f"{what}={value}: positions count the messages from 0")
    return value


def _listing(root):
    out = []
    for d, _, files in os.walk(root):
        out += [os.path.relpath(os.path.join(d, f), root) for f in files]
    return sorted(out)


class FakeClaude:
    """A scenario for the fake `claude` CLI, and ways to run it.

    Build a scenario (each method returns self):
        add_message(record)            a stream-json record ({"type": "assistant", ...})
        delay_message(n, ms)           wait ms milliseconds before message n
        inject_api_retry(at_message, error_status=529, attempts=3, exhaust=False)
                                       `attempts` system/api_retry records just before
                                       message at_message; with exhaust, nothing from that
                                       message on is written and the exit status is 1
        corrupt_stream(at_message, error_text)   message at_message replaced by that
                                       non-JSON line
        truncate_after(n)              write messages 0..n-1, then exit 1
        inject_exit(n, code)           write messages 0..n, then exit with code
        set_exit_code(code)            exit status after the last message
        set_stderr(text)               written to stderr at the end
        hang_after_result()            stay alive after the result until signalled
        preset(name)                   one of PRESETS instead of a scenario
    Positions count the messages added with add_message from 0, in order; the init record
    apisim prepends (when the messages do not start with one) is not counted, nor are
    api_retry records. A position may name a message added later; one past the end when the
    scenario is run or written raises ApisimError. With neither messages nor a preset, the
    `success` preset runs.

    run(args=(), env=None, timeout=None, cwd=None, input=None) -> ClaudeResult runs
    `apisim claude ARGS` (DEFAULT_ARGS when args is empty) with CLAUDE_CONFIG_DIR set to a
    fresh temporary directory (result.session_log_dir).

    As a context manager it puts a directory holding a `claude` link to the apisim binary
    first on PATH and sets APISIM_CLAUDE_SCENARIO (or APISIM_CLAUDE_PRESET) and
    CLAUDE_CONFIG_DIR (self.session_log_dir) in os.environ, so code under test that spawns
    `claude` gets this scenario; all are restored on exit. Changes made to the scenario inside
    the block apply to the next spawn.
    """

    def __init__(self, session_id=None, model=None, binary=None):
        self.binary = binary
        self._scenario = {"version": SCENARIO_VERSION, "records": []}
        if session_id is not None:
            self._scenario["session_id"] = session_id
        if model is not None:
            self._scenario["model"] = model
        self._preset = None
        self._touched = session_id is not None or model is not None
        self._tmpdirs = []
        self._workdir = None
        self._saved_env = None
        self.session_log_dir = None
        self.bin_dir = None

    # ---- building the scenario ----------------------------------------------------------

    def _edit(self):
        if self._preset is not None:
            raise ApisimError(f"preset({self._preset!r}) is set: a preset runs as it is and "
                              "cannot be combined with scenario edits")
        self._touched = True

    def _changed(self):
        if self._saved_env is not None:
            self._publish()
        return self

    def add_message(self, record):
        if not isinstance(record, dict):
            raise TypeError(f"a record is a dict, not {type(record).__name__}")
        self._edit()
        self._scenario["records"].append(copy.deepcopy(record))
        return self._changed()

    def add_messages(self, records):
        for r in records:
            self.add_message(r)
        return self

    def delay_message(self, n, ms):
        self._edit()
        self._scenario.setdefault("delays_ms", {})[str(_position(n, "delay_message(n)"))] = ms
        return self._changed()

    def inject_api_retry(self, at_message, error_status=529, attempts=3, exhaust=False):
        self._edit()
        at_message = _position(at_message, "inject_api_retry(at_message)")
        self._scenario["api_retry"] = {"at": at_message, "status": error_status,
                                       "attempts": attempts, "exhaust": bool(exhaust)}
        return self._changed()

    def corrupt_stream(self, at_message, error_text):
        self._edit()
        self._scenario["corrupt"] = {"at": _position(at_message, "corrupt_stream(at_message)"),
                                     "text": error_text}
        return self._changed()

    def truncate_after(self, n):
        self._edit()
        self._scenario["truncate_after"] = _position(n, "truncate_after(n)")
        return self._changed()

    def inject_exit(self, at_message, code):
        self._edit()
        self._scenario["exit_at"] = {"at": _position(at_message, "inject_exit(at_message)"),
                                     "code": code}
        return self._changed()

    def set_exit_code(self, code):
        self._edit()
        self._scenario["exit_code"] = code
        return self._changed()

    def set_stderr(self, text):
        self._edit()
        self._scenario["stderr"] = text
        return self._changed()

    def hang_after_result(self):
        self._edit()
        self._scenario["hang_after_result"] = True
        return self._changed()

    def preset(self, name):
        if self._touched:
            raise ApisimError(f"preset({name!r}) cannot be combined with scenario edits "
                              "already made (use a fresh FakeClaude)")
        self._preset = name
        return self._changed()

    def scenario(self):
        """The scenario file's content (a dict), or None when a preset is chosen."""
        if self._preset is not None or not self._touched:
            return None
        return copy.deepcopy(self._scenario)

    def check(self):
        """Raise ApisimError when a position is past the messages added so far."""
        sc = self.scenario()
        if sc is None:
            return self
        n = len(sc["records"])
        what = f"the scenario has {n} message{'s' if n != 1 else ''}"

        def past(call, at, last):
            if at > last:
                span = f"0..{last}" if last >= 0 else "none"
                raise ApisimError(f"{call}={at} is past the end: {what} (positions {span}; "
                                  "count from 0 the messages given to add_message)")

        for key in sc.get("delays_ms", {}):
            past("delay_message(n)", int(key), n)
        if "api_retry" in sc:
            past("inject_api_retry(at_message)", sc["api_retry"]["at"], n)
        if "corrupt" in sc:
            past("corrupt_stream(at_message)", sc["corrupt"]["at"], n - 1)
        if "truncate_after" in sc:
            past("truncate_after(n)", sc["truncate_after"], n)
        if "exit_at" in sc:
            past("inject_exit(at_message)", sc["exit_at"]["at"], n - 1)
        return self

    def write_scenario(self, path, check=True):
        """Write the scenario file to path (for `claude --apisim-scenario PATH`). Raises
        ApisimError, writing nothing, when a position is past the end."""
        sc = self.scenario()
        if sc is None:
            raise ApisimError("no scenario to write: a preset is chosen (or nothing was "
                              "added, which runs the `success` preset)")
        if check:
            self.check()
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(sc, f, indent=1)
        os.replace(tmp, path)  # a reader never sees half a file
        return path

    def _selection(self, workdir, check=True):
        """{var: value} choosing this scenario for a child process."""
        sc = self.scenario()
        if sc is None:
            return {"APISIM_CLAUDE_PRESET": self._preset or "success"}
        path = os.path.join(workdir, "scenario.json")
        self.write_scenario(path, check=check)
        return {"APISIM_CLAUDE_SCENARIO": path}

    def _mkdtemp(self, prefix):
        d = tempfile.mkdtemp(prefix=prefix)
        self._tmpdirs.append(d)
        return d

    # ---- running ------------------------------------------------------------------------

    def run(self, args=(), env=None, timeout=None, cwd=None, input=None):
        """Run the fake CLI to its end and return a ClaudeResult. `env` is added to
        os.environ. With `timeout` (seconds), a run still going then gets SIGINT (as a
        harness interrupting it would), and the result has timed_out=True."""
        binary = find_binary(self.binary)
        self.check()
        args = [str(a) for a in (args or DEFAULT_ARGS)]
        workdir = self._mkdtemp("apisim-claude-run-")
        config_dir = os.path.join(workdir, "config")
        os.mkdir(config_dir)
        child = {k: v for k, v in os.environ.items() if k not in _SCENARIO_VARS}
        child.update(self._selection(workdir))
        child["CLAUDE_CONFIG_DIR"] = config_dir
        child.update(env or {})
        config_dir = child["CLAUDE_CONFIG_DIR"]
        run_cwd = os.path.realpath(cwd if cwd is not None else os.getcwd())
        proc = subprocess.Popen([binary, "claude", *args], cwd=run_cwd, env=child,
                                stdin=subprocess.PIPE if input is not None else
                                subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        data = input.encode("utf-8") if isinstance(input, str) else input
        timed_out = False
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.send_signal(signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
        return ClaudeResult(args, proc.returncode, out.decode("utf-8", "replace"),
                            err.decode("utf-8", "replace"), config_dir, run_cwd, timed_out)

    # ---- as `claude` on PATH ------------------------------------------------------------

    def _publish(self):
        for var in _SCENARIO_VARS:
            os.environ.pop(var, None)
        # Inside the block a position may name a message not added yet: the file is written
        # as it stands, and `claude` itself says what is wrong if it is spawned so.
        os.environ.update(self._selection(self._workdir, check=False))

    def __enter__(self):
        if self._saved_env is not None:
            raise ApisimError("this FakeClaude is already active")
        binary = find_binary(self.binary)
        self._workdir = self._mkdtemp("apisim-claude-")
        self.bin_dir = os.path.join(self._workdir, "bin")
        os.mkdir(self.bin_dir)
        os.symlink(binary, os.path.join(self.bin_dir, "claude"))
        self.session_log_dir = os.path.join(self._workdir, "config")
        os.mkdir(self.session_log_dir)
        names = ("PATH", "CLAUDE_CONFIG_DIR") + _SCENARIO_VARS
        self._saved_env = {k: os.environ.get(k) for k in names}
        old_path = os.environ.get("PATH")
        os.environ["PATH"] = self.bin_dir + (os.pathsep + old_path if old_path else "")
        os.environ["CLAUDE_CONFIG_DIR"] = self.session_log_dir
        self._publish()
        return self

    def __exit__(self, *exc):
        saved, self._saved_env = self._saved_env, None
        for k, v in (saved or {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def session_logs(self):
        """Paths of every session log written under session_log_dir (context manager use)."""
        if self.session_log_dir is None:
            return []
        return [os.path.join(self.session_log_dir, p) for p in _listing(self.session_log_dir)
                if p.startswith("projects" + os.sep) and p.endswith(".jsonl")]

    def close(self):
        """Leave the context if still inside, and delete the temporary directories."""
        if self._saved_env is not None:
            self.__exit__(None, None, None)
        for d in self._tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
        self._tmpdirs = []


# The names the seed's api-simulator gave it.
FakeClaudeCLI = FakeClaude
ClaudeCLI = FakeClaude


# The multi-step scenario recorder and player (apisim/_scenario.py builds on this module).
from ._scenario import (  # noqa: E402
    ScenarioPlayer, ScenarioRecorder, make_scenario_player, make_scenario_recorder)
