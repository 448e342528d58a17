-- apisim recording schema, version 4: the match index replay looks requests up in, so that
-- replay's start-up and memory do not grow with the number of exchanges.
--
-- Each exchange has one entry: the identity of its match key under the default rules
-- (method, path, query sorted, body canonicalised; query parameters and JSON values the
-- exchange holds as "[REDACTED]" left out). apisim writes it with the exchange (record,
-- import, --on-miss record) and builds the missing ones once, in place, when it replays a
-- file that lacks them (an older file, rows added by hand). Replay under other rules
-- (--match, --ignore-*, --match-header, per-route "match") reads the recording instead.
--
-- To add a part to the lookup (e.g. the scheme and authority of a many-host recording):
-- either fold it into the key text and bump MATCH_INDEX_VERSION (match.h; every file is
-- re-indexed once), or add a column here and to match_index_by_key after key_check, and to
-- the lookup in store.c (store_index_lookup).
--
-- The entry counts in match_index_state are kept by the triggers below, so replay can tell
-- at start-up, without reading the index, whether every exchange has a current entry.

CREATE TABLE match_index (
    exchange_id INTEGER PRIMARY KEY REFERENCES exchanges(id) ON DELETE CASCADE,  -- the exchange
    session     TEXT NOT NULL,     -- exchanges.session, copied: a lookup reads this index alone
    seq         INTEGER NOT NULL,  -- exchanges.seq, copied: a key's exchanges answer in (session, seq, id) order
    key_hash    INTEGER NOT NULL,  -- 64-bit FNV-1a of the match key text (as a signed integer)
    key_check   INTEGER NOT NULL,  -- a second, independent 64-bit hash of the key text
    key_version INTEGER NOT NULL   -- how the key was computed (match.h MATCH_INDEX_VERSION); another version is stale
);

-- One range scan answers a request: its key's exchanges, in replay order.
CREATE INDEX match_index_by_key ON match_index (key_hash, key_check, session, seq, exchange_id);

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
AFTER UPDATE OF id, session, seq, method, path, query, request_headers, request_body ON exchanges
-- a changed request has a new key: its entry is dropped, and rebuilt at the next replay
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
