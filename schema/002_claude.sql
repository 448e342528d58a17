-- apisim recording schema, version 2: runs of the `claude` CLI recorded by
-- `apisim claude-record`, replayed by `apisim claude` with APISIM_DB + APISIM_SESSION.
-- A run is one command; its stdout is kept line by line with the moment each line was
-- complete, so a replay writes the same lines with the same gaps.

CREATE TABLE claude_runs (
    id               INTEGER PRIMARY KEY,  -- run id; replay picks the largest one of its session
    session          TEXT NOT NULL REFERENCES sessions(name),  -- the --session name ("default" unless given)
    argv             TEXT NOT NULL,        -- JSON array of strings: the command and its arguments
    cwd              TEXT NOT NULL,        -- working directory the command ran in
    started_at       TEXT NOT NULL,        -- ISO-8601 UTC with ms, when the command was started
    duration_us      INTEGER NOT NULL,     -- microseconds from start to the command's exit
    exit_code        INTEGER NOT NULL,     -- the command's exit status; 128+N when killed by signal N
    stderr           BLOB,                 -- everything it wrote on stderr: TEXT when valid UTF-8, else BLOB; NULL when nothing
    session_id       TEXT,                 -- session_id of the first stdout record that has one; NULL when none
    session_log_path TEXT,                 -- the session log it wrote (<config dir>/projects/<slug>/<session_id>.jsonl); NULL when none was found
    session_log      BLOB                  -- that file's contents after the run: TEXT when valid UTF-8; NULL when none
);

CREATE INDEX claude_runs_by_session ON claude_runs (session, id);  -- replay finds the latest run of a session

CREATE TABLE claude_lines (
    run_id    INTEGER NOT NULL REFERENCES claude_runs(id) ON DELETE CASCADE,  -- the run
    idx       INTEGER NOT NULL,   -- 0-based position of the line in the run's stdout
    offset_us INTEGER NOT NULL,   -- microseconds from the run's start to the moment the line was complete
    line      BLOB NOT NULL,      -- the line without its newline: TEXT when valid UTF-8, else BLOB
    newline   INTEGER NOT NULL DEFAULT 1,  -- 0 for a last line the command never finished with a newline
    PRIMARY KEY (run_id, idx)
) WITHOUT ROWID;
