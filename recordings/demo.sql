PRAGMA user_version=3;
BEGIN TRANSACTION;
CREATE TABLE chunks (
    exchange_id INTEGER NOT NULL REFERENCES exchanges(id) ON DELETE CASCADE,  -- the exchange
    idx         INTEGER NOT NULL,   -- 0-based position of the piece in the body
    offset_us   INTEGER NOT NULL,   -- microseconds from request arrival to this piece
    size        INTEGER NOT NULL,   -- bytes of the stored (decoded) body in this piece
    PRIMARY KEY (exchange_id, idx)
) WITHOUT ROWID;
CREATE TABLE claude_lines (
    run_id    INTEGER NOT NULL REFERENCES claude_runs(id) ON DELETE CASCADE,  -- the run
    idx       INTEGER NOT NULL,   -- 0-based position of the line in the run's stdout
    offset_us INTEGER NOT NULL,   -- microseconds from the run's start to the moment the line was complete
    line      BLOB NOT NULL,      -- the line without its newline: TEXT when valid UTF-8, else BLOB
    newline   INTEGER NOT NULL DEFAULT 1,  -- 0 for a last line the command never finished with a newline
    PRIMARY KEY (run_id, idx)
) WITHOUT ROWID;
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
CREATE TABLE sessions (
    name       TEXT PRIMARY KEY,   -- the --session name ("default" unless given)
    created_at TEXT NOT NULL,      -- ISO-8601 UTC, when the first exchange was written
    upstream   TEXT                -- the --upstream URL it was recorded from; NULL for stubs and imports
);
INSERT INTO "sessions" VALUES('demo','2026-11-24T23:29:06.924Z','http://127.0.0.1:46099');
INSERT INTO "exchanges" VALUES(1,'demo',1,'record','2026-11-24T23:29:06.978Z','GET','/v1/models','','[["Host","127.0.0.1:36809"],["User-Agent","curl/7.88.1"],["Accept","*/*"],["x-api-key","[REDACTED]"],["anthropic-version","2023-06-01"]]','GET /v1/models',200,'[["Server","BaseHTTP/0.6 Python/3.11.7"],["Date","Tue, 24 Nov 2026 23:29:06 GMT"],["Content-Type","application/json"],["request-id","req_01demo"],["Content-Length","112"]]',NULL,898,909,NULL,1,0,112,NULL,'{"data": [{"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5"}], "has_more": false}');
INSERT INTO "exchanges" VALUES(2,'demo',2,'record','2026-11-24T23:29:06.985Z','POST','/v1/messages','','[["Host","127.0.0.1:36809"],["User-Agent","curl/7.88.1"],["Accept","*/*"],["x-api-key","[REDACTED]"],["anthropic-version","2023-06-01"],["content-type","application/json"],["Content-Length","106"]]','POST /v1/messages body={"max_tokens":256,"messages":[{"content":"Say hello.","role":"user"}],"model":"claude-sonnet-4-5"}',200,'[["Server","BaseHTTP/0.6 Python/3.11.7"],["Date","Tue, 24 Nov 2026 23:29:06 GMT"],["Content-Type","application/json"],["request-id","req_01demo"],["Content-Length","264"]]',NULL,636,640,NULL,1,0,264,'{"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": "Say hello."}]}','{"id": "msg_01demo", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "Hello from the demo recording."}], "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 9}}');
INSERT INTO "exchanges" VALUES(3,'demo',3,'record','2026-11-24T23:29:06.995Z','POST','/v1/messages','','[["Host","127.0.0.1:36809"],["User-Agent","curl/7.88.1"],["Accept","*/*"],["x-api-key","[REDACTED]"],["anthropic-version","2023-06-01"],["content-type","application/json"],["Content-Length","122"]]','POST /v1/messages body={"max_tokens":256,"messages":[{"content":"Say hello.","role":"user"}],"model":"claude-sonnet-4-5","stream":true}',200,'[["Server","BaseHTTP/0.6 Python/3.11.7"],["Date","Tue, 24 Nov 2026 23:29:06 GMT"],["Content-Type","text/event-stream"],["Cache-Control","no-cache"],["Transfer-Encoding","chunked"]]',NULL,794,803755,NULL,1,0,1308,'{"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": true, "messages": [{"role": "user", "content": "Say hello."}]}','event: message_start
data: {"type": "message_start", "message": {"id": "msg_01demo", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 9}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " from"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " the"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " demo"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " stream."}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 9}}

event: message_stop
data: {"type": "message_stop"}

');
INSERT INTO "chunks" VALUES(1,0,902,112);
INSERT INTO "chunks" VALUES(2,0,636,264);
INSERT INTO "chunks" VALUES(3,0,794,267);
INSERT INTO "chunks" VALUES(3,1,81086,125);
INSERT INTO "chunks" VALUES(3,2,161440,128);
INSERT INTO "chunks" VALUES(3,3,241729,128);
INSERT INTO "chunks" VALUES(3,4,322017,127);
INSERT INTO "chunks" VALUES(3,5,402355,128);
INSERT INTO "chunks" VALUES(3,6,482553,131);
INSERT INTO "chunks" VALUES(3,7,562835,76);
INSERT INTO "chunks" VALUES(3,8,643151,146);
INSERT INTO "chunks" VALUES(3,9,723413,52);
CREATE INDEX claude_runs_by_session ON claude_runs (session, id);
CREATE INDEX exchanges_by_path ON exchanges (path);
CREATE INDEX exchanges_by_session ON exchanges (session, seq);
CREATE VIEW exchanges_text AS
-- every exchange with text bodies as text and headers as JSON objects
SELECT
    e.id,                 -- exchanges.id, what `apisim ls` and `apisim show ID` use
    e.session,            -- session name
    e.seq,                -- order within the session, from 1
    e.source,             -- 'record', 'stub' or 'import'
    e.started_at,         -- ISO-8601 UTC with ms, when the request arrived
    e.method,             -- request method
    e.path,               -- request path without the query
    e.query,              -- raw query string without '?'
    e.status,             -- response status
    (SELECT json_group_object(name, value) FROM (
        SELECT lower(json_extract(h.value, '$[0]')) AS name,
               group_concat(json_extract(h.value, '$[1]'), ', ') AS value
        FROM json_each(e.request_headers) AS h GROUP BY 1))
        AS request_headers,   -- JSON object {"lower-case name": "value", ...}
    CASE WHEN typeof(e.request_body) = 'text' THEN e.request_body END
        AS request_body,      -- the request body when it is text; NULL when binary or empty
    length(CAST(e.request_body AS BLOB)) AS request_bytes,  -- request body size in bytes; NULL when empty
    (SELECT json_group_object(name, value) FROM (
        SELECT lower(json_extract(h.value, '$[0]')) AS name,
               group_concat(json_extract(h.value, '$[1]'), ', ') AS value
        FROM json_each(e.response_headers) AS h GROUP BY 1))
        AS response_headers,  -- JSON object {"lower-case name": "value", ...}
    CASE WHEN typeof(e.response_body) = 'text' THEN e.response_body END
        AS response_body,     -- the (decoded) response body when it is text; NULL when binary or empty
    length(CAST(e.response_body AS BLOB)) AS response_bytes,  -- decoded response body size in bytes; NULL when empty
    e.response_encoding,  -- Content-Encoding the upstream used (gzip, deflate); NULL when none
    e.ttfb_us / 1000.0 AS ttfb_ms,          -- time to first response byte, milliseconds
    e.duration_us / 1000.0 AS duration_ms,  -- time to last response byte, milliseconds
    (SELECT count(*) FROM chunks AS c WHERE c.exchange_id = e.id) AS chunks,  -- pieces the body arrived in
    e.error,              -- transport failure cause; NULL when the upstream answered
    e.complete            -- 0 when the client or upstream went away before the end
FROM exchanges AS e;
CREATE VIEW misses AS
-- answers apisim gave to requests nothing matched: 404 with an X-Apisim-Miss header
SELECT
    e.id,                 -- exchanges.id
    e.session,            -- session name
    e.started_at,         -- when the request arrived
    e.method,             -- request method
    e.path,               -- request path
    e.query,              -- raw query string
    e.request_body,       -- request body (TEXT or BLOB)
    e.response_body AS miss_report  -- the miss answer: the request, its key, the nearest recorded exchanges
FROM exchanges AS e
WHERE e.status = 404
  AND EXISTS (SELECT 1 FROM json_each(e.response_headers) AS h
              WHERE lower(json_extract(h.value, '$[0]')) = 'x-apisim-miss');
CREATE VIEW session_summary AS
-- one row per session: how many exchanges, which statuses, how many bytes, what time span
SELECT
    s.name AS session,    -- session name
    s.upstream,           -- the --upstream it was recorded from; NULL for stubs and imports
    (SELECT count(*) FROM exchanges AS e WHERE e.session = s.name) AS exchanges,  -- number of exchanges
    (SELECT json_group_object(status, n) FROM (
        SELECT CAST(e.status AS TEXT) AS status, count(*) AS n FROM exchanges AS e
        WHERE e.session = s.name GROUP BY e.status ORDER BY e.status))
        AS statuses,      -- JSON object {"200": count, "404": count, ...}
    (SELECT coalesce(sum(length(CAST(e.request_body AS BLOB))), 0) FROM exchanges AS e
        WHERE e.session = s.name) AS request_bytes,   -- request body bytes, all exchanges
    (SELECT coalesce(sum(length(CAST(e.response_body AS BLOB))), 0) FROM exchanges AS e
        WHERE e.session = s.name) AS response_bytes,  -- decoded response body bytes, all exchanges
    (SELECT min(e.started_at) FROM exchanges AS e WHERE e.session = s.name)
        AS first_started_at,  -- when the first request arrived; NULL when empty
    (SELECT max(e.started_at) FROM exchanges AS e WHERE e.session = s.name)
        AS last_started_at    -- when the last request arrived; NULL when empty
FROM sessions AS s;
CREATE VIEW stubs AS
-- exchanges someone wrote instead of recorded (source 'stub')
SELECT
    e.id,                 -- exchanges.id
    e.session,            -- session name
    e.method,             -- method the stub answers
    e.path,               -- path the stub answers
    e.query,              -- query string it answers
    e.status,             -- status it answers with
    e.response_body,      -- body it answers with
    e.delay_ms            -- milliseconds it waits before answering
FROM exchanges AS e
WHERE e.source = 'stub';
COMMIT;
