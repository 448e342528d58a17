-- Many hosts in one recording (apisim as a forward proxy): each exchange says which
-- scheme and authority its request was for. A proxied request replays only from exchanges
-- of its own scheme and authority; a request sent to apisim as a reverse proxy (no host of
-- its own) matches any, as before.

ALTER TABLE exchanges ADD COLUMN scheme TEXT;     -- 'http' or 'https' the request was for (reverse mode: the upstream's); NULL when unknown
ALTER TABLE exchanges ADD COLUMN authority TEXT;  -- its host[:port] as the client named it (reverse mode: the upstream's); NULL when unknown

-- Older recordings: every exchange came from its session's --upstream.
UPDATE exchanges SET
    scheme = (SELECT lower(substr(s.upstream, 1, instr(s.upstream, '://') - 1))
              FROM sessions AS s WHERE s.name = exchanges.session),
    authority = (SELECT CASE WHEN instr(substr(s.upstream, instr(s.upstream, '://') + 3), '/') > 0
                        THEN substr(substr(s.upstream, instr(s.upstream, '://') + 3), 1,
                                    instr(substr(s.upstream, instr(s.upstream, '://') + 3), '/') - 1)
                        ELSE substr(s.upstream, instr(s.upstream, '://') + 3) END
                 FROM sessions AS s WHERE s.name = exchanges.session)
WHERE scheme IS NULL AND source = 'record'
  AND EXISTS (SELECT 1 FROM sessions AS s WHERE s.name = exchanges.session
              AND instr(s.upstream, '://') > 0);

CREATE INDEX exchanges_by_host ON exchanges (authority, path);  -- lookups by host from sqlite3

DROP VIEW exchanges_text;
CREATE VIEW exchanges_text AS
-- every exchange with text bodies as text and headers as JSON objects
SELECT
    e.id,                 -- exchanges.id, what `apisim ls` and `apisim show ID` use
    e.session,            -- session name
    e.seq,                -- order within the session, from 1
    e.source,             -- 'record', 'stub' or 'import'
    e.started_at,         -- ISO-8601 UTC with ms, when the request arrived
    e.method,             -- request method
    e.scheme,             -- 'http' or 'https'; NULL when unknown
    e.authority,          -- host[:port] the request was for; NULL when unknown
    e.path,               -- request path without the query
    e.query,              -- raw query string without '?'
    CASE WHEN e.authority IS NOT NULL
         THEN coalesce(e.scheme, 'http') || '://' || e.authority || e.path
              || CASE WHEN e.query <> '' THEN '?' || e.query ELSE '' END
    END AS url,           -- the full URL; NULL when the host is unknown
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

CREATE VIEW hosts AS
-- one row per session and host: what a forward-proxy recording talked to
SELECT
    e.session,            -- session name
    e.scheme,             -- 'http' or 'https'; NULL when unknown
    e.authority,          -- host[:port]; NULL when unknown
    count(*) AS exchanges,           -- number of exchanges with that host
    min(e.started_at) AS first_started_at,  -- when its first request arrived
    max(e.started_at) AS last_started_at    -- when its last request arrived
FROM exchanges AS e
GROUP BY e.session, e.scheme, e.authority;
