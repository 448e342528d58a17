#include "replay.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proxy.h"
#include "quota.h"
#include "redact.h"
#include "template.h"

/* Response bodies are kept in memory up to this total; beyond it they are read from the
 * database when served, so a 1 GiB recording replays in little memory. */
#define REPLAY_BODY_BUDGET (32u * 1024 * 1024)
/* Only bodies up to this size are kept: small answers gain most from memory, and a large
 * body costs more to send than to read. */
#define REPLAY_KEEP_BODY_MAX (64 * 1024)
#define REPLAY_JOURNAL_DEFAULT 10000
#define REPLAY_LEARN_MAX 256 /* redacted names and pointers learnt from a recording */
#define REPLAY_NEAREST 3
#define REPLAY_NEAREST_SCAN 200
#define REPLAY_MAX_DIFFS 8

/* One answer: a recorded exchange or a stub, as replay serves it. */
struct entry {
    int64_t id;
    int status;
    struct headers headers; /* what is sent: recorded minus hop-by-hop and stale framing */
    unsigned char *body;    /* NULL with lazy set: read from the database when served */
    size_t body_len;
    int lazy;
    int has_template; /* stub body with {{...}} placeholders */
    struct chunk *chunks;
    size_t nchunks;
    int64_t ttfb_us;
    int64_t delay_ms;
    int cut_short;     /* the upstream failed mid-body: cut the connection after the body */
    uint64_t cut_size; /* the Content-Length it had promised (0: unknown) */
    int64_t reg;       /* stubs: the registration it came with (a sequence shares one) */
    int fault;         /* stubs: enum fault_kind served instead of (or within) the answer */
    uint64_t fault_after_bytes;
    unsigned dribble_chunks;
    int64_t dribble_over_ms;
    /* Stubs keep their request side for miss reports. */
    char *method;
    char *path;
};

/* The exchanges that share one match key, in recorded order, and the replay's position. */
struct group {
    char *key;
    uint64_t hash;
    struct entry **v;
    size_t n, cap;
    size_t next; /* index of the next answer */
    struct group *chain;
};

struct table {
    struct group **buckets;
    size_t nbuckets;
    size_t count;
};

/* A request as the journal keeps it: one allocation holding all its strings. */
struct journal_entry {
    int64_t seq;
    int64_t received_us;
    int64_t matched; /* exchange id, 0 for none */
    /* The fault served (a static name or a config rule's), NULL for none. */
    const char *fault;
    const char *method, *path, *query;
    size_t nheaders;
    const char **hnames, **hvalues;
    const unsigned char *body;
    size_t body_len;
};

struct replay {
    struct replay_options opt;
    struct match_rules default_rules;
    /* The config's redaction rules plus those learnt from the recording: left out of keys. */
    struct redact_rules redact;

    pthread_rwlock_t lock;  /* guards the tables and entries lists */
    struct table recorded;  /* key -> recorded exchanges */
    struct table stubs;     /* "METHOD path" -> stubs, latest group wins */
    struct entry **entries; /* every entry ever made, freed at the end */
    size_t nentries, capentries;
    size_t nrecorded;
    size_t persistent_stubs; /* stubs in entries[] before this index survive reset */
    int64_t next_stub_id;
    int64_t registrations;

    pthread_mutex_t mu; /* sequence positions, rng, journal, quota */
    struct latency_rng rng;
    struct journal_entry **journal; /* ring */
    size_t jcap, jstart, jlen;
    struct quota_state *quota;
    atomic_int quota_active; /* read without the mutex on every request */
    atomic_uint_least64_t misses;
    /* Requests in the journal's arrival order: the n-th gets journal id n and draws its
     * replay fault with n - fault_base (so a reset starts the draws over, as it reseeds
     * the latency models). */
    atomic_uint_least64_t arrivals;
    atomic_uint_least64_t fault_base;
    atomic_uint_least64_t faults; /* faulted answers since start */
    int any_faults;               /* the config has a replay fault anywhere */
};

/* ---- tables ---------------------------------------------------------------------------- */

static struct group *table_find(const struct table *t, const char *key, uint64_t hash)
{
    if (!t->nbuckets)
        return NULL;
    for (struct group *g = t->buckets[hash & (t->nbuckets - 1)]; g; g = g->chain)
        if (g->hash == hash && strcmp(g->key, key) == 0)
            return g;
    return NULL;
}

static int table_grow(struct table *t)
{
    size_t n = t->nbuckets ? t->nbuckets * 2 : 256;
    struct group **b = calloc(n, sizeof *b);
    if (!b)
        return -1;
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct group *g = t->buckets[i];
        while (g) {
            struct group *next = g->chain;
            g->chain = b[g->hash & (n - 1)];
            b[g->hash & (n - 1)] = g;
            g = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
    return 0;
}

/* The group for key, created when missing. Takes ownership of key. */
static struct group *table_get(struct table *t, char *key)
{
    uint64_t hash = match_hash(key);
    struct group *g = table_find(t, key, hash);
    if (g) {
        free(key);
        return g;
    }
    if (t->count + 1 > t->nbuckets && table_grow(t) < 0)
        goto oom;
    if (!(g = calloc(1, sizeof *g)))
        goto oom;
    g->key = key;
    g->hash = hash;
    g->chain = t->buckets[hash & (t->nbuckets - 1)];
    t->buckets[hash & (t->nbuckets - 1)] = g;
    t->count++;
    return g;
oom:
    free(key);
    return NULL;
}

static int group_push(struct group *g, struct entry *e)
{
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 2;
        struct entry **v = realloc(g->v, cap * sizeof *v);
        if (!v)
            return -1;
        g->v = v;
        g->cap = cap;
    }
    g->v[g->n++] = e;
    return 0;
}

static void table_free(struct table *t)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct group *g = t->buckets[i];
        while (g) {
            struct group *next = g->chain;
            free(g->key);
            free(g->v);
            free(g);
            g = next;
        }
    }
    free(t->buckets);
    memset(t, 0, sizeof *t);
}

/* ---- entries --------------------------------------------------------------------------- */

static void entry_free(struct entry *e)
{
    if (!e)
        return;
    headers_free(&e->headers);
    free(e->body);
    free(e->chunks);
    free(e->method);
    free(e->path);
    free(e);
}

static int remember_entry(struct replay *rp, struct entry *e)
{
    if (rp->nentries == rp->capentries) {
        size_t cap = rp->capentries ? rp->capentries * 2 : 256;
        struct entry **v = realloc(rp->entries, cap * sizeof *v);
        if (!v)
            return -1;
        rp->entries = v;
        rp->capentries = cap;
    }
    rp->entries[rp->nentries++] = e;
    return 0;
}

/* Make the served form of an exchange. Takes the body and chunks from ex. */
static struct entry *entry_from_exchange(struct exchange *ex, int keep_body)
{
    struct entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->id = ex->id;
    e->status = ex->status;
    e->ttfb_us = ex->ttfb_us;
    e->delay_ms = ex->delay_ms;
    e->fault = ex->fault;
    e->fault_after_bytes = ex->fault_after_bytes;
    e->dribble_chunks = ex->dribble_chunks;
    e->dribble_over_ms = ex->dribble_over_ms;
    e->cut_short = !ex->complete && ex->error != NULL;
    for (size_t i = 0; i < ex->response_headers.n; i++) {
        const struct header *h = &ex->response_headers.v[i];
        if (e->cut_short && ascii_casecmp(h->name, "content-length") == 0 && !ex->response_encoding)
            e->cut_size = strtoull(h->value, NULL, 10);
        /* The body is served decoded and framed by this server. */
        if (header_is_hop_by_hop(h->name) || ascii_casecmp(h->name, "content-length") == 0 ||
            (ex->response_encoding && ascii_casecmp(h->name, "content-encoding") == 0))
            continue;
        if (headers_add(&e->headers, h->name, h->value) < 0)
            goto oom;
    }
    if (keep_body) {
        e->body = ex->response_body;
        e->body_len = ex->response_body_len;
        ex->response_body = NULL;
    } else {
        e->lazy = 1;
        e->body_len = ex->response_body_len;
    }
    e->chunks = ex->chunks;
    e->nchunks = ex->nchunks;
    ex->chunks = NULL;
    ex->nchunks = 0;
    return e;
oom:
    entry_free(e);
    return NULL;
}

/* The match rules that apply to a request with this method and path. */
static const struct match_rules *rules_for(const struct replay *rp, const char *method,
                                           const char *path)
{
    const struct config *cfg = rp->opt.config;
    const struct route_rule *r = cfg ? config_route_for(cfg, method, path) : NULL;
    if (r && r->has_match)
        return &r->match;
    return &rp->default_rules;
}

static const struct latency_spec *latency_for(const struct replay *rp, const char *method,
                                              const char *path)
{
    static const struct latency_spec none = {.kind = LATENCY_NONE, .factor = 1.0};
    const struct config *cfg = rp->opt.config;
    if (!cfg)
        return &none;
    const struct route_rule *r = config_route_for(cfg, method, path);
    if (r && r->has_latency)
        return &r->latency;
    return cfg->has_latency ? &cfg->latency : &none;
}

static char *key_of(const struct replay *rp, const struct match_request *mr)
{
    return match_key(rules_for(rp, mr->method, mr->path), &rp->redact, mr);
}

static struct match_request request_view(const struct exchange *ex)
{
    return (struct match_request){.method = ex->method,
                                  .path = ex->path,
                                  .query = ex->query,
                                  .headers = &ex->request_headers,
                                  .body = ex->request_body,
                                  .body_len = ex->request_body_len};
}

/* The key a proxied request is looked up by: its scheme and authority before its match
 * key, so it replays only from exchanges of its own host (a request in origin form, sent to
 * apisim as a reverse proxy, uses the bare key and matches any host). Returns a malloc'd
 * string, or NULL when out of memory. */
static char *host_key(const char *scheme, const char *authority, const char *key)
{
    struct buf b = {0};
    if (buf_printf(&b, "%s://%s\n%s", scheme ? scheme : "http", authority, key) < 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b, NULL);
}

/* Index one recorded exchange (takes what it needs from ex; the caller frees ex): under its
 * key and, when its host is known, under its host's key too. */
static int index_exchange(struct replay *rp, struct exchange *ex, int keep_body, char *err)
{
    struct match_request mr = request_view(ex);
    char *key = key_of(rp, &mr);
    char *hkey = key && ex->authority ? host_key(ex->scheme, ex->authority, key) : NULL;
    struct entry *e = key ? entry_from_exchange(ex, keep_body) : NULL;
    struct group *g = e ? table_get(&rp->recorded, key) : NULL;
    struct group *hg = g && hkey ? table_get(&rp->recorded, hkey) : NULL;
    if (!key || !e || !g || (ex->authority && !hg) || group_push(g, e) < 0 ||
        (hg && group_push(hg, e) < 0) || remember_entry(rp, e) < 0) {
        if (!g)
            free(key);
        if (!hg)
            free(hkey);
        entry_free(e);
        snprintf(err, APISIM_ERR_LEN, "out of memory indexing exchange %lld", (long long)ex->id);
        return -1;
    }
    rp->nrecorded++;
    return 0;
}

struct load_state {
    struct replay *rp;
    size_t budget; /* bytes of bodies kept in memory so far */
    char *err;
};

/* store_scan()'s callback: index one exchange, keeping its body while the budget lasts. */
static int load_one(void *cls, struct exchange *ex)
{
    struct load_state *ls = cls;
    int keep = ex->response_body || ex->response_body_len == 0;
    if (ex->response_body && ls->budget + ex->response_body_len > REPLAY_BODY_BUDGET) {
        free(ex->response_body); /* over budget: read when served */
        ex->response_body = NULL;
        keep = 0;
    }
    if (ex->response_body)
        ls->budget += ex->response_body_len;
    int rc = index_exchange(ls->rp, ex, keep, ls->err);
    exchange_free(ex);
    return rc;
}

/* Index every exchange of the session in one pass; bodies up to REPLAY_KEEP_BODY_MAX are
 * kept in memory (within the budget), the rest read when served. */
static int load_recording(struct replay *rp, char *err)
{
    struct load_state ls = {.rp = rp, .err = err};
    return store_scan(rp->opt.store, rp->opt.session, REPLAY_KEEP_BODY_MAX, load_one, &ls, err);
}

/* ---- redaction learnt from the recording -------------------------------------------------- */

static int name_known(char **v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], name) == 0)
            return 1;
    return 0;
}

/* Add the pointer of every string "[REDACTED]" under item (path so far in ptr). */
static void learn_json(struct redact_rules *r, const cJSON *item, struct buf *ptr, int depth)
{
    if (depth > 32 || r->njson >= REPLAY_LEARN_MAX)
        return;
    if (cJSON_IsString(item) && strcmp(item->valuestring, REDACTED) == 0) {
        const char *p = ptr->p ? ptr->p : "";
        if (p[0] && !name_known(r->json, r->njson, p))
            redact_add_json(r, p);
        return;
    }
    if (!cJSON_IsArray(item) && !cJSON_IsObject(item))
        return;
    size_t len = ptr->len;
    int i = 0;
    for (const cJSON *c = item->child; c; c = c->next, i++) {
        ptr->len = len;
        if (ptr->p)
            ptr->p[len] = '\0';
        if (cJSON_IsArray(item)) {
            if (buf_printf(ptr, "/%d", i) < 0)
                return;
        } else {
            /* A member named "*" would read as every member: not learnt. */
            if (!c->string || strcmp(c->string, "*") == 0 || buf_puts(ptr, "/") < 0)
                continue;
            for (const char *k = c->string; *k; k++)
                if ((*k == '~'   ? buf_puts(ptr, "~0")
                     : *k == '/' ? buf_puts(ptr, "~1")
                                 : buf_append(ptr, k, 1)) < 0)
                    return;
        }
        learn_json(r, c, ptr, depth + 1);
    }
    ptr->len = len;
    if (ptr->p)
        ptr->p[len] = '\0';
}

/* A recording made with --redact-header/-query/-json holds "[REDACTED]" where the secrets
 * were. Those fields are left out of keys here too, so a replay started without the same
 * flags still matches a request that carries the real secret. */
static int learn_redactions(struct replay *rp, char *err)
{
    static const char sql[] =
        "SELECT query, request_headers, request_body FROM exchanges "
        "WHERE (?1 IS NULL OR session = ?1) AND (instr(query, '" REDACTED "') > 0 OR "
        "instr(request_headers, '\"" REDACTED "\"') > 0 OR "
        "instr(CAST(request_body AS TEXT), '\"" REDACTED "\"') > 0)";
    sqlite3 *db = store_db(rp->opt.store);
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, sql, sizeof sql - 1, &s, NULL) != SQLITE_OK) {
        snprintf(err, APISIM_ERR_LEN, "database %s: %s", store_path(rp->opt.store),
                 sqlite3_errmsg(db));
        return -1;
    }
    if (rp->opt.session)
        sqlite3_bind_text(s, 1, rp->opt.session, -1, SQLITE_STATIC);
    struct redact_rules *r = &rp->redact;
    while (sqlite3_step(s) == SQLITE_ROW) {
        /* Query: "name=[REDACTED]" pairs. */
        const char *q = (const char *)sqlite3_column_text(s, 0);
        while (q && *q && r->nquery < REPLAY_LEARN_MAX) {
            const char *amp = strchr(q, '&'), *end = amp ? amp : q + strlen(q);
            const char *eq = memchr(q, '=', (size_t)(end - q));
            if (eq && (size_t)(end - eq - 1) == strlen(REDACTED) &&
                memcmp(eq + 1, REDACTED, strlen(REDACTED)) == 0) {
                char *name = xstrndup(q, (size_t)(eq - q));
                if (name && !name_known(r->query, r->nquery, name))
                    redact_add_query(r, name);
                free(name);
            }
            q = amp ? amp + 1 : end;
        }
        /* Headers: [[name, "[REDACTED]"], ...]. */
        struct headers h = {0};
        const char *hj = (const char *)sqlite3_column_text(s, 1);
        if (hj && exchange_headers_from_json(hj, (size_t)sqlite3_column_bytes(s, 1), &h) == 0)
            for (size_t i = 0; i < h.n && r->nheaders < REPLAY_LEARN_MAX; i++)
                if (strcmp(h.v[i].value, REDACTED) == 0 && !redact_is_secret_header(r, h.v[i].name))
                    redact_add_header(r, h.v[i].name);
        headers_free(&h);
        /* JSON body: the pointer of every "[REDACTED]" value. */
        const char *b = (const char *)sqlite3_column_blob(s, 2);
        int blen = sqlite3_column_bytes(s, 2);
        cJSON *tree = b && blen > 0 ? cJSON_ParseWithLength(b, (size_t)blen) : NULL;
        if (tree) {
            struct buf ptr = {0};
            learn_json(r, tree, &ptr, 0);
            buf_free(&ptr);
            cJSON_Delete(tree);
        }
    }
    sqlite3_finalize(s);
    if (r->nquery || r->njson)
        log_msg(LOG_DEBUG,
                "redacted in the recording, left out of match keys: %zu query "
                "parameter(s), %zu JSON pointer(s)",
                r->nquery, r->njson);
    return 0;
}

int replay_new(struct replay **out, const struct replay_options *opt, char *err)
{
    struct replay *rp = calloc(1, sizeof *rp);
    if (!rp) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
    rp->opt = *opt;
    pthread_rwlock_init(&rp->lock, NULL);
    pthread_mutex_init(&rp->mu, NULL);
    latency_seed(&rp->rng, opt->seed);
    rp->jcap = opt->journal_max ? opt->journal_max : REPLAY_JOURNAL_DEFAULT;
    rp->journal = calloc(rp->jcap, sizeof *rp->journal);
    rp->default_rules.fields = MATCH_ALL;
    if (opt->config && opt->config->has_match &&
        match_rules_copy(&rp->default_rules, &opt->config->match) < 0)
        goto oom;
    if (!rp->journal)
        goto oom;
    if (opt->config) {
        const struct redact_rules *c = &opt->config->redact;
        for (size_t i = 0; i < c->nheaders; i++)
            if (redact_add_header(&rp->redact, c->headers[i]) < 0)
                goto oom;
        for (size_t i = 0; i < c->nquery; i++)
            if (redact_add_query(&rp->redact, c->query[i]) < 0)
                goto oom;
        for (size_t i = 0; i < c->njson; i++)
            if (redact_add_json(&rp->redact, c->json[i]) < 0)
                goto oom;
    }
    if (opt->config) {
        rp->any_faults = opt->config->faults.n > 0;
        for (size_t i = 0; i < opt->config->nroutes; i++)
            rp->any_faults |= opt->config->routes[i].faults.n > 0;
    }
    /* Stub ids stay clear of recorded ones (and of those --on-miss record adds). */
    rp->next_stub_id = opt->store ? 1000000000 : 1;
    if (opt->store && (learn_redactions(rp, err) < 0 || load_recording(rp, err) < 0)) {
        replay_free(rp);
        return -1;
    }
    *out = rp;
    return 0;
oom:
    snprintf(err, APISIM_ERR_LEN, "out of memory");
    replay_free(rp);
    return -1;
}

static void journal_clear(struct replay *rp)
{
    for (size_t i = 0; i < rp->jlen; i++)
        free(rp->journal[(rp->jstart + i) % rp->jcap]);
    rp->jstart = rp->jlen = 0;
}

void replay_free(struct replay *rp)
{
    if (!rp)
        return;
    table_free(&rp->recorded);
    table_free(&rp->stubs);
    for (size_t i = 0; i < rp->nentries; i++)
        entry_free(rp->entries[i]);
    free(rp->entries);
    if (rp->journal)
        journal_clear(rp);
    free(rp->journal);
    quota_free(rp->quota);
    match_rules_free(&rp->default_rules);
    redact_rules_free(&rp->redact);
    pthread_rwlock_destroy(&rp->lock);
    pthread_mutex_destroy(&rp->mu);
    free(rp);
}

/* ---- stubs ----------------------------------------------------------------------------- */

static char *stub_key(const char *method, const char *path)
{
    struct buf b = {0};
    if (buf_printf(&b, "%s %s", method, path) < 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b, NULL);
}

static int has_placeholder(const unsigned char *p, size_t n)
{
    for (size_t i = 0; p && i + 1 < n; i++)
        if (p[i] == '{' && p[i + 1] == '{')
            return 1;
    return 0;
}

int64_t replay_add_stub(struct replay *rp, struct exchange **seq, size_t n, char *err)
{
    int64_t first = -1;
    if (n == 0) {
        snprintf(err, APISIM_ERR_LEN, "a stub needs at least one response");
        return -1;
    }
    pthread_rwlock_wrlock(&rp->lock);
    /* A new registration replaces the group for its route: later stubs win. */
    char *key = stub_key(seq[0]->method, seq[0]->path);
    struct group *g = key ? table_get(&rp->stubs, key) : NULL;
    if (!g) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        goto out;
    }
    g->n = 0;
    g->next = 0;
    int64_t reg = ++rp->registrations;
    for (size_t i = 0; i < n; i++) {
        struct exchange *ex = seq[i];
        ex->id = rp->next_stub_id++;
        struct entry *e = entry_from_exchange(ex, 1);
        if (!e || !(e->method = strdup(ex->method)) || !(e->path = strdup(ex->path)) ||
            remember_entry(rp, e) < 0) {
            entry_free(e);
            snprintf(err, APISIM_ERR_LEN, "out of memory");
            goto out;
        }
        e->has_template = has_placeholder(e->body, e->body_len);
        e->reg = reg;
        if (group_push(g, e) < 0) {
            snprintf(err, APISIM_ERR_LEN, "out of memory");
            goto out;
        }
        if (first < 0)
            first = e->id;
    }
out:
    pthread_rwlock_unlock(&rp->lock);
    for (size_t i = 0; i < n; i++) {
        exchange_free(seq[i]);
        seq[i] = NULL;
    }
    return first;
}

void replay_keep_stubs(struct replay *rp)
{
    pthread_rwlock_wrlock(&rp->lock);
    rp->persistent_stubs = rp->nentries;
    pthread_rwlock_unlock(&rp->lock);
}

void replay_reset(struct replay *rp)
{
    pthread_rwlock_wrlock(&rp->lock);
    /* Rebuild the stub table from the stubs that survive (those from --stubs). Entries
     * themselves stay allocated until the end: a response may still be sending them. */
    table_free(&rp->stubs);
    for (size_t i = 0; i < rp->persistent_stubs; i++) {
        struct entry *e = rp->entries[i];
        if (!e->method)
            continue;
        char *key = stub_key(e->method, e->path);
        struct group *g = key ? table_get(&rp->stubs, key) : NULL;
        if (g) {
            /* A surviving sequence is rebuilt in order; a replaced one starts over. */
            if (g->n && g->v[g->n - 1]->reg != e->reg)
                g->n = 0;
            group_push(g, e);
        }
    }
    for (size_t i = 0; i < rp->recorded.nbuckets; i++)
        for (struct group *g = rp->recorded.buckets[i]; g; g = g->chain)
            g->next = 0;
    pthread_mutex_lock(&rp->mu);
    journal_clear(rp);
    latency_seed(&rp->rng, rp->opt.seed);
    atomic_store(&rp->fault_base, atomic_load(&rp->arrivals));
    pthread_mutex_unlock(&rp->mu);
    pthread_rwlock_unlock(&rp->lock);
}

void replay_set_quota(struct replay *rp, struct quota_state *q)
{
    pthread_mutex_lock(&rp->mu);
    struct quota_state *old = rp->quota;
    rp->quota = q;
    atomic_store(&rp->quota_active, q != NULL);
    pthread_mutex_unlock(&rp->mu);
    quota_free(old);
}

/* ---- journal --------------------------------------------------------------------------- */

static void journal_add(struct replay *rp, const struct server_request *req, int64_t seq,
                        int64_t matched, const char *fault)
{
    size_t n = sizeof(struct journal_entry) + strlen(req->method) + strlen(req->path) +
               strlen(req->query) + 3 + req->body_len + 1 +
               req->headers.n * 2 * sizeof(const char *);
    for (size_t i = 0; i < req->headers.n; i++)
        n += strlen(req->headers.v[i].name) + strlen(req->headers.v[i].value) + 2;
    struct journal_entry *j = malloc(n);
    if (!j)
        return; /* the journal is best effort; the answer is not */
    char *p = (char *)(j + 1);
    j->hnames = (const char **)(void *)p;
    p += req->headers.n * sizeof(const char *);
    j->hvalues = (const char **)(void *)p;
    p += req->headers.n * sizeof(const char *);
#define JCOPY(dst, src)                                                                            \
    do {                                                                                           \
        size_t l_ = strlen(src) + 1;                                                               \
        memcpy(p, (src), l_);                                                                      \
        (dst) = p;                                                                                 \
        p += l_;                                                                                   \
    } while (0)
    JCOPY(j->method, req->method);
    JCOPY(j->path, req->path);
    JCOPY(j->query, req->query);
    for (size_t i = 0; i < req->headers.n; i++) {
        JCOPY(j->hnames[i], req->headers.v[i].name);
        JCOPY(j->hvalues[i], req->headers.v[i].value);
    }
#undef JCOPY
    if (req->body_len)
        memcpy(p, req->body, req->body_len);
    j->body = (const unsigned char *)p;
    j->body_len = req->body_len;
    j->nheaders = req->headers.n;
    j->received_us = req->received_us;
    j->matched = matched;
    j->fault = fault;
    j->seq = seq;
    pthread_mutex_lock(&rp->mu);
    if (rp->jlen == rp->jcap) {
        free(rp->journal[rp->jstart]);
        rp->jstart = (rp->jstart + 1) % rp->jcap;
        rp->jlen--;
    }
    rp->journal[(rp->jstart + rp->jlen) % rp->jcap] = j;
    rp->jlen++;
    pthread_mutex_unlock(&rp->mu);
}

static int journal_fits(const struct journal_entry *j, const char *method, const char *path)
{
    return (!method || !method[0] || ascii_casecmp(j->method, method) == 0) &&
           (!path || !path[0] || strcmp(j->path, path) == 0);
}

static cJSON *journal_json(const struct journal_entry *j)
{
    cJSON *o = cJSON_CreateObject(), *h = cJSON_CreateObject();
    char when[40];
    if (!o || !h)
        goto oom;
    cJSON_AddNumberToObject(o, "id", (double)j->seq);
    cJSON_AddStringToObject(o, "method", j->method);
    cJSON_AddStringToObject(o, "path", j->path);
    cJSON_AddStringToObject(o, "query", j->query);
    for (size_t i = 0; i < j->nheaders; i++) {
        char lower[256];
        size_t k = 0;
        for (; j->hnames[i][k] && k < sizeof lower - 1; k++) {
            char c = j->hnames[i][k];
            lower[k] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        lower[k] = '\0';
        cJSON *prev = cJSON_GetObjectItemCaseSensitive(h, lower);
        if (prev) {
            /* Repeated headers are joined, as HTTP allows. */
            struct buf b = {0};
            buf_printf(&b, "%s, %s", prev->valuestring, j->hvalues[i]);
            cJSON_ReplaceItemInObjectCaseSensitive(h, lower, cJSON_CreateString(b.p ? b.p : ""));
            buf_free(&b);
        } else {
            cJSON_AddStringToObject(h, lower, j->hvalues[i]);
        }
    }
    cJSON_AddItemToObject(o, "headers", h);
    h = NULL;
    if (is_utf8_text(j->body, j->body_len)) {
        char *t = xstrndup((const char *)j->body, j->body_len);
        cJSON_AddStringToObject(o, "body", t ? t : "");
        free(t);
    } else {
        char *b64 = base64_encode(j->body, j->body_len);
        cJSON_AddStringToObject(o, "body_base64", b64 ? b64 : "");
        free(b64);
    }
    if (j->matched)
        cJSON_AddNumberToObject(o, "matched", (double)j->matched);
    else
        cJSON_AddNullToObject(o, "matched");
    format_iso8601_ms(j->received_us, when, sizeof when);
    cJSON_AddStringToObject(o, "received_at", when);
    if (j->fault)
        cJSON_AddStringToObject(o, "fault", j->fault);
    return o;
oom:
    cJSON_Delete(o);
    cJSON_Delete(h);
    return NULL;
}

cJSON *replay_journal(struct replay *rp, const char *method, const char *path)
{
    cJSON *arr = cJSON_CreateArray();
    if (!arr)
        return NULL;
    pthread_mutex_lock(&rp->mu);
    for (size_t i = 0; i < rp->jlen; i++) {
        const struct journal_entry *j = rp->journal[(rp->jstart + i) % rp->jcap];
        if (!journal_fits(j, method, path))
            continue;
        cJSON *o = journal_json(j);
        if (o)
            cJSON_AddItemToArray(arr, o);
    }
    pthread_mutex_unlock(&rp->mu);
    return arr;
}

size_t replay_journal_count(struct replay *rp, const char *method, const char *path)
{
    size_t n = 0;
    pthread_mutex_lock(&rp->mu);
    for (size_t i = 0; i < rp->jlen; i++)
        n += journal_fits(rp->journal[(rp->jstart + i) % rp->jcap], method, path);
    pthread_mutex_unlock(&rp->mu);
    return n;
}

uint64_t replay_misses(struct replay *rp)
{
    return atomic_load(&rp->misses);
}

void replay_stats(struct replay *rp, struct replay_stats *out)
{
    pthread_rwlock_rdlock(&rp->lock);
    out->exchanges = rp->nrecorded;
    out->stubs = rp->stubs.count; /* one per route: a sequence is one stub */
    pthread_rwlock_unlock(&rp->lock);
    pthread_mutex_lock(&rp->mu);
    out->requests = rp->jlen;
    pthread_mutex_unlock(&rp->mu);
    out->misses = replay_misses(rp);
    out->faults = atomic_load(&rp->faults);
}

int64_t replay_client_timeout_us(const struct replay *rp)
{
    return rp->opt.client_timeout_us;
}

const char *replay_mode(const struct replay *rp)
{
    return rp->opt.mode ? rp->opt.mode : "replay";
}

/* ---- answering ------------------------------------------------------------------------- */

/* Pick the answer of a group for this request: the sequence position moves on. Returns
 * NULL when the sequence is exhausted under --sequence-end error. */
static struct entry *group_next(struct replay *rp, struct group *g)
{
    struct entry *e = NULL;
    pthread_mutex_lock(&rp->mu);
    size_t i = g->next;
    if (i < g->n) {
        e = g->v[i];
        g->next++;
    } else if (g->n > 0) {
        switch (rp->opt.sequence_end) {
        case SEQUENCE_REPEAT_LAST:
            e = g->v[g->n - 1];
            break;
        case SEQUENCE_CYCLE:
            e = g->v[0];
            g->next = 1;
            break;
        case SEQUENCE_ERROR:
            break;
        }
    }
    pthread_mutex_unlock(&rp->mu);
    return e;
}

static int serve_entry(struct replay *rp, struct entry *e, struct server_request *req,
                       struct server_response *resp)
{
    resp->status = e->status;
    resp->extra_headers = &e->headers;
    resp->cut_short = e->cut_short;
    resp->cut_size = e->cut_size;
    if (e->lazy) {
        char err[APISIM_ERR_LEN];
        if (store_read_body(rp->opt.store, e->id, &resp->body, &resp->body_len, err) != 0) {
            log_msg(LOG_ERROR, "replaying exchange %lld: %s", (long long)e->id, err);
            return -1;
        }
    } else if (e->has_template) {
        resp->body = template_expand(e->body, e->body_len, req, now_wall_us(), &resp->body_len);
        if (!resp->body)
            return -1;
    } else {
        resp->body = e->body;
        resp->body_len = e->body_len;
        resp->body_borrowed = 1;
    }
    const struct latency_spec *lat = latency_for(rp, req->method, req->path);
    double factor = 1.0;
    int64_t delay = 0;
    if (lat->kind != LATENCY_NONE) {
        pthread_mutex_lock(&rp->mu);
        delay = latency_first_byte_us(lat, &rp->rng, e->ttfb_us);
        pthread_mutex_unlock(&rp->mu);
    }
    if (latency_replays_chunks(lat, &factor) && e->nchunks > 1) {
        resp->chunks = e->chunks;
        resp->nchunks = e->nchunks;
        resp->chunk_factor = factor;
    }
    resp->delay_us = delay + e->delay_ms * 1000;
    resp->fault = e->fault;
    resp->fault_after_bytes = e->fault_after_bytes;
    resp->dribble_chunks = e->dribble_chunks;
    resp->dribble_us = e->dribble_over_ms * 1000;
    return 0;
}

/* ---- replay faults (--faults, config "faults") -------------------------------------------- */

/* The replay faults for a request with this method and path: its route's own when the route
 * says, else the top level's. */
static const struct fault_set *faults_for(const struct replay *rp, const char *method,
                                          const char *path)
{
    const struct config *cfg = rp->opt.config;
    const struct route_rule *r = config_route_for(cfg, method, path);
    return r && r->has_faults ? &r->faults : &cfg->faults;
}

/* The error type Anthropic's API gives a status, for the body of a status fault. */
static const char *error_type_for(int status)
{
    switch (status) {
    case 400:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 529:
        return "overloaded_error";
    default:
        return "api_error";
    }
}

/* Turn the answer chosen for a request into the rule's fault. Returns the name the journal
 * and the log give it, or NULL when the rule does not apply (a cut-stream of a body too short
 * to cut, one already cut) or memory ran out (the answer then goes unfaulted). */
static const char *apply_fault(const struct fault_rule *rule, struct server_response *resp)
{
    switch (rule->kind) {
    case FAULT_RESET:
    case FAULT_EMPTY:
        resp->fault = (int)rule->kind; /* the server closes instead of answering */
        return rule->name;
    case FAULT_LATENCY_SPIKE:
        resp->delay_us += rule->spike_us;
        return rule->name;
    case FAULT_STATUS: {
        struct buf b = {0};
        if (buf_printf(&b,
                       "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"apisim "
                       "fault %s (--faults)\"}}",
                       error_type_for(rule->status), rule->name) < 0) {
            buf_free(&b);
            return NULL;
        }
        /* None of the recorded answer stays: its headers, pacing, cut or dribble. */
        headers_free(&resp->headers);
        resp->extra_headers = NULL;
        resp->chunks = NULL;
        resp->nchunks = 0;
        resp->cut_short = 0;
        resp->cut_size = 0;
        resp->dribble_chunks = 0;
        server_response_json(resp, rule->status, buf_steal(&b, NULL));
        return rule->name;
    }
    case FAULT_CUT_STREAM: {
        if (resp->body_len < 2 || resp->cut_short)
            return NULL;
        /* Half the body, and never just after a newline: inside an SSE event, not between
         * two. The head promises the whole body. */
        size_t cut = resp->body_len / 2;
        if (resp->body[cut - 1] == '\n')
            cut++;
        if (cut >= resp->body_len)
            cut = resp->body_len - 1;
        resp->cut_short = 1;
        resp->cut_size = resp->body_len;
        resp->body_len = cut;
        return rule->name;
    }
    default:
        return NULL;
    }
}

/* The nearest recorded exchanges to a request that matched none, with what differs. */
static cJSON *nearest_json(struct replay *rp, const struct match_request *mr,
                           const struct server_request *req)
{
    cJSON *arr = cJSON_CreateArray();
    const struct match_rules *rules = rules_for(rp, mr->method, mr->path);
    const struct redact_rules *redact = &rp->redact;
    struct cand {
        int64_t id;
        int ndiff;
        char *method, *path;
        char *diffs[REPLAY_MAX_DIFFS];
        int nd;
    } best[REPLAY_NEAREST];
    size_t nbest = 0;
    char err[APISIM_ERR_LEN];
    sqlite3 *db = rp->opt.store ? store_reader(rp->opt.store, err) : NULL;
    sqlite3_stmt *s = NULL;
    if (!arr)
        return NULL;
    memset(best, 0, sizeof best);
    /* Look at the likeliest candidates first: same method and path. */
    if (db && sqlite3_prepare_v2(db,
                                 "SELECT id FROM exchanges WHERE (?1 IS NULL OR session = ?1) "
                                 "ORDER BY (path = ?2) + (method = ?3) DESC, seq LIMIT ?4",
                                 -1, &s, NULL) == SQLITE_OK) {
        if (rp->opt.session)
            sqlite3_bind_text(s, 1, rp->opt.session, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, mr->path, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, mr->method, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 4, REPLAY_NEAREST_SCAN);
        while (sqlite3_step(s) == SQLITE_ROW) {
            struct exchange *ex = NULL;
            if (store_get_exchange(db, sqlite3_column_int64(s, 0), &ex, err) != 0)
                continue;
            struct match_request rec = request_view(ex);
            char *diffs[REPLAY_MAX_DIFFS] = {0};
            int nd = match_diff(rules, redact, mr, &rec, diffs, REPLAY_MAX_DIFFS);
            /* A proxied request matches only its own host: another host is a difference. */
            if (nd >= 0 && req->authority && ex->authority &&
                (strcmp(req->authority, ex->authority) != 0 ||
                 strcmp(req->scheme, ex->scheme ? ex->scheme : "http") != 0)) {
                struct buf hd = {.max = 700};
                if (buf_printf(&hd, "host: %s://%.280s != %s://%.280s", req->scheme, req->authority,
                               ex->scheme ? ex->scheme : "http", ex->authority) == 0) {
                    free(diffs[REPLAY_MAX_DIFFS - 1]);
                    memmove(diffs + 1, diffs, (REPLAY_MAX_DIFFS - 1) * sizeof diffs[0]);
                    diffs[0] = buf_steal(&hd, NULL);
                    nd++;
                }
                buf_free(&hd);
            }
            size_t slot = nbest;
            if (nd >= 0 && nbest == REPLAY_NEAREST) {
                slot = 0;
                for (size_t k = 1; k < nbest; k++)
                    if (best[k].ndiff > best[slot].ndiff)
                        slot = k;
                if (best[slot].ndiff <= nd)
                    slot = REPLAY_NEAREST;
            }
            int stored = nd >= 0 && slot < REPLAY_NEAREST;
            if (stored) {
                if (slot < nbest) {
                    free(best[slot].method);
                    free(best[slot].path);
                    for (int k = 0; k < best[slot].nd; k++)
                        free(best[slot].diffs[k]);
                } else {
                    nbest++;
                }
                best[slot].id = ex->id;
                best[slot].ndiff = nd;
                best[slot].method = strdup(ex->method);
                best[slot].path = strdup(ex->path);
                best[slot].nd = nd < REPLAY_MAX_DIFFS ? nd : REPLAY_MAX_DIFFS;
                memcpy(best[slot].diffs, diffs, sizeof diffs);
            } else {
                for (int k = 0; k < REPLAY_MAX_DIFFS; k++)
                    free(diffs[k]);
            }
            exchange_free(ex);
        }
        sqlite3_finalize(s);
    }
    /* Fewest differences first. */
    for (size_t i = 1; i < nbest; i++)
        for (size_t k = i; k > 0 && best[k].ndiff < best[k - 1].ndiff; k--) {
            struct cand t = best[k];
            best[k] = best[k - 1];
            best[k - 1] = t;
        }
    for (size_t i = 0; i < nbest; i++) {
        cJSON *o = cJSON_CreateObject(), *d = cJSON_CreateArray();
        if (o && d) {
            cJSON_AddNumberToObject(o, "id", (double)best[i].id);
            cJSON_AddStringToObject(o, "method", best[i].method ? best[i].method : "");
            cJSON_AddStringToObject(o, "path", best[i].path ? best[i].path : "");
            for (int k = 0; k < best[i].nd; k++)
                cJSON_AddItemToArray(d,
                                     cJSON_CreateString(best[i].diffs[k] ? best[i].diffs[k] : ""));
            cJSON_AddItemToObject(o, "differences", d);
            cJSON_AddItemToArray(arr, o);
        } else {
            cJSON_Delete(o);
            cJSON_Delete(d);
        }
        free(best[i].method);
        free(best[i].path);
        for (int k = 0; k < best[i].nd; k++)
            free(best[i].diffs[k]);
    }
    return arr;
}

/* Also offer the stubs on the same path as "nearest" in a mock server. */
static void nearest_stubs(struct replay *rp, const struct match_request *mr, cJSON *arr)
{
    pthread_rwlock_rdlock(&rp->lock);
    for (size_t i = 0; i < rp->stubs.nbuckets && cJSON_GetArraySize(arr) < REPLAY_NEAREST; i++)
        for (struct group *g = rp->stubs.buckets[i]; g && g->n; g = g->chain) {
            const struct entry *e = g->v[0];
            if (strcmp(e->path, mr->path) != 0 && ascii_casecmp(e->method, mr->method) != 0)
                continue;
            cJSON *o = cJSON_CreateObject(), *d = cJSON_CreateArray();
            if (!o || !d) {
                cJSON_Delete(o);
                cJSON_Delete(d);
                continue;
            }
            cJSON_AddNumberToObject(o, "id", (double)e->id);
            cJSON_AddStringToObject(o, "method", e->method);
            cJSON_AddStringToObject(o, "path", e->path);
            char line[600];
            if (ascii_casecmp(e->method, mr->method) != 0) {
                snprintf(line, sizeof line, "method: %s != %s", mr->method, e->method);
                cJSON_AddItemToArray(d, cJSON_CreateString(line));
            }
            if (strcmp(e->path, mr->path) != 0) {
                snprintf(line, sizeof line, "path: %.280s != %.280s", mr->path, e->path);
                cJSON_AddItemToArray(d, cJSON_CreateString(line));
            }
            cJSON_AddItemToObject(o, "differences", d);
            cJSON_AddItemToArray(arr, o);
        }
    pthread_rwlock_unlock(&rp->lock);
}

static int answer_miss(struct replay *rp, struct server_request *req,
                       const struct match_request *mr, const char *key, const char *why,
                       struct server_response *resp)
{
    atomic_fetch_add(&rp->misses, 1);
    cJSON *o = cJSON_CreateObject(), *r = cJSON_CreateObject(), *h = cJSON_CreateObject();
    if (!o || !r || !h) {
        cJSON_Delete(o);
        cJSON_Delete(r);
        cJSON_Delete(h);
        return -1;
    }
    cJSON_AddStringToObject(o, "error", why);
    cJSON_AddStringToObject(r, "method", req->method);
    if (req->authority) {
        cJSON_AddStringToObject(r, "scheme", req->scheme);
        cJSON_AddStringToObject(r, "authority", req->authority);
    }
    cJSON_AddStringToObject(r, "path", req->path);
    cJSON_AddStringToObject(r, "query", req->query);
    for (size_t i = 0; i < req->headers.n; i++)
        cJSON_AddStringToObject(h, req->headers.v[i].name, req->headers.v[i].value);
    cJSON_AddItemToObject(r, "headers", h);
    if (is_utf8_text(req->body, req->body_len)) {
        char *t = xstrndup((const char *)req->body, req->body_len);
        cJSON_AddStringToObject(r, "body", t ? t : "");
        free(t);
    } else {
        char *b64 = base64_encode(req->body, req->body_len);
        cJSON_AddStringToObject(r, "body_base64", b64 ? b64 : "");
        free(b64);
    }
    cJSON_AddItemToObject(o, "request", r);
    cJSON_AddStringToObject(o, "key", key ? key : "");
    cJSON *near = nearest_json(rp, mr, req);
    if (near) {
        nearest_stubs(rp, mr, near);
        cJSON_AddItemToObject(o, "nearest", near);
    }
    /* One line on stderr says what missed and the closest thing there was. */
    const cJSON *first = cJSON_GetArrayItem(near, 0);
    const cJSON *fd =
        first ? cJSON_GetArrayItem(cJSON_GetObjectItem(first, "differences"), 0) : NULL;
    log_msg(LOG_WARN, "miss: %s %s%s%s%s%s%s%s (%s)%s%s", req->method,
            req->authority ? req->scheme : "", req->authority ? "://" : "",
            req->authority ? req->authority : "", req->path, req->query[0] ? "?" : "", req->query,
            "", why, first ? "; nearest differs in " : "",
            fd && cJSON_IsString(fd) ? fd->valuestring : "");
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text)
        return -1;
    server_response_json(resp, 404, text);
    headers_add(&resp->headers, "X-Apisim-Miss", "1");
    return 0;
}

/* A miss recorded with --on-miss record is committed: index it, so that the same request
 * in this run is answered from it (writer thread, before the client has its answer). */
static void index_recorded_miss(void *cls, int64_t id)
{
    struct replay *rp = cls;
    char err[APISIM_ERR_LEN];
    sqlite3 *db = store_reader(rp->opt.store, err);
    struct exchange *ex = NULL;
    if (!db || store_get_exchange(db, id, &ex, err) != 0) {
        log_msg(LOG_WARN, "--on-miss record: exchange %lld stored but not indexed: %s",
                (long long)id, db ? err : "no reader");
        return;
    }
    pthread_rwlock_wrlock(&rp->lock);
    if (index_exchange(rp, ex, 1, err) == 0) {
        /* The request just made used the first answer of its new group. */
        struct match_request mr = request_view(ex);
        char *key = key_of(rp, &mr);
        char *hkey = key && ex->authority ? host_key(ex->scheme, ex->authority, key) : NULL;
        struct group *g = key ? table_find(&rp->recorded, key, match_hash(key)) : NULL;
        struct group *hg = hkey ? table_find(&rp->recorded, hkey, match_hash(hkey)) : NULL;
        if (g && g->n == 1)
            g->next = 1;
        if (hg && hg->n == 1)
            hg->next = 1;
        free(key);
        free(hkey);
    }
    pthread_rwlock_unlock(&rp->lock);
    exchange_free(ex);
}

/* Forward a miss to the upstream (--on-miss forward|record). The journal's "matched" stays
 * null: the exchange is stored after the handler has returned. */
static int forward_miss(struct replay *rp, struct server_request *req, struct server_response *resp)
{
    int record = rp->opt.on_miss == ON_MISS_RECORD;
    return proxy_forward(rp->opt.proxy, req, resp, record, record ? index_recorded_miss : NULL, rp);
}

int replay_handle(void *app, struct server_request *req, struct server_response *resp)
{
    struct replay *rp = app;
    int64_t matched = 0;
    int rc = 0;
    char *key = NULL;
    const char *fault = NULL;
    /* Its place in the journal's arrival order: its journal id, and its fault draw. */
    int64_t seq = (int64_t)atomic_fetch_add(&rp->arrivals, 1) + 1;
    struct match_request mr = {.method = req->method,
                               .path = req->path,
                               .query = req->query,
                               .headers = &req->headers,
                               .body = req->body,
                               .body_len = req->body_len};

    /* The quota fixture answers its endpoint before anything recorded. */
    if (atomic_load(&rp->quota_active) && strcmp(req->method, "GET") == 0 &&
        strcmp(req->path, "/api/oauth/usage") == 0) {
        pthread_mutex_lock(&rp->mu);
        int active = rp->quota != NULL;
        if (active)
            rc = quota_answer(rp->quota, req, now_wall_us(), resp);
        pthread_mutex_unlock(&rp->mu);
        if (active)
            goto out;
    }

    pthread_rwlock_rdlock(&rp->lock);
    struct entry *e = NULL;
    int exhausted = 0;
    if (rp->stubs.count) {
        char *sk = stub_key(req->method, req->path);
        struct group *g = sk ? table_find(&rp->stubs, sk, match_hash(sk)) : NULL;
        free(sk);
        if (g && g->n) {
            e = group_next(rp, g);
            exhausted = !e;
        }
    }
    if (!e && !exhausted) {
        key = key_of(rp, &mr);
        /* A proxied request looks only at its own host's exchanges. */
        char *hkey = key && req->authority ? host_key(req->scheme, req->authority, key) : NULL;
        const char *look = req->authority ? hkey : key;
        struct group *g = look ? table_find(&rp->recorded, look, match_hash(look)) : NULL;
        free(hkey);
        if (g) {
            e = group_next(rp, g);
            exhausted = !e;
        }
    }
    if (e) {
        matched = e->id;
        rc = serve_entry(rp, e, req, resp);
        if (rc == 0 && e->fault)
            fault = fault_kind_name((enum fault_kind)e->fault);
    }
    pthread_rwlock_unlock(&rp->lock);
    if (e && rc == 0 && !fault && rp->any_faults) {
        uint64_t n = (uint64_t)seq - atomic_load(&rp->fault_base);
        const struct fault_rule *rule =
            fault_draw(faults_for(rp, req->method, req->path), rp->opt.seed, n);
        if (rule)
            fault = apply_fault(rule, resp);
    }
    if (e)
        goto out;

    if (rp->opt.record_stream) {
        /* A recorder: what no stub answers goes to the upstream, streamed and stored. */
        rc = proxy_handle(rp->opt.proxy, req, resp);
        goto out;
    }
    if (rp->opt.on_miss != ON_MISS_ERROR && rp->opt.proxy && !exhausted) {
        rc = forward_miss(rp, req, resp);
        goto out;
    }
    if (!key)
        key = key_of(rp, &mr);
    rc = answer_miss(rp, req, &mr, key,
                     exhausted ? "sequence exhausted" : "no recorded exchange matches", resp);
out:
    if (fault) {
        atomic_fetch_add(&rp->faults, 1);
        log_msg(LOG_INFO, "fault: request %lld %s %s%s%.200s: %s", (long long)seq, req->method,
                req->path, req->query[0] ? "?" : "", req->query, fault);
    }
    journal_add(rp, req, seq, matched, fault);
    free(key);
    return rc;
}
