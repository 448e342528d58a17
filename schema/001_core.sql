-- apisim recording schema, version 1: sessions, exchanges and the timing of their bodies.
-- Applied in order with the other schema/NNN_*.sql files; PRAGMA user_version holds the
-- number of the last one applied. Comments inside CREATE statements are kept by SQLite, so
-- `sqlite3 rec.db .schema` shows them.

CREATE TABLE sessions (
    name       TEXT PRIMARY KEY,   -- the --session name ("default" unless given)
    created_at TEXT NOT NULL,      -- ISO-8601 UTC, when the first exchange was written
    upstream   TEXT                -- the --upstream URL it was recorded from; NULL for stubs and imports
);

CREATE TABLE exchanges (
    id                INTEGER PRIMARY KEY,  -- stable id, shown by `apisim ls` and in miss reports
    session           TEXT NOT NULL REFERENCES sessions(name),  -- session this exchange belongs to
    seq               INTEGER NOT NULL,     -- order of arrival within the session, from 1
    source            TEXT NOT NULL DEFAULT 'record'
                      CHECK (source IN ('record', 'stub', 'import')),  -- who wrote it
    started_at        TEXT NOT NULL,        -- ISO-8601 UTC with ms, when the request arrived
    method            TEXT NOT NULL,        -- request method, e.g. GET
    path              TEXT NOT NULL,        -- request path without the query, e.g. /v1/messages
    query             TEXT NOT NULL DEFAULT '',  -- raw query string without '?', secrets redacted
    request_headers   TEXT NOT NULL DEFAULT '[]',  -- JSON array of [name, value] in arrival order, secrets redacted
    match_key         TEXT,                 -- the request's match key under the default rules
    status            INTEGER NOT NULL,     -- response status; 502 for an upstream transport failure
    response_headers  TEXT NOT NULL DEFAULT '[]',  -- JSON array of [name, value] as the upstream sent them, secrets redacted
    response_encoding TEXT,                 -- the upstream's Content-Encoding (gzip, deflate) before decoding; NULL when none
    ttfb_us           INTEGER NOT NULL DEFAULT 0,  -- microseconds from request arrival to the first response byte
    duration_us       INTEGER NOT NULL DEFAULT 0,  -- microseconds from request arrival to the last response byte
    error             TEXT,                 -- transport failure cause (e.g. "connection refused"); NULL when answered
    complete          INTEGER NOT NULL DEFAULT 1,  -- 0 when the client or upstream went away before the end
    delay_ms          INTEGER NOT NULL DEFAULT 0,  -- stubs: milliseconds to wait before answering
    response_size     INTEGER NOT NULL DEFAULT 0,  -- bytes of response_body as stored (read without reading the body)
    -- The bodies come last: SQLite reads a row's columns in order, and a large body
    -- before the small columns would have to be walked to reach them.
    request_body      BLOB,                 -- TEXT when valid UTF-8, else BLOB; NULL when empty
    response_body     BLOB                  -- decoded body: TEXT when valid UTF-8, else BLOB; NULL when empty
);

CREATE INDEX exchanges_by_session ON exchanges (session, seq);  -- replay loads a session in order
CREATE INDEX exchanges_by_path ON exchanges (path);             -- lookups by path from sqlite3

CREATE TABLE chunks (
    exchange_id INTEGER NOT NULL REFERENCES exchanges(id) ON DELETE CASCADE,  -- the exchange
    idx         INTEGER NOT NULL,   -- 0-based position of the piece in the body
    offset_us   INTEGER NOT NULL,   -- microseconds from request arrival to this piece
    size        INTEGER NOT NULL,   -- bytes of the stored (decoded) body in this piece
    PRIMARY KEY (exchange_id, idx)
) WITHOUT ROWID;
