/* store — the SQLite file that holds recordings.
 *
 * Owns: opening (creating and migrating with the embedded schema/NNN_*.sql files, tracked by
 * PRAGMA user_version; a database newer than this binary is refused), loading a FILE.sql
 * text dump into a shared in-memory database, one writer thread that batches inserts into
 * transactions, and per-thread read connections.
 *
 * Threads: store_submit() may be called from any thread. Read connections come from
 * store_reader(), one per calling thread. The struct store itself is shared read-only after
 * store_open().
 *
 * Failures: every function that can fail writes a sentence into err naming the file.
 */
#ifndef APISIM_STORE_H
#define APISIM_STORE_H

#include <sqlite3.h>
#include <stdint.h>

#include "exchange.h"
#include "util.h"

struct store;

enum {
    STORE_CREATE = 1 << 0,   /* create the file if missing (record) */
    STORE_READONLY = 1 << 1, /* never write (ls, export, replay without --on-miss record) */
};

/* Open path (a SQLite file, or a text dump ending in ".sql", loaded into memory) and bring
 * its schema up to date. Returns 0 and *out, or -1 with err. Free with store_close(). */
int store_open(struct store **out, const char *path, int flags, char *err);

/* Stop the writer (committing everything queued) and close all connections. NULL is fine. */
void store_close(struct store *st);

/* The connection opened by store_open(), for single-threaded commands (ls, export, import,
 * claude-record). Owned by the store. */
sqlite3 *store_db(struct store *st);

/* A read connection for the calling thread, opened on first use and closed by
 * store_close(). Returns NULL with err when it cannot be opened. */
sqlite3 *store_reader(struct store *st, char *err);

/* Read exchange id's response body on the calling thread's reader (a statement prepared
 * once per thread). Returns 0 with *out (malloc'd, caller frees) and *len, or -1 with err. */
int store_read_body(struct store *st, int64_t id, unsigned char **out, size_t *len, char *err);

/* The path given to store_open(). */
const char *store_path(const struct store *st);

/* Ensure a sessions row exists for name (upstream may be NULL). Returns 0 or -1 with err. */
int store_ensure_session(struct store *st, const char *name, const char *upstream, char *err);

/* The largest seq recorded for session, 0 when none. Returns 0 or -1 with err. */
int store_max_seq(struct store *st, const char *session, int64_t *out, char *err);

/* Insert one exchange (and its chunks) on db in the caller's transaction, setting ex->id
 * (an ex->id above 0 is kept as the row's id).
 * Returns 0 or -1 with err. */
int store_insert_exchange(sqlite3 *db, struct exchange *ex, char *err);

/* Read exchange id with everything it holds. Returns 0 and *out (free with
 * exchange_free()), 1 when there is no such exchange, -1 with err. */
int store_get_exchange(sqlite3 *db, int64_t id, struct exchange **out, char *err);

/* Insert one exchange like store_insert_exchange(), on store_db() in the caller's
 * transaction, with statements prepared once for the store (bulk imports). */
int store_put_exchange(struct store *st, struct exchange *ex, char *err);

/* ---- the match index (schema/007_match_index.sql) ----
 * Every insert above writes the exchange's entry: the identity of its key under the default
 * rules (match.h, match_index_ident), and the names it holds as REDACTED. */

/* Check at a constant cost (match_index_state, kept by triggers) that every exchange has an
 * entry of this apisim's key version, and build the missing ones in place when not (once:
 * an older file, rows added by hand or edited, another key version), on store_db().
 * *current is 1 when the index can be used, 0 when it is stale and the file is read-only
 * (logged: the caller must read the recording instead). Returns 0, or -1 with err. */
int store_index_sync(struct store *st, int *current, char *err);

/* The origin an exchange is indexed under, and a proxied request looks up:
 * "scheme://authority" (scheme "http" when NULL). Returns a malloc'd string (caller frees),
 * or NULL when authority is NULL (unknown: the entry has no origin) or out of memory. */
char *store_origin(const char *scheme, const char *authority);

/* The same origin written into buf when it fits in cap bytes with its NUL (authority not
 * NULL): returns its length; a result of cap or more means it did not fit (buf untouched). */
size_t store_origin_in(char *buf, size_t cap, const char *scheme, const char *authority);

/* The ids of the exchanges whose key has identity key, of session (NULL: every session) and
 * of origin (store_origin(); NULL: every origin, and exchanges of none), in replay order
 * (session, seq, id), on the calling thread's reader with a statement prepared once.
 * Returns 0 with *ids (malloc'd, caller frees; NULL when *n is 0) and *n, or -1 with err. */
int store_index_lookup(struct store *st, const char *session, const struct match_ident *key,
                       const char *origin, int64_t **ids, size_t *n, char *err);

/* What replay serves of exchange id, on the calling thread's reader: status, response
 * headers and encoding, timings, error, complete, chunks (when with_chunks), and
 * response_body only when response_size is at most body_max (else NULL with
 * response_body_len the size). Returns 0 with *out (free with exchange_free()), 1 when there
 * is no such exchange, -1 with err. */
int store_get_response(struct store *st, int64_t id, size_t body_max, int with_chunks,
                       struct exchange **out, char *err);

/* The first exchange with key's identity, of session (NULL: all) and origin (NULL: any, as
 * store_index_lookup), in replay order, with
 * what replay serves of it (as store_get_response), in one statement: 0 with *id (0 when
 * there is none), *out (free with exchange_free(); NULL when none) and *more (1 when
 * another exchange has the key too: then store_index_lookup() lists them all), or -1 with
 * err. On the calling thread's reader. */
int store_index_first(struct store *st, const char *session, const struct match_ident *key,
                      const char *origin, size_t body_max, int with_chunks, int64_t *id, int *more,
                      struct exchange **out, char *err);

/* Hold a read transaction on the calling thread's reader, so the reads that follow see one
 * snapshot and take the database's locks (fcntl on the -shm file) once. It is kept across
 * calls for up to 50 ms, and never past a commit of this store's writer (so what this
 * process wrote is seen): store_read_end() ends it only when older than that; a later
 * store_read_begin() renews it. Rows other processes commit are seen within 50 ms of the
 * thread's activity. The price: a thread that goes idle keeps its snapshot until its next
 * read or store_close(), and while it does, a checkpoint cannot reset the WAL past it (a
 * recorder writing the same file meanwhile grows its WAL by what it writes until then).
 * Not on a text dump (nothing to save there). store_read_begin returns 0 or -1 with err. */
int store_read_begin(struct store *st, char *err);
void store_read_end(struct store *st);

/* Add to out every name the recording holds as REDACTED (match_redacted). Returns 0, or -1
 * with err. Single-threaded: uses store_db(). */
int store_redacted_names(struct store *st, struct redact_rules *out, char *err);

/* Call fn(ctx, id, req, origin) for the request of every exchange of session (NULL: every
 * session) in replay order (session, seq, id), with the origin it was for (as
 * store_origin(); NULL when unknown); req and origin are valid during the call only. fn
 * returning -1 stops the scan, with err as fn left it. Returns 0, or -1 with err.
 * Single-threaded: uses store_db(). */
int store_scan_requests(struct store *st, const char *session,
                        int (*fn)(void *ctx, int64_t id, const struct match_request *req,
                                  const char *origin),
                        void *ctx, char *err);

/* Number of exchanges of session (NULL: all, at a constant cost), on the calling thread's
 * reader. Returns 0 or -1 with err. */
int store_count_exchanges(struct store *st, const char *session, int64_t *out, char *err);

/* Start the writer thread. Returns 0 or -1 with err. */
int store_writer_start(struct store *st, char *err);

/* Queue ex for the writer, which takes ownership. When wait is 1, block until the
 * transaction holding it has committed (or failed). Returns 0 when committed (or queued,
 * for wait 0), 1 when another process holds the database's write lock and the exchange is
 * held in memory until it is released (then stored; lost only if the process dies first),
 * -1 when the insert failed (logged by the writer). Sets ex->id before returning 0 when
 * wait is 1; the caller must not touch ex after a wait-0 submit. */
int store_submit(struct store *st, struct exchange *ex, int wait, int64_t *id_out);

/* Queue ex for the writer, which takes ownership, without blocking: notify(cls, rc, id) is
 * called once, on the writer thread and outside the store's locks, when the transaction
 * holding it has committed (rc 0, id the row's), when the database is locked by another
 * process and the exchange is held in memory (rc 1, id 0), or when the insert failed (rc
 * -1). Returns 0, or -1 when out of memory (ex freed, notify never called). The writer
 * must be running. */
int store_submit_notify(struct store *st, struct exchange *ex,
                        void (*notify)(void *cls, int rc, int64_t id), void *cls);

/* Stop the writer once everything queued or held has been stored (or has failed: a lock
 * still held gets a last wait of 5 s). store_close() does it too; call it first to read
 * store_write_failures() afterwards. NULL, or no writer, is fine. */
void store_writer_stop(struct store *st);

/* Number of exchanges the writer failed to store since start. */
uint64_t store_write_failures(struct store *st);

/* Number of exchanges held in memory now, waiting for another process to release the
 * database (0 while the writer is trying them again). */
size_t store_held(struct store *st);

#endif
