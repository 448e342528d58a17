#include "replay.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proxy.h"
#include "quota.h"
#include "redact.h"
#include "template.h"

/* Recorded exchanges are looked up per request (the match index in the database, or keys
 * computed by a pass over the recording for rules that change them) and the answers served
 * are cached: entries up to this many bytes in all, least recently used dropped first. */
#define REPLAY_CACHE_BUDGET (8u * 1024 * 1024)
/* Only bodies up to this size are cached with their entry: small answers gain most from
 * memory, and a large body costs more to send than to read. */
#define REPLAY_KEEP_BODY_MAX (64 * 1024)
/* Keys whose position in their sequence does not matter (one exchange, repeated) are
 * cached up to this many; keys with a position to remember are kept. */
#define REPLAY_HOT_GROUPS 8192
/* Admission to the two caches above, for a key of one exchange found in the database's
 * index: only at its second request within a window (a bit per hash of the key, cleared
 * every REPLAY_SEEN_BITS / 4 first sightings). A key requested once is answered from what
 * its lookup read and freed: without this, each request for a random exchange out of many
 * made a group and an entry, evicted the least recently used ones, and walked cold memory
 * for both (about 5% of the CPU of such a request). A hot key is cached at its second
 * request, as before. */
#define REPLAY_SEEN_BITS (1u << 16)
#define REPLAY_JOURNAL_DEFAULT 10000
#define REPLAY_NEAREST 3
#define REPLAY_NEAREST_SCAN 200
#define REPLAY_MAX_DIFFS 8

/* An intrusive list in most-recently-used-first order: each member embeds a link, and
 * LRU_OWNER finds the member of a link (the tail, when the least recently used goes). */
struct lru_link {
    struct lru_link *prev, *next;
};

struct lru {
    struct lru_link *head, *tail;
};

#define LRU_OWNER(link, type, member) ((type *)(void *)((char *)(link)-offsetof(type, member)))

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
    /* Recorded entries live in the cache (struct cache): references held by the cache and
     * by the responses borrowing from the entry; the last one frees it. */
    atomic_int refs;
    size_t cost;           /* bytes it holds, counted against the cache budget */
    struct entry *cchain;  /* same cache bucket */
    struct lru_link clink; /* in the cache's order of use */
};

/* A recorded key's exchanges in replay order (ids), and the replay's position in them. */
struct rgroup {
    struct match_ident key;
    int64_t *ids;
    size_t n;
    size_t next;          /* index of the next answer */
    int pinned;           /* its position matters: kept until the end */
    struct rgroup *chain; /* same bucket */
    struct lru_link lru;  /* unpinned groups, in order of use */
};

/* The keys of the exchanges read by a pass over the recording (rules that change keys),
 * sorted by identity and then replay order, so a key's exchanges are one run. */
struct mem_key {
    struct match_ident key;
    int64_t order;
    int64_t id;
};

/* The stubs registered for one method and path, in order, and the position in them. */
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
    const char *scheme, *authority; /* the host a proxied request named; NULL in origin form */
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

    pthread_rwlock_t lock;  /* guards the stub table and entries lists */
    struct table stubs;     /* "METHOD path" -> stubs, latest group wins */
    struct entry **entries; /* every entry ever made, freed at the end */
    size_t nentries, capentries;
    /* Recorded exchanges. Requests under the default rules are looked up in the match index
     * in the database (db_index); those under rules that change keys (--match, --ignore-*,
     * --match-header, a route's "match", --redact-query/-json at replay time: all of them
     * when mem_all) in mem[], built by a pass over the recording at start. */
    int db_index;
    int mem_all;
    int need_chunks; /* a latency spec replays chunk timing: entries read their chunks */
    struct mem_key *mem;
    size_t nmem, capmem;
    pthread_mutex_t cmu; /* guards the groups and the cache below */
    struct rgroup **gbuckets;
    size_t ngbuckets, ngroups, nunpinned;
    struct lru glru; /* unpinned groups */
    struct entry **cbuckets;
    size_t ncbuckets, ncached, cache_bytes;
    struct lru clru;
    uint64_t seen[REPLAY_SEEN_BITS / 64]; /* keys seen once lately (REPLAY_SEEN_BITS) */
    size_t nseen;                         /* first sightings since seen[] was cleared */
    atomic_llong nrecorded;               /* -1 until counted (the first health request) */
    size_t persistent_stubs;              /* stubs in entries[] before this index survive reset */
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

/* Make the served form of an exchange. Takes the body and chunks from ex, and its response
 * headers too when take_headers (they are then filtered in place: a lookup's exchange is
 * freed right after, and copying them would cost two allocations per header). */
static struct entry *entry_from_exchange(struct exchange *ex, int keep_body, int take_headers)
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
    struct headers *rh = &ex->response_headers;
    size_t kept = 0;
    for (size_t i = 0; i < rh->n; i++) {
        struct header *h = &rh->v[i];
        if (e->cut_short && ascii_casecmp(h->name, "content-length") == 0 && !ex->response_encoding)
            e->cut_size = strtoull(h->value, NULL, 10);
        /* The body is served decoded and framed by this server. */
        int drop = header_is_hop_by_hop(h->name) || ascii_casecmp(h->name, "content-length") == 0 ||
                   (ex->response_encoding && ascii_casecmp(h->name, "content-encoding") == 0);
        if (take_headers && drop) {
            free(h->name);
            free(h->value);
        } else if (take_headers) {
            rh->v[kept++] = *h;
        } else if (!drop && headers_add(&e->headers, h->name, h->value) < 0) {
            goto oom;
        }
    }
    if (take_headers) {
        rh->n = kept;
        e->headers = *rh;
        *rh = (struct headers){0};
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

/* ---- recorded exchanges: groups, the entry cache, the pass ------------------------------- */

static size_t ident_slot(const struct match_ident *k, size_t nbuckets)
{
    return (size_t)(k->hash ^ (k->check >> 7)) & (nbuckets - 1);
}

static int ident_eq(const struct match_ident *a, const struct match_ident *b)
{
    return a->hash == b->hash && a->check == b->check;
}

static struct rgroup *rgroup_find(const struct replay *rp, const struct match_ident *k)
{
    if (!rp->ngbuckets)
        return NULL;
    for (struct rgroup *g = rp->gbuckets[ident_slot(k, rp->ngbuckets)]; g; g = g->chain)
        if (ident_eq(&g->key, k))
            return g;
    return NULL;
}

static void lru_unlink(struct lru *l, struct lru_link *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        l->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        l->tail = n->prev;
    n->prev = n->next = NULL;
}

static void lru_push(struct lru *l, struct lru_link *n)
{
    n->prev = NULL;
    n->next = l->head;
    if (l->head)
        l->head->prev = n;
    l->head = n;
    if (!l->tail)
        l->tail = n;
}

/* n becomes the most recently used. */
static void lru_touch(struct lru *l, struct lru_link *n)
{
    if (l->head != n) {
        lru_unlink(l, n);
        lru_push(l, n);
    }
}

static void rgroup_remove(struct replay *rp, struct rgroup *g)
{
    struct rgroup **pp = &rp->gbuckets[ident_slot(&g->key, rp->ngbuckets)];
    while (*pp != g)
        pp = &(*pp)->chain;
    *pp = g->chain;
    if (!g->pinned) {
        lru_unlink(&rp->glru, &g->lru);
        rp->nunpinned--;
    }
    rp->ngroups--;
    free(g->ids);
    free(g);
}

/* Add a group for key with ids (taken), unpinned and most recently used; the least
 * recently used unpinned ones go beyond REPLAY_HOT_GROUPS. NULL when out of memory (ids
 * freed). */
static struct rgroup *rgroup_add(struct replay *rp, const struct match_ident *k, int64_t *ids,
                                 size_t n)
{
    struct rgroup *g = NULL;
    if (rp->ngroups + 1 > rp->ngbuckets) {
        size_t nb = rp->ngbuckets ? rp->ngbuckets * 2 : 1024;
        struct rgroup **b = calloc(nb, sizeof *b);
        if (!b)
            goto oom;
        for (size_t i = 0; i < rp->ngbuckets; i++)
            for (struct rgroup *x = rp->gbuckets[i], *next; x; x = next) {
                next = x->chain;
                x->chain = b[ident_slot(&x->key, nb)];
                b[ident_slot(&x->key, nb)] = x;
            }
        free(rp->gbuckets);
        rp->gbuckets = b;
        rp->ngbuckets = nb;
    }
    if (!(g = calloc(1, sizeof *g)))
        goto oom;
    g->key = *k;
    g->ids = ids;
    g->n = n;
    size_t slot = ident_slot(k, rp->ngbuckets);
    g->chain = rp->gbuckets[slot];
    rp->gbuckets[slot] = g;
    rp->ngroups++;
    lru_push(&rp->glru, &g->lru);
    rp->nunpinned++;
    while (rp->nunpinned > REPLAY_HOT_GROUPS && rp->glru.tail != &g->lru)
        rgroup_remove(rp, LRU_OWNER(rp->glru.tail, struct rgroup, lru));
    return g;
oom:
    free(ids);
    return NULL;
}

/* Whether key k is to be cached: 1 when it was seen lately, else 0 (and it is now).
 * Under rp->cmu. */
static int rgroup_admit(struct replay *rp, const struct match_ident *k)
{
    size_t bit = (size_t)((k->hash ^ k->check) & (REPLAY_SEEN_BITS - 1));
    uint64_t mask = (uint64_t)1 << (bit % 64);
    if (rp->seen[bit / 64] & mask)
        return 1;
    if (++rp->nseen > REPLAY_SEEN_BITS / 4) {
        memset(rp->seen, 0, sizeof rp->seen);
        rp->nseen = 1;
    }
    rp->seen[bit / 64] |= mask;
    return 0;
}

static void rgroups_free(struct replay *rp)
{
    for (size_t i = 0; i < rp->ngbuckets; i++)
        for (struct rgroup *g = rp->gbuckets[i], *next; g; g = next) {
            next = g->chain;
            free(g->ids);
            free(g);
        }
    free(rp->gbuckets);
    rp->gbuckets = NULL;
    rp->ngbuckets = rp->ngroups = rp->nunpinned = 0;
    rp->glru = (struct lru){0};
}

/* The id of the group's next answer (the sequence position moves on), or 0 when the
 * sequence is exhausted under --sequence-end error. A group whose position now matters is
 * pinned; another one becomes the most recently used. Under rp->cmu. */
static int64_t rgroup_next(struct replay *rp, struct rgroup *g)
{
    int64_t id = 0;
    if (g->next < g->n) {
        id = g->ids[g->next++];
    } else if (g->n > 0) {
        switch (rp->opt.sequence_end) {
        case SEQUENCE_REPEAT_LAST:
            id = g->ids[g->n - 1];
            break;
        case SEQUENCE_CYCLE:
            id = g->ids[0];
            g->next = 1;
            break;
        case SEQUENCE_ERROR:
            break;
        }
    }
    /* One exchange repeated or cycled answers the same whatever the position: such a group
     * may be dropped and looked up again. */
    int matters = g->n > 1 || rp->opt.sequence_end == SEQUENCE_ERROR;
    if (!g->pinned && matters) {
        lru_unlink(&rp->glru, &g->lru);
        rp->nunpinned--;
        g->pinned = 1;
    } else if (!g->pinned) {
        lru_touch(&rp->glru, &g->lru);
    }
    return id;
}

/* -- the entry cache: id -> entry, bounded by REPLAY_CACHE_BUDGET -- */

static void entry_unref(struct entry *e)
{
    if (e && atomic_fetch_sub(&e->refs, 1) == 1)
        entry_free(e);
}

/* The server is done with a response that borrowed from e. */
static void entry_release(void *cls)
{
    entry_unref(cls);
}

static size_t id_slot(int64_t id, size_t n)
{
    uint64_t h = (uint64_t)id * 0x9e3779b97f4a7c15ULL;
    return (size_t)(h >> 20) & (n - 1);
}

static void cache_remove(struct replay *rp, struct entry *e)
{
    struct entry **pp = &rp->cbuckets[id_slot(e->id, rp->ncbuckets)];
    while (*pp != e)
        pp = &(*pp)->cchain;
    *pp = e->cchain;
    lru_unlink(&rp->clru, &e->clink);
    rp->ncached--;
    rp->cache_bytes -= e->cost;
    entry_unref(e); /* the cache's reference */
}

/* The cached entry of id with a reference for the caller, or NULL. Under rp->cmu. */
static struct entry *cache_get(struct replay *rp, int64_t id)
{
    if (!rp->ncbuckets)
        return NULL;
    for (struct entry *e = rp->cbuckets[id_slot(id, rp->ncbuckets)]; e; e = e->cchain)
        if (e->id == id) {
            lru_touch(&rp->clru, &e->clink);
            atomic_fetch_add(&e->refs, 1);
            return e;
        }
    return NULL;
}

/* Cache e (which holds the caller's reference) unless id is cached already: returns the
 * entry to serve, with a reference for the caller (e itself, or the one found, e then
 * released). Under rp->cmu. */
static struct entry *cache_put(struct replay *rp, struct entry *e)
{
    struct entry *old = cache_get(rp, e->id);
    if (old) {
        entry_unref(e);
        return old;
    }
    if (rp->ncached + 1 > rp->ncbuckets) {
        size_t nb = rp->ncbuckets ? rp->ncbuckets * 2 : 1024;
        struct entry **b = calloc(nb, sizeof *b);
        if (!b)
            return e; /* served uncached */
        for (size_t i = 0; i < rp->ncbuckets; i++)
            for (struct entry *x = rp->cbuckets[i], *next; x; x = next) {
                next = x->cchain;
                x->cchain = b[id_slot(x->id, nb)];
                b[id_slot(x->id, nb)] = x;
            }
        free(rp->cbuckets);
        rp->cbuckets = b;
        rp->ncbuckets = nb;
    }
    size_t slot = id_slot(e->id, rp->ncbuckets);
    e->cchain = rp->cbuckets[slot];
    rp->cbuckets[slot] = e;
    lru_push(&rp->clru, &e->clink);
    rp->ncached++;
    rp->cache_bytes += e->cost;
    atomic_fetch_add(&e->refs, 1); /* the cache's */
    while (rp->cache_bytes > REPLAY_CACHE_BUDGET && rp->clru.tail && rp->clru.tail != &e->clink)
        cache_remove(rp, LRU_OWNER(rp->clru.tail, struct entry, clink));
    return e;
}

static void cache_free(struct replay *rp)
{
    while (rp->clru.tail)
        cache_remove(rp, LRU_OWNER(rp->clru.tail, struct entry, clink));
    free(rp->cbuckets);
    rp->cbuckets = NULL;
    rp->ncbuckets = 0;
}

/* The served form of ex (which gives up its body, chunks and response headers): 0 with *out (one
 * reference, the caller's), or -1 when out of memory. */
static int entry_make(struct exchange *ex, struct entry **out)
{
    int keep = ex->response_body != NULL || ex->response_body_len == 0;
    struct entry *e = entry_from_exchange(ex, keep, 1);
    if (!e)
        return -1;
    /* What malloc holds for it: each allocation costs its size and about 16 bytes more. */
    e->cost = sizeof *e + 16 + (e->body ? e->body_len + 16 : 0) +
              (e->nchunks ? e->nchunks * sizeof(struct chunk) + 16 : 0) +
              (e->headers.n ? e->headers.n * sizeof(struct header) + 16 : 0);
    for (size_t i = 0; i < e->headers.n; i++)
        e->cost += strlen(e->headers.v[i].name) + strlen(e->headers.v[i].value) + 2 + 32;
    atomic_init(&e->refs, 1);
    *out = e;
    return 0;
}

/* Read exchange id's served form from the database: 0 with *out (one reference, the
 * caller's), 1 when it is no longer there, -1 with err. Any thread. */
static int entry_load(struct replay *rp, int64_t id, struct entry **out, char *err)
{
    struct exchange *ex = NULL;
    int rc = store_get_response(rp->opt.store, id, REPLAY_KEEP_BODY_MAX, rp->need_chunks, &ex, err);
    if (rc != 0)
        return rc;
    rc = entry_make(ex, out);
    exchange_free(ex);
    if (rc < 0)
        snprintf(err, APISIM_ERR_LEN, "out of memory reading exchange %lld", (long long)id);
    return rc;
}

static int mem_key_cmp(const void *pa, const void *pb)
{
    const struct mem_key *a = pa, *b = pb;
    if (a->key.hash != b->key.hash)
        return a->key.hash < b->key.hash ? -1 : 1;
    if (a->key.check != b->key.check)
        return a->key.check < b->key.check ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* The ids of key's exchanges in mem[] (in replay order). 0 with *ids (malloc'd, NULL when
 * none) and *n, or -1 when out of memory. */
static int mem_lookup(const struct replay *rp, const struct match_ident *k, int64_t **ids,
                      size_t *n)
{
    size_t lo = 0, hi = rp->nmem;
    *ids = NULL;
    *n = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct match_ident *m = &rp->mem[mid].key;
        if (m->hash < k->hash || (m->hash == k->hash && m->check < k->check))
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t end = lo;
    while (end < rp->nmem && ident_eq(&rp->mem[end].key, k))
        end++;
    if (end == lo)
        return 0;
    int64_t *v = malloc((end - lo) * sizeof *v);
    if (!v)
        return -1;
    for (size_t i = lo; i < end; i++)
        v[i - lo] = rp->mem[i].id;
    *ids = v;
    *n = end - lo;
    return 0;
}

/* What a request is looked up by among the recorded exchanges. */
struct rkey {
    struct match_ident key;   /* its match key's: what the database's index holds */
    const char *origin;       /* a proxied request's "scheme://authority"; NULL: any host */
    struct match_ident group; /* its group's: the key's, or the origin's and key's together */
};

/* The origin an exchange or a proxied request is indexed and looked up under, as the match
 * index holds it (store.h, store_origin): "scheme://authority"; NULL when the authority is
 * unknown (an exchange) or absent (a request in origin form: it matches any host). Returns
 * a malloc'd string or NULL; *oom is set when memory ran out. */
static char *origin_of(const char *scheme, const char *authority, int *oom)
{
    if (!authority)
        return NULL;
    char *o = store_origin(scheme, authority);
    if (!o)
        *oom = 1;
    return o;
}

/* origin_of() into buf when it fits (every proxied request makes one: no malloc), else
 * malloc'd; free it with origin_free(). */
static char *origin_in(char *buf, size_t cap, const char *scheme, const char *authority, int *oom)
{
    if (!authority)
        return NULL;
    if (store_origin_in(buf, cap, scheme, authority) < cap)
        return buf;
    return origin_of(scheme, authority, oom);
}

static void origin_free(char *origin, const char *buf)
{
    if (origin != buf)
        free(origin);
}

/* Fill k for key (and origin, NULL for any host). The group of a proxied request is its
 * host's alone: it keeps its own place in a sequence, apart from the same key asked without
 * a host. Returns 0, or -1 when out of memory. */
static int rkey_make(struct rkey *k, const char *key, const char *origin)
{
    match_ident_of(key, &k->key);
    k->origin = origin;
    k->group = k->key;
    if (!origin)
        return 0;
    /* "origin\nkey", on the stack when it fits (this runs on every proxied request) */
    size_t ol = strlen(origin), kl = strlen(key);
    char small[1024];
    char *p = ol + kl + 2 <= sizeof small ? small : malloc(ol + kl + 2);
    if (!p)
        return -1;
    memcpy(p, origin, ol);
    p[ol] = '\n';
    memcpy(p + ol + 1, key, kl + 1);
    match_ident_of(p, &k->group);
    if (p != small)
        free(p);
    return 0;
}

/* 1 when requests with this method and path are looked up in the database's match index. */
static int uses_db_index(const struct replay *rp, const struct match_rules *rules)
{
    return rp->db_index && !rp->mem_all && match_rules_are_default(rules);
}

struct pass_state {
    struct replay *rp;
    size_t exchanges; /* read into mem[] */
    char *err;
};

/* store_scan_requests()'s callback: the key of one exchange, for mem[]: under its group
 * ident for requests in origin form and, when its origin is known, for proxied requests of
 * that origin (rkey_make), as two entries. */
static int pass_one(void *cls, int64_t id, const struct match_request *mr, const char *origin)
{
    struct pass_state *ps = cls;
    struct replay *rp = ps->rp;
    const struct match_rules *rules = rules_for(rp, mr->method, mr->path);
    if (uses_db_index(rp, rules))
        return 0; /* the database answers for it */
    char *key = match_key(rules, &rp->redact, mr);
    struct rkey bare, host;
    int ok =
        key && rkey_make(&bare, key, NULL) == 0 && (!origin || rkey_make(&host, key, origin) == 0);
    free(key);
    while (ok && rp->nmem + 2 > rp->capmem) {
        size_t cap = rp->capmem ? rp->capmem * 2 : 1024;
        struct mem_key *v = realloc(rp->mem, cap * sizeof *v);
        if (!v)
            ok = 0;
        else {
            rp->mem = v;
            rp->capmem = cap;
        }
    }
    if (!ok) {
        snprintf(ps->err, APISIM_ERR_LEN, "out of memory reading exchange %lld", (long long)id);
        return -1;
    }
    for (int i = 0; i < (origin ? 2 : 1); i++) {
        struct mem_key *m = &rp->mem[rp->nmem];
        m->key = i == 0 ? bare.group : host.group;
        m->order = (int64_t)rp->nmem;
        m->id = id;
        rp->nmem++;
    }
    ps->exchanges++;
    return 0;
}

/* Rules that change keys at replay time need every affected exchange's key under them:
 * one pass over the recording (reads every request; see README, "Replay at scale"). */
static int read_recording_keys(struct replay *rp, char *err)
{
    int64_t t0 = now_mono_us();
    struct pass_state ps = {.rp = rp, .err = err};
    if (store_scan_requests(rp->opt.store, rp->opt.session, pass_one, &ps, err) < 0)
        return -1;
    if (rp->nmem > 1)
        qsort(rp->mem, rp->nmem, sizeof *rp->mem, mem_key_cmp);
    log_msg(LOG_INFO, "%s: read the keys of %zu exchange(s) in %.0f ms at start",
            rp->db_index ? "match rules that change keys" : "no current match index", ps.exchanges,
            (double)(now_mono_us() - t0) / 1000.0);
    return 0;
}

/* Does anything change the key of a request under the default rules at replay time? Every
 * route with "match" rules does for its own requests; global rules and replay-time
 * redaction of the query or body do for all of them. */
static void choose_index(struct replay *rp, int db_current)
{
    const struct config *cfg = rp->opt.config;
    rp->need_chunks = cfg && cfg->has_latency && latency_replays_chunks(&cfg->latency, NULL);
    for (size_t i = 0; cfg && i < cfg->nroutes; i++)
        rp->need_chunks |=
            cfg->routes[i].has_latency && latency_replays_chunks(&cfg->routes[i].latency, NULL);
    rp->db_index = db_current;
    rp->mem_all = !db_current || !match_rules_are_default(&rp->default_rules) ||
                  (cfg && (cfg->redact.nquery || cfg->redact.njson));
}

static int routes_change_keys(const struct replay *rp)
{
    const struct config *cfg = rp->opt.config;
    for (size_t i = 0; cfg && i < cfg->nroutes; i++)
        if (cfg->routes[i].has_match && !match_rules_are_default(&cfg->routes[i].match))
            return 1;
    return 0;
}

/* ---- redaction learnt from the recording -------------------------------------------------- */

/* A recording made with --redact-header/-query/-json holds "[REDACTED]" where the secrets
 * were. Those fields are left out of keys here too, so a replay started without the same
 * flags still matches a request that carries the real secret. The names are kept in the
 * match index (match_redacted); without a current index, they are found by reading every
 * request that holds one. */
static int learn_redactions(struct replay *rp, int db_current, char *err)
{
    static const char sql[] =
        "SELECT query, request_headers, request_body FROM exchanges "
        "WHERE (?1 IS NULL OR session = ?1) AND (instr(query, '" REDACTED "') > 0 OR "
        "instr(request_headers, '\"" REDACTED "\"') > 0 OR "
        "instr(CAST(request_body AS TEXT), '\"" REDACTED "\"') > 0)";
    struct redact_rules *r = &rp->redact;
    if (db_current)
        return store_redacted_names(rp->opt.store, r, err);
    sqlite3 *db = store_db(rp->opt.store);
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, sql, sizeof sql - 1, &s, NULL) != SQLITE_OK) {
        snprintf(err, APISIM_ERR_LEN, "database %s: %s", store_path(rp->opt.store),
                 sqlite3_errmsg(db));
        return -1;
    }
    if (rp->opt.session)
        sqlite3_bind_text(s, 1, rp->opt.session, -1, SQLITE_STATIC);
    int rc = 0;
    while (rc == 0 && sqlite3_step(s) == SQLITE_ROW) {
        struct headers h = {0};
        const char *hj = (const char *)sqlite3_column_text(s, 1);
        if (hj)
            exchange_headers_from_json(hj, (size_t)sqlite3_column_bytes(s, 1), &h);
        struct match_request mr = {.query = (const char *)sqlite3_column_text(s, 0),
                                   .headers = &h,
                                   .body = sqlite3_column_blob(s, 2),
                                   .body_len = (size_t)sqlite3_column_bytes(s, 2)};
        rc = match_learn_redacted(r, &mr);
        headers_free(&h);
    }
    sqlite3_finalize(s);
    if (rc < 0) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
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
    pthread_mutex_init(&rp->cmu, NULL);
    atomic_init(&rp->nrecorded, -1);
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
    if (opt->store) {
        int current = 0;
        if (store_index_sync(opt->store, &current, err) < 0 ||
            learn_redactions(rp, current, err) < 0)
            goto fail;
        choose_index(rp, current);
        if ((rp->mem_all || routes_change_keys(rp)) && read_recording_keys(rp, err) < 0)
            goto fail;
    }
    *out = rp;
    return 0;
oom:
    snprintf(err, APISIM_ERR_LEN, "out of memory");
fail:
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
    rgroups_free(rp);
    cache_free(rp);
    free(rp->mem);
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
    pthread_mutex_destroy(&rp->cmu);
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
        struct entry *e = entry_from_exchange(ex, 1, 0);
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
    pthread_mutex_lock(&rp->cmu);
    for (size_t i = 0; i < rp->ngbuckets; i++)
        for (struct rgroup *g = rp->gbuckets[i]; g; g = g->chain)
            g->next = 0;
    pthread_mutex_unlock(&rp->cmu);
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
    if (req->authority)
        n += strlen(req->scheme ? req->scheme : "http") + strlen(req->authority) + 2;
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
    j->scheme = j->authority = NULL;
    if (req->authority) {
        JCOPY(j->scheme, req->scheme ? req->scheme : "http");
        JCOPY(j->authority, req->authority);
    }
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
    if (j->authority) {
        cJSON_AddStringToObject(o, "scheme", j->scheme);
        cJSON_AddStringToObject(o, "authority", j->authority);
    } else {
        cJSON_AddNullToObject(o, "scheme");
        cJSON_AddNullToObject(o, "authority");
    }
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
    long long n = atomic_load(&rp->nrecorded);
    if (n < 0 && rp->opt.store) {
        /* Counted when first asked, not at start-up: with --session it reads the session. */
        int64_t count = 0;
        char err[APISIM_ERR_LEN];
        if (store_count_exchanges(rp->opt.store, rp->opt.session, &count, err) == 0) {
            long long expected = -1;
            atomic_compare_exchange_strong(&rp->nrecorded, &expected, (long long)count);
        } else {
            log_msg(LOG_ERROR, "health: %s", err);
        }
        n = atomic_load(&rp->nrecorded);
    }
    out->exchanges = n > 0 ? (size_t)n : 0;
    pthread_rwlock_rdlock(&rp->lock);
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
    /* Look at the likeliest candidates first: same path and method, same path, same method,
     * the rest. Each query goes through the path index or stops at its limit: a miss never
     * sorts the whole recording. */
    static const char *const near_sql[] = {
        "SELECT id FROM exchanges WHERE path = ?2 AND method = ?3 AND "
        "(?1 IS NULL OR session = ?1) LIMIT ?4",
        "SELECT id FROM exchanges WHERE path = ?2 AND method != ?3 AND "
        "(?1 IS NULL OR session = ?1) LIMIT ?4",
        "SELECT id FROM exchanges WHERE path != ?2 AND method = ?3 AND "
        "(?1 IS NULL OR session = ?1) LIMIT ?4",
        "SELECT id FROM exchanges WHERE path != ?2 AND method != ?3 AND "
        "(?1 IS NULL OR session = ?1) LIMIT ?4",
    };
    int left = REPLAY_NEAREST_SCAN;
    for (size_t q = 0; db && left > 0 && q < sizeof near_sql / sizeof near_sql[0]; q++) {
        if (sqlite3_prepare_v2(db, near_sql[q], -1, &s, NULL) != SQLITE_OK)
            break;
        if (rp->opt.session)
            sqlite3_bind_text(s, 1, rp->opt.session, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, mr->path, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, mr->method, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 4, left);
        while (sqlite3_step(s) == SQLITE_ROW) {
            struct exchange *ex = NULL;
            left--;
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
        s = NULL;
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

/* The recorded answer to a request looked up by k (under rules): 0 with *out (a reference
 * for the response to release), or with *out NULL when nothing recorded has this key (of
 * k's host when it has one), or when its sequence is over under --sequence-end error
 * (*exhausted set); -1 with err. */
static int recorded_next(struct replay *rp, const struct match_rules *rules, const struct rkey *k,
                         struct entry **out, int *exhausted, char *err)
{
    struct entry *first = NULL; /* the key's first answer, read with its lookup */
    *out = NULL;
    pthread_mutex_lock(&rp->cmu);
    struct rgroup *g = rgroup_find(rp, &k->group);
    if (!g) {
        /* Looked up without the lock: another thread may add the group meanwhile. */
        pthread_mutex_unlock(&rp->cmu);
        int64_t *ids = NULL, id0 = 0;
        size_t n = 0;
        int rc = 0, more = 0;
        if (uses_db_index(rp, rules)) {
            /* One statement finds the key and reads its first answer; a key with several
             * exchanges lists them with a second one. One read transaction for both (kept
             * for the next requests of this thread a little while: store.h). */
            struct exchange *ex = NULL;
            rc = store_read_begin(rp->opt.store, err);
            if (rc == 0)
                rc =
                    store_index_first(rp->opt.store, rp->opt.session, &k->key, k->origin,
                                      REPLAY_KEEP_BODY_MAX, rp->need_chunks, &id0, &more, &ex, err);
            if (rc == 0 && more)
                rc = store_index_lookup(rp->opt.store, rp->opt.session, &k->key, k->origin, &ids,
                                        &n, err);
            else if (rc == 0 && id0 && (ids = malloc(sizeof *ids)) != NULL)
                ids[n++] = id0;
            else if (rc == 0 && id0)
                rc = -1;
            if (rc == 0 && ex && entry_make(ex, &first) < 0)
                rc = -1;
            exchange_free(ex);
            if (rc < 0 && !err[0])
                snprintf(err, APISIM_ERR_LEN, "out of memory");
        } else if (mem_lookup(rp, &k->group, &ids, &n) < 0) {
            snprintf(err, APISIM_ERR_LEN, "out of memory");
            rc = -1;
        }
        if (rc < 0 || n == 0) {
            store_read_end(rp->opt.store);
            free(ids);
            entry_unref(first);
            return rc;
        }
        pthread_mutex_lock(&rp->cmu);
        if ((g = rgroup_find(rp, &k->group)) != NULL) {
            free(ids);
        } else if (first && n == 1 && rp->opt.sequence_end != SEQUENCE_ERROR &&
                   !rgroup_admit(rp, &k->group)) {
            /* One exchange, repeated whatever the position, seen for the first time lately:
             * answered with what its lookup read, neither the group nor the entry cached. */
            pthread_mutex_unlock(&rp->cmu);
            free(ids);
            store_read_end(rp->opt.store);
            *out = first;
            return 0;
        } else if (!(g = rgroup_add(rp, &k->group, ids, n))) {
            pthread_mutex_unlock(&rp->cmu);
            store_read_end(rp->opt.store);
            entry_unref(first);
            snprintf(err, APISIM_ERR_LEN, "out of memory");
            return -1;
        }
        if (first) /* cached whatever this request is answered with */
            first = cache_put(rp, first);
    }
    int64_t id = rgroup_next(rp, g);
    struct entry *e = NULL;
    if (first && first->id == id) {
        e = first;
        first = NULL;
    } else if (id) {
        e = cache_get(rp, id);
    }
    pthread_mutex_unlock(&rp->cmu);
    entry_unref(first);
    if (!id) {
        store_read_end(rp->opt.store);
        *exhausted = 1;
        return 0;
    }
    if (!e) {
        int rc = store_read_begin(rp->opt.store, err) < 0 ? -1 : entry_load(rp, id, &e, err);
        store_read_end(rp->opt.store);
        if (rc == 1)
            snprintf(err, APISIM_ERR_LEN,
                     "exchange %lld is in the match index but no longer in the database",
                     (long long)id);
        if (rc != 0)
            return -1;
        pthread_mutex_lock(&rp->cmu);
        e = cache_put(rp, e);
        pthread_mutex_unlock(&rp->cmu);
    }
    store_read_end(rp->opt.store);
    *out = e;
    return 0;
}

/* Add id to group g unless it holds it already, and pin g (mem[] does not hold id, and
 * its position now matters). Under rp->cmu. Returns 0, or -1 when out of memory. */
static int rgroup_take(struct replay *rp, struct rgroup *g, int64_t id)
{
    int has = 0;
    for (size_t i = 0; i < g->n; i++)
        has |= g->ids[i] == id;
    if (!has) {
        int64_t *v = realloc(g->ids, (g->n + 1) * sizeof *v);
        if (!v)
            return -1;
        v[g->n++] = id;
        g->ids = v;
    }
    if (!g->pinned) {
        lru_unlink(&rp->glru, &g->lru);
        rp->nunpinned--;
        g->pinned = 1;
    }
    return 0;
}

/* Make exchange id (just recorded) an answer of group k in this run: appended to the group
 * when it is held, else the group is made from the recording (the database's index, which
 * holds id already, or mem[] and id). A new group holding id alone was the request's own,
 * which used its first answer: its position moves past it. Returns 0, or -1 when out of
 * memory or the index cannot be read (err). */
static int group_recorded(struct replay *rp, const struct match_rules *rules, const struct rkey *k,
                          int64_t id, char *err)
{
    int64_t *ids = NULL;
    size_t n = 0;
    int rc = 0;
    pthread_mutex_lock(&rp->cmu);
    struct rgroup *g = rgroup_find(rp, &k->group);
    if (g) {
        rc = rgroup_take(rp, g, id);
        pthread_mutex_unlock(&rp->cmu);
        goto out;
    }
    pthread_mutex_unlock(&rp->cmu);
    /* Read without the lock, as recorded_next() does: the group may appear meanwhile. */
    if (uses_db_index(rp, rules))
        rc = store_index_lookup(rp->opt.store, rp->opt.session, &k->key, k->origin, &ids, &n, err);
    else if (mem_lookup(rp, &k->group, &ids, &n) < 0)
        rc = -1;
    if (rc < 0)
        goto out;
    int has = 0;
    for (size_t i = 0; i < n; i++)
        has |= ids[i] == id;
    if (!has) {
        int64_t *v = realloc(ids, (n + 1) * sizeof *v);
        if (!v) {
            rc = -1;
            goto out;
        }
        v[n++] = id;
        ids = v;
    }
    pthread_mutex_lock(&rp->cmu);
    if ((g = rgroup_find(rp, &k->group)) != NULL) {
        rc = rgroup_take(rp, g, id);
    } else if ((g = rgroup_add(rp, &k->group, ids, n)) != NULL) {
        ids = NULL; /* the group's now */
        g->next = n == 1;
        rc = rgroup_take(rp, g, id);
    } else {
        ids = NULL; /* freed by rgroup_add */
        rc = -1;
    }
    pthread_mutex_unlock(&rp->cmu);
out:
    free(ids);
    if (rc < 0 && !err[0])
        snprintf(err, APISIM_ERR_LEN, "out of memory");
    return rc;
}

/* A miss recorded with --on-miss record is committed (writer thread, before the client has
 * its answer): the same request later in this run is answered from it. Its key is found
 * again from the stored request, under the bare key and, when its host is known, under its
 * host's. */
static void index_recorded_miss(void *cls, int64_t id)
{
    struct replay *rp = cls;
    char err[APISIM_ERR_LEN] = "";
    sqlite3 *db = store_reader(rp->opt.store, err);
    struct exchange *ex = NULL;
    char *key = NULL, *origin = NULL;
    int oom = 0;
    if (!db || store_get_exchange(db, id, &ex, err) != 0) {
        log_msg(LOG_WARN, "--on-miss record: exchange %lld stored but not indexed: %s",
                (long long)id, db ? err : "no reader");
        return;
    }
    struct match_request mr = request_view(ex);
    const struct match_rules *rules = rules_for(rp, mr.method, mr.path);
    struct rkey bare, host;
    key = key_of(rp, &mr);
    origin = key ? origin_of(ex->scheme, ex->authority, &oom) : NULL;
    if (!key || oom || rkey_make(&bare, key, NULL) < 0 ||
        (origin && rkey_make(&host, key, origin) < 0)) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        goto fail;
    }
    if (group_recorded(rp, rules, &bare, id, err) < 0 ||
        (origin && group_recorded(rp, rules, &host, id, err) < 0))
        goto fail;
    if (atomic_load(&rp->nrecorded) >= 0)
        atomic_fetch_add(&rp->nrecorded, 1);
    goto out;
fail:
    log_msg(LOG_WARN, "--on-miss record: exchange %lld stored but not indexed: %s", (long long)id,
            err);
out:
    free(key);
    free(origin);
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
    char *key = NULL, *origin = NULL;
    char obuf[320]; /* the origin, most often (origin_in) */
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
    if (e) {
        matched = e->id;
        rc = serve_entry(rp, e, req, resp);
        if (rc == 0 && e->fault)
            fault = fault_kind_name((enum fault_kind)e->fault);
    }
    pthread_rwlock_unlock(&rp->lock);
    if (!e && !exhausted && rp->opt.store) {
        char err[APISIM_ERR_LEN] = "";
        struct rkey k;
        int oom = 0;
        /* A proxied request looks only at its own host's exchanges; one in origin form (sent
         * to apisim as a reverse proxy) at every host's. */
        key = key_of(rp, &mr);
        origin = key ? origin_in(obuf, sizeof obuf, req->scheme, req->authority, &oom) : NULL;
        if (key && (oom || rkey_make(&k, key, origin) < 0)) {
            log_msg(LOG_ERROR, "replaying %s %s: out of memory", req->method, req->path);
            rc = -1;
            goto out;
        }
        if (key &&
            recorded_next(rp, rules_for(rp, req->method, req->path), &k, &e, &exhausted, err) < 0) {
            log_msg(LOG_ERROR, "replaying %s %s: %s", req->method, req->path, err);
            rc = -1;
            goto out;
        }
        if (e) {
            matched = e->id;
            resp->release = entry_release; /* the response holds e's reference */
            resp->release_cls = e;
            rc = serve_entry(rp, e, req, resp);
        }
    }
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
    origin_free(origin, obuf);
    return rc;
}
