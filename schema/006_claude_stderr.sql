-- apisim recording schema: a recorded CLI run's stderr with its timing, and the steps of a
-- multi-step scenario (apisim.claude.make_scenario_recorder), both written by
-- `apisim claude-record`.
-- claude_runs.stderr keeps the whole text as before; claude_stderr has the same bytes in the
-- pieces they were read in, each with the moment it was read, so `apisim claude` replays
-- stderr interleaved with stdout as it came instead of in one block at the end.

CREATE TABLE claude_stderr (
    run_id    INTEGER NOT NULL REFERENCES claude_runs(id) ON DELETE CASCADE,  -- the run
    idx       INTEGER NOT NULL,   -- 0-based position of the piece in the run's stderr
    offset_us INTEGER NOT NULL,   -- microseconds from the run's start to the moment the piece was read
    chunk     BLOB NOT NULL,      -- the bytes as read: TEXT when valid UTF-8, else BLOB
    PRIMARY KEY (run_id, idx)
) WITHOUT ROWID;

CREATE TABLE scenario_steps (
    id             INTEGER PRIMARY KEY,  -- order of recording: a player replays steps in id order
    recipe         TEXT,                 -- the scenario's recipe name (--recipe); NULL when not given
    step_name      TEXT NOT NULL,        -- the step's name as the recorder was given it (--step)
    tool           TEXT,                 -- what ran the step, e.g. "run_skill", "run_cmd" (--tool); NULL when not given
    model          TEXT,                 -- the model the step asked for (--model); NULL when not given
    run_id         INTEGER REFERENCES claude_runs(id) ON DELETE CASCADE,  -- the recorded run of a session step; NULL for a non-session step
    result_summary TEXT,                 -- JSON object summing up a non-session step (--summary); NULL for a session step
    recorded_at    TEXT NOT NULL         -- ISO-8601 UTC with ms, when the step was stored
);

CREATE INDEX scenario_steps_by_run ON scenario_steps (run_id);  -- a run's step, for views and joins
