/* replay — answers requests from recorded exchanges (replay mode) and from stubs (mock
 * mode, and runtime stubs on any server).
 *
 * Recorded exchanges are looked up per request in the match index in the database
 * (store.h, schema/007_match_index.sql) when the request's rules are the default ones; rules
 * that change keys (--match, --ignore-*, --match-header, a route's "match", replay-time
 * redaction of the query or body) have the keys of the exchanges they apply to read once at
 * start (replay_new). Start-up and memory do not otherwise depend on the recording's size.
 * A proxied request (req->authority set) is looked up among its own origin's exchanges
 * ("scheme://authority") and keeps its own place in their sequence; a request in origin
 * form among every host's, in replay order. With --on-miss record, what is recorded answers
 * the same request later in the run (found again once the writer has committed it).
 *
 * Owns: the sequence positions of the keys requested (kept while they matter; keys of a
 * single repeated answer are cached up to a bound), a bounded cache of the answers served,
 * runtime stubs (in memory, source = 'stub'), the journal of requests received, and the
 * miss count.
 *
 * Threads: replay_handle() and the stub/journal functions may be called from any thread;
 * stubs are guarded by a read-write lock, sequence positions and the cache by a mutex
 * (database reads happen outside it, on the thread's own connection), journal and
 * counters by another. A cached answer lent to a response is released by the server when
 * that response is done (server_response.release).
 */
#ifndef APISIM_REPLAY_H
#define APISIM_REPLAY_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "config.h"
#include "exchange.h"
#include "server.h"
#include "store.h"

struct replay;

enum sequence_end { SEQUENCE_REPEAT_LAST, SEQUENCE_CYCLE, SEQUENCE_ERROR };
enum on_miss { ON_MISS_ERROR, ON_MISS_FORWARD, ON_MISS_RECORD };

struct proxy;

struct replay_options {
    struct store *store;         /* the recording (NULL for mock: nothing recorded) */
    const char *session;         /* NULL: every session */
    const struct config *config; /* merged flags + --config; match, latency, routes */
    enum sequence_end sequence_end;
    uint64_t seed;
    const char *mode; /* "replay" or "mock", reported by health */
    enum on_miss on_miss;
    struct proxy *proxy; /* for ON_MISS_FORWARD / ON_MISS_RECORD */
    size_t journal_max;  /* entries kept (oldest dropped first); 0 for the default 10000 */
    int record_stream;   /* record mode: stubs and quota first, everything else streamed
                            through proxy_handle() and recorded */

    /* The server's --client-timeout: a stub's dribble must fit in it. */
    int64_t client_timeout_us;
};

/* Make a replay of opt->store (NULL: none, as mock): brings its match index up to date
 * (store_index_sync(): built once in place when missing or stale), and reads the
 * recording's keys only for rules that change them. Returns 0 and *out, or -1 with err. */
int replay_new(struct replay **out, const struct replay_options *opt, char *err);
void replay_free(struct replay *rp);

/* The server handler for replay and mock mode (app is the struct replay). */
int replay_handle(void *app, struct server_request *req, struct server_response *resp);

/* Add a runtime stub (ownership of ex passes to replay; ex->source is set to "stub").
 * A later stub for the same method and path wins over earlier ones and over recordings.
 * When ex is one of a sequence, call with the same sequence group: answers are served in
 * order, then the last repeats. Returns the stub's id, or -1 with err. */
int64_t replay_add_stub(struct replay *rp, struct exchange **seq, size_t n, char *err);

/* Make every stub added so far permanent: reset keeps it (stubs from --stubs FILE). */
void replay_keep_stubs(struct replay *rp);

/* Clear runtime stubs, the journal and sequence counters (stubs loaded with --stubs and
 * the recording stay). */
void replay_reset(struct replay *rp);

/* The journal as a JSON array (oldest first), filtered by method and path when not NULL.
 * Caller frees with cJSON_Delete. */
cJSON *replay_journal(struct replay *rp, const char *method, const char *path);
size_t replay_journal_count(struct replay *rp, const char *method, const char *path);

/* The --client-timeout the replay was made with (0 when not given). */
int64_t replay_client_timeout_us(const struct replay *rp);

/* Number of misses since start. */
uint64_t replay_misses(struct replay *rp);

/* Counts for the health endpoint. */
struct replay_stats {
    size_t exchanges; /* recorded exchanges (of --session), counted when first asked */
    size_t stubs;     /* stubs (from --stubs and at run time) */
    size_t requests;  /* requests journaled since start or reset */
    uint64_t misses;
    uint64_t faults; /* requests answered with a fault (stub or --faults) since start */
};
void replay_stats(struct replay *rp, struct replay_stats *out);
const char *replay_mode(const struct replay *rp);

/* The quota fixture (quota.h) this server answers GET /api/oauth/usage with; NULL turns it
 * off. The replay takes ownership of q and frees the previous one. */
struct quota_state;
void replay_set_quota(struct replay *rp, struct quota_state *q);
#endif
