-- apisim recording schema: the match index replay looks requests up in, so that replay's
-- start-up and memory do not grow with the number of exchanges.
--
-- It comes after 005_hosts and 006_claude_stderr: apisim numbers a file's schema by the count
-- of these files it has applied, so a new one goes last (files made before it, at version 5,
-- get just this one).
--
-- Each exchange has one entry: the identity of its match key under the default rules
-- (method, path, query sorted, body canonicalised; query parameters and JSON values the
-- exchange holds as "[REDACTED]" left out) and the origin it was for (its scheme and
-- authority, 005_hosts). A proxied request looks up its key among the entries of its own
-- origin only; a request in origin form (apisim as a reverse proxy) among every origin's, as
-- in a one-host recording. apisim writes it with the exchange (record, import, --on-miss
-- record) and builds the missing ones once, in place, when it replays a file that lacks
-- them (an older file, rows added by hand). Replay under other rules (--match, --ignore-*,
-- --match-header, per-route "match") reads the recording instead.
--
-- To add a part to the lookup: either fold it into the key text and bump MATCH_INDEX_VERSION
-- (match.h; every file is re-indexed once), or add a column here and to match_index_by_key,
-- to the trigger that drops an entry when what it is computed from changes, and to the
-- lookups in store.c (store_index_lookup, store_index_first), as origin is.
--
-- The entry counts in match_index_state are kept by the triggers below, so replay can tell
-- at start-up, without reading the index, whether every exchange has a current entry.
-- apisim's writer thread (record, --on-miss record, stubs recorded) turns triggers off on its
-- own connection and adds what they would count for each batch in the batch's transaction;
-- every other connection, sqlite3's included, runs them.

CREATE TABLE match_index (
    exchange_id INTEGER PRIMARY KEY REFERENCES exchanges(id) ON DELETE CASCADE,  -- the exchange
    session     TEXT NOT NULL,     -- exchanges.session, copied: a lookup reads this index alone
    seq         INTEGER NOT NULL,  -- exchanges.seq, copied: a key's exchanges answer in (session, seq, id) order
    key_hash    INTEGER NOT NULL,  -- 64-bit FNV-1a of the match key text (as a signed integer)
    key_check   INTEGER NOT NULL,  -- a second, independent 64-bit hash of the key text
    origin      TEXT,              -- 'scheme://authority' of the exchange (scheme 'http' when unknown); NULL when its authority is unknown
    key_version INTEGER NOT NULL   -- how the key was computed (match.h MATCH_INDEX_VERSION); another version is stale
);

-- One range scan answers a request: its key's exchanges, in replay order, with their origin
-- beside them (a proxied request skips other origins' entries of its key in the index itself:
-- few, as a key names a method, path, query and body; a request in origin form needs no sort).
CREATE INDEX match_index_by_key
    ON match_index (key_hash, key_check, session, seq, exchange_id, origin);

CREATE TABLE match_redacted (
    kind TEXT NOT NULL CHECK (kind IN ('header', 'query', 'json')),  -- where the value was
    name TEXT NOT NULL,  -- header name, query parameter name, or JSON pointer of a "[REDACTED]" value
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;  -- left out of request keys at replay, so a request with the real secret matches

CREATE TABLE match_index_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),  -- a single row
    exchanges   INTEGER NOT NULL,  -- rows in exchanges (kept by the triggers below)
    indexed     INTEGER NOT NULL,  -- rows in match_index of key_version (kept by the triggers below)
    key_version INTEGER NOT NULL   -- the version the index is built with; 0: not built yet
);
INSERT INTO match_index_state (id, exchanges, indexed, key_version)
    VALUES (1, (SELECT count(*) FROM exchanges), 0, 0);

CREATE TRIGGER match_index_exchange_added AFTER INSERT ON exchanges
-- every exchange counts, however it was added: one without an entry makes the index stale
BEGIN
    UPDATE match_index_state SET exchanges = exchanges + 1;
END;

CREATE TRIGGER match_index_exchange_removed AFTER DELETE ON exchanges
-- its entry goes with it
BEGIN
    UPDATE match_index_state SET exchanges = exchanges - 1;
    DELETE FROM match_index WHERE exchange_id = OLD.id;
END;

CREATE TRIGGER match_index_exchange_changed
AFTER UPDATE OF id, session, seq, method, path, query, request_headers, request_body, scheme,
    authority ON exchanges
-- a changed request has a new key (or origin): its entry is dropped, and rebuilt at the next replay
BEGIN
    DELETE FROM match_index WHERE exchange_id = OLD.id;
END;

CREATE TRIGGER match_index_entry_added AFTER INSERT ON match_index
WHEN NEW.key_version = (SELECT key_version FROM match_index_state)
BEGIN
    UPDATE match_index_state SET indexed = indexed + 1;
END;

CREATE TRIGGER match_index_entry_removed AFTER DELETE ON match_index
WHEN OLD.key_version = (SELECT key_version FROM match_index_state)
BEGIN
    UPDATE match_index_state SET indexed = indexed - 1;
END;

CREATE TRIGGER match_index_entry_changed AFTER UPDATE ON match_index
-- an entry edited by hand counts only while it is of the index's version
BEGIN
    UPDATE match_index_state
        SET indexed = indexed - (OLD.key_version = key_version) + (NEW.key_version = key_version);
END;
