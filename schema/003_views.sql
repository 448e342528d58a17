-- Views that make the common questions about a recording one-liners in sqlite3, e.g.
--   sqlite3 rec.db 'SELECT id, method, path, status FROM exchanges_text'
-- They only read the tables of 001_core.sql; dropping them loses nothing.
-- Header objects have lower-case names; a header sent several times has its values joined
-- with ", " (as the control API's journal shows them).

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
