/* apisim — command-line entry: parses the command line and wires the modules together.
 * No logic of its own beyond turning flags into module options. */
#include <curl/curl.h>
#include <errno.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "ca.h"
#include "claude.h"
#include "config.h"
#include "export.h"
#include "front.h"
#include "jsonptr.h"
#include "log.h"
#include "proxy.h"
#include "quota.h"
#include "replay.h"
#include "server.h"
#include "store.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define EXIT_STRICT 3
#define MAX_CONFIG_FILE (4u * 1024 * 1024)

/* Everything the server commands accept; each command uses its part. */
struct options {
    const char *command;
    const char *db;
    const char *session;
    const char *listen;
    const char *upstream;
    const char *config_file;
    const char *latency;
    const char *seed;
    const char *on_miss;
    const char *sequence_end;
    const char *match;
    const char *upstream_timeout;
    const char *max_body;
    const char *max_record_body;
    const char *admin_token;
    const char *stubs;
    const char *quota;
    const char *threads;
    const char *max_connections;
    const char *journal_max;
    const char *client_timeout;
    const char *faults;
    const char *ca_dir;
    const char *upstream_cacert;
    char *no_intercept[65]; /* NULL-terminated, from --no-intercept lists */
    size_t nno_intercept;
    char *connect_to[33]; /* NULL-terminated */
    size_t nconnect_to;
    int strict;
    int insecure;
    int verbose;
    int quiet;
    struct config cfg; /* --config FILE, then the flags on top */
};

struct flag {
    const char *name;
    int takes_value;
    const char **value;                                      /* where a value goes */
    int *boolean;                                            /* or: set to 1 */
    int (*add)(struct options *o, const char *v, char *err); /* or: repeated, appended */
    const char *help;
};

static int add_redact_header(struct options *o, const char *v, char *err)
{
    (void)err;
    return redact_add_header(&o->cfg.redact, v);
}

static int add_redact_query(struct options *o, const char *v, char *err)
{
    (void)err;
    return redact_add_query(&o->cfg.redact, v);
}

static int add_redact_json(struct options *o, const char *v, char *err)
{
    if (jsonptr_validate(v, err) < 0)
        return -1;
    return redact_add_json(&o->cfg.redact, v);
}

/* Append a copy of v to list (cap slots, the last one kept NULL), counted by *n; "at most
 * N what" when it is full. Returns 0 or -1. */
static int list_add(char **list, size_t *n, size_t cap, const char *v, const char *what, char *err)
{
    if (*n == cap - 1) {
        snprintf(err, APISIM_ERR_LEN, "at most %zu %s", cap - 1, what);
        return -1;
    }
    if (!(list[*n] = strdup(v))) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
    (*n)++;
    return 0;
}

static int add_no_intercept(struct options *o, const char *v, char *err)
{
    const char *p = v;
    while (*p) {
        size_t n = strcspn(p, ",");
        char host[256];
        if (n == 0 || n >= sizeof host) {
            snprintf(err, APISIM_ERR_LEN, "\"%.200s\": expected HOST[,HOST...]", v);
            return -1;
        }
        memcpy(host, p, n);
        host[n] = '\0';
        if (!ca_host_valid(host)) {
            snprintf(err, APISIM_ERR_LEN, "\"%s\" is not a host name", host);
            return -1;
        }
        if (list_add(o->no_intercept, &o->nno_intercept,
                     sizeof o->no_intercept / sizeof o->no_intercept[0], host, "hosts", err) < 0)
            return -1;
        p += n;
        if (*p == ',')
            p++;
    }
    return 0;
}

static int add_connect_to(struct options *o, const char *v, char *err)
{
    if (front_connect_to_check(v, err) < 0)
        return -1;
    return list_add(o->connect_to, &o->nconnect_to, sizeof o->connect_to / sizeof o->connect_to[0],
                    v, "rules", err);
}

static void ensure_match(struct options *o)
{
    if (!o->cfg.has_match) {
        o->cfg.has_match = 1;
        o->cfg.match.fields = MATCH_ALL;
    }
}

static int add_match_header(struct options *o, const char *v, char *err)
{
    (void)err;
    ensure_match(o);
    return match_add_header(&o->cfg.match, v);
}

static int add_ignore_query(struct options *o, const char *v, char *err)
{
    (void)err;
    ensure_match(o);
    return match_add_ignore_query(&o->cfg.match, v);
}

static int add_ignore_json(struct options *o, const char *v, char *err)
{
    if (jsonptr_validate(v, err) < 0)
        return -1;
    ensure_match(o);
    return match_add_ignore_json(&o->cfg.match, v);
}

static const char COMMON_SERVER[] = "listen,config,admin-token,max-body,verbose,quiet,threads,"
                                    "max-connections,client-timeout,redact-header,redact-query,"
                                    "redact-json,";
/* record and replay also serve as forward proxies (HTTP_PROXY, HTTPS_PROXY). */
static const char PROXY_FLAGS[] = "ca-dir,no-intercept,connect-to,upstream-cacert,";

/* Which flags each server command accepts. */
static const char *flags_for(const char *cmd)
{
    if (strcmp(cmd, "record") == 0)
        return "upstream,db,session,upstream-timeout,insecure,max-record-body,";
    if (strcmp(cmd, "replay") == 0)
        return "db,session,latency,seed,on-miss,upstream,upstream-timeout,insecure,strict,"
               "sequence-end,match,match-header,ignore-query,ignore-json,stubs,quota,"
               "journal-max,max-record-body,faults,";
    return "stubs,quota,latency,seed,strict,sequence-end,journal-max,faults,"; /* mock */
}

static int flag_allowed(const char *cmd, const char *name)
{
    char needle[64];
    snprintf(needle, sizeof needle, "%s,", name);
    const char *lists[] = {COMMON_SERVER, flags_for(cmd),
                           strcmp(cmd, "mock") == 0 ? "" : PROXY_FLAGS};
    for (int i = 0; i < 3; i++) {
        const char *p = lists[i];
        while ((p = strstr(p, needle))) {
            if (p == lists[i] || p[-1] == ',')
                return 1;
            p++;
        }
    }
    return 0;
}

static void server_usage(FILE *f, const char *cmd, const struct flag *flags, size_t n)
{
    fprintf(f, "usage: apisim %s [options]\noptions:\n", cmd);
    for (size_t i = 0; i < n; i++)
        if (flag_allowed(cmd, flags[i].name))
            fprintf(f, "  --%-18s %s\n", flags[i].name, flags[i].help);
}

/* Parse argv into o. Returns 0, 1 for --help (printed), or -1 after printing the error. */
static int parse_flags(struct options *o, int argc, char **argv)
{
    const struct flag flags[] = {
        {"upstream", 1, &o->upstream, NULL, NULL, "URL of the real API (http or https)"},
        {"db", 1, &o->db, NULL, NULL, "recording file (default apisim.db; FILE.sql loads a dump)"},
        {"session", 1, &o->session, NULL, NULL, "session name (record: default \"default\")"},
        {"listen", 1, &o->listen, NULL, NULL, "HOST:PORT (default 127.0.0.1:8080; port 0 picks)"},
        {"config", 1, &o->config_file, NULL, NULL, "JSON file: match, latency, redact, routes"},
        {"latency", 1, &o->latency, NULL, NULL,
         "none|fixed:D|recorded|recorded*K|uniform:A..B|lognormal:MEDIAN,P99"},
        {"seed", 1, &o->seed, NULL, NULL,
         "seed of the random latency models and faults (default 1)"},
        {"faults", 1, &o->faults, NULL, NULL,
         "KIND[:ARG]:RATE%[,...]: reset, empty, status:CODE, latency-spike:D, cut-stream"},
        {"on-miss", 1, &o->on_miss, NULL, NULL, "error|forward|record (needs --upstream)"},
        {"sequence-end", 1, &o->sequence_end, NULL, NULL, "repeat-last|cycle|error"},
        {"match", 1, &o->match, NULL, NULL, "fields in the match key, e.g. method,path"},
        {"match-header", 1, NULL, NULL, add_match_header, "NAME: header in the match key"},
        {"ignore-query", 1, NULL, NULL, add_ignore_query, "NAME: query parameter left out"},
        {"ignore-json", 1, NULL, NULL, add_ignore_json, "POINTER: JSON body value left out"},
        {"redact-header", 1, NULL, NULL, add_redact_header, "NAME: header stored as [REDACTED]"},
        {"redact-query", 1, NULL, NULL, add_redact_query, "NAME: query parameter redacted"},
        {"redact-json", 1, NULL, NULL, add_redact_json, "POINTER: JSON body value redacted"},
        {"upstream-timeout", 1, &o->upstream_timeout, NULL, NULL,
         "connect/headers/stall limit (default 60s)"},
        {"max-body", 1, &o->max_body, NULL, NULL, "largest request body (default 64MiB)"},
        {"max-record-body", 1, &o->max_record_body, NULL, NULL,
         "largest response body stored (default 64MiB)"},
        {"admin-token", 1, &o->admin_token, NULL, NULL, "require X-Apisim-Token on /__apisim/"},
        {"stubs", 1, &o->stubs, NULL, NULL, "JSON file: an array of stubs loaded at start"},
        {"quota", 1, &o->quota, NULL, NULL, "quota fixture preset for /api/oauth/usage"},
        {"threads", 1, &o->threads, NULL, NULL, "server threads (default: number of cores)"},
        {"max-connections", 1, &o->max_connections, NULL, NULL, "default 1024"},
        {"client-timeout", 1, &o->client_timeout, NULL, NULL,
         "close a client connection idle this long (default 30s)"},
        {"journal-max", 1, &o->journal_max, NULL, NULL, "requests kept in the journal (10000)"},
        {"strict", 0, NULL, &o->strict, NULL, "exit 3 at stop if any request missed"},
        {"insecure", 0, NULL, &o->insecure, NULL, "accept any upstream TLS certificate"},
        {"ca-dir", 1, &o->ca_dir, NULL, NULL, "apisim's CA for HTTPS interception (apisim ca)"},
        {"no-intercept", 1, NULL, NULL, add_no_intercept,
         "HOST[,HOST...]: CONNECTs tunnelled untouched (record), 502 (replay)"},
        {"connect-to", 1, NULL, NULL, add_connect_to,
         "HOST:PORT:HOST2:PORT2: that authority's traffic goes to another address"},
        {"upstream-cacert", 1, &o->upstream_cacert, NULL, NULL,
         "PEM file: CAs trusted for upstream TLS"},
        {"verbose", 0, NULL, &o->verbose, NULL, "log every request"},
        {"quiet", 0, NULL, &o->quiet, NULL, "log errors only"},
    };
    const size_t nflags = sizeof flags / sizeof flags[0];
    char err[APISIM_ERR_LEN];
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            server_usage(stdout, o->command, flags, nflags);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "apisim %s: unexpected argument \"%s\" (see apisim %s --help)\n",
                    o->command, arg, o->command);
            return -1;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const struct flag *f = NULL;
        for (size_t k = 0; k < nflags; k++)
            if (strlen(flags[k].name) == nlen && strncmp(flags[k].name, name, nlen) == 0)
                f = &flags[k];
        if (!f || !flag_allowed(o->command, f->name)) {
            fprintf(stderr, "apisim %s: unknown option --%.*s (see apisim %s --help)\n", o->command,
                    (int)nlen, name, o->command);
            return -1;
        }
        const char *value = NULL;
        if (f->takes_value) {
            if (eq)
                value = eq + 1;
            else if (i + 1 < argc)
                value = argv[++i];
            else {
                fprintf(stderr, "apisim %s: option --%s needs a value\n", o->command, f->name);
                return -1;
            }
        } else if (eq) {
            fprintf(stderr, "apisim %s: option --%s takes no value\n", o->command, f->name);
            return -1;
        }
        if (f->value) {
            *f->value = value;
        } else if (f->boolean) {
            *f->boolean = 1;
        } else if (f->add(o, value, err) < 0) {
            fprintf(stderr, "apisim %s: --%s: %s\n", o->command, f->name,
                    err[0] ? err : "out of memory");
            return -1;
        }
        err[0] = '\0';
    }
    return 0;
}

static char *read_small_file(const char *path, size_t cap, size_t *len, char *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, APISIM_ERR_LEN, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct buf b = {.max = cap};
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (buf_append(&b, chunk, n) < 0) {
            snprintf(err, APISIM_ERR_LEN, "%s is larger than %zu bytes", path, cap);
            buf_free(&b);
            fclose(f);
            return NULL;
        }
    fclose(f);
    return buf_steal(&b, len);
}

/* Load --config, then put the flags on top of it (flags win). Returns an exit status
 * (0 when all is well). */
static int build_config(struct options *o)
{
    char err[APISIM_ERR_LEN];
    struct config flags_cfg = o->cfg; /* what the repeated flags collected */
    memset(&o->cfg, 0, sizeof o->cfg);
    int rc = EXIT_USAGE;
    if (o->config_file) {
        size_t len;
        char *text = read_small_file(o->config_file, MAX_CONFIG_FILE, &len, err);
        if (!text) {
            fprintf(stderr, "apisim %s: --config: %s\n", o->command, err);
            goto out;
        }
        int r = config_parse(text, len, &o->cfg, err);
        free(text);
        if (r < 0) {
            fprintf(stderr, "apisim %s: --config %s: %s\n", o->command, o->config_file, err);
            goto out;
        }
    }
    /* Match: flags replace the file's field list and add to its lists. */
    if (o->match) {
        unsigned fields;
        if (match_parse_fields(o->match, &fields, err) < 0) {
            fprintf(stderr, "apisim %s: --match: %s\n", o->command, err);
            goto out;
        }
        o->cfg.has_match = 1;
        o->cfg.match.fields = fields;
    }
    if (flags_cfg.has_match) {
        if (!o->cfg.has_match) {
            o->cfg.has_match = 1;
            o->cfg.match.fields = MATCH_ALL;
        }
        for (size_t i = 0; i < flags_cfg.match.nheaders; i++)
            match_add_header(&o->cfg.match, flags_cfg.match.headers[i]);
        for (size_t i = 0; i < flags_cfg.match.nignore_query; i++)
            match_add_ignore_query(&o->cfg.match, flags_cfg.match.ignore_query[i]);
        for (size_t i = 0; i < flags_cfg.match.nignore_json; i++)
            match_add_ignore_json(&o->cfg.match, flags_cfg.match.ignore_json[i]);
    }
    if (o->cfg.has_match && o->cfg.match.fields == 0)
        o->cfg.match.fields = MATCH_ALL;
    for (size_t i = 0; i < flags_cfg.redact.nheaders; i++)
        redact_add_header(&o->cfg.redact, flags_cfg.redact.headers[i]);
    for (size_t i = 0; i < flags_cfg.redact.nquery; i++)
        redact_add_query(&o->cfg.redact, flags_cfg.redact.query[i]);
    for (size_t i = 0; i < flags_cfg.redact.njson; i++)
        redact_add_json(&o->cfg.redact, flags_cfg.redact.json[i]);
    if (o->latency) {
        if (latency_parse(o->latency, &o->cfg.latency, err) < 0) {
            fprintf(stderr, "apisim %s: --latency: %s\n", o->command, err);
            goto out;
        }
        o->cfg.has_latency = 1;
    }
    if (o->faults) {
        /* Like --latency, the flag replaces the file's top level (routes keep their own). */
        fault_set_free(&o->cfg.faults);
        if (fault_parse(o->faults, &o->cfg.faults, err) < 0) {
            fprintf(stderr, "apisim %s: --faults: %s\n", o->command, err);
            goto out;
        }
    }
    rc = 0;
out:
    config_free(&flags_cfg);
    return rc;
}

static int parse_u64(const char *cmd, const char *flag, const char *v, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (!*v || *end || errno || v[0] == '-') {
        fprintf(stderr, "apisim %s: --%s \"%s\": expected a non-negative integer\n", cmd, flag, v);
        return -1;
    }
    *out = n;
    return 0;
}

static int run_server(int argc, char **argv)
{
    struct options o = {.command = argv[1]};
    char err[APISIM_ERR_LEN];
    int rc = EXIT_USAGE;
    struct store *store = NULL;
    struct proxy *proxy = NULL;
    struct replay *replay = NULL;
    struct server *srv = NULL;
    int is_record = strcmp(o.command, "record") == 0;
    int is_mock = strcmp(o.command, "mock") == 0;

    int pr = parse_flags(&o, argc, argv);
    if (pr != 0) {
        rc = pr > 0 ? 0 : EXIT_USAGE;
        goto out;
    }
    if (o.quiet)
        log_set_level(LOG_ERROR);
    else if (o.verbose)
        log_set_level(LOG_DEBUG);
    if (build_config(&o) != 0)
        goto out;

    int64_t timeout_us = 60 * 1000000LL, client_timeout_us = 30 * 1000000LL;
    size_t max_body = 64u * 1024 * 1024, max_record = 64u * 1024 * 1024;
    uint64_t seed = 1, threads = 0, max_conn = 1024, journal_max = 0;
    if ((o.upstream_timeout && parse_duration_us(o.upstream_timeout, &timeout_us, err) < 0) ||
        (o.client_timeout && parse_duration_us(o.client_timeout, &client_timeout_us, err) < 0) ||
        (o.max_body && parse_size(o.max_body, &max_body, err) < 0) ||
        (o.max_record_body && parse_size(o.max_record_body, &max_record, err) < 0)) {
        fprintf(stderr, "apisim %s: %s\n", o.command, err);
        goto out;
    }
    if (client_timeout_us <= 0) {
        fprintf(stderr, "apisim %s: --client-timeout must be above zero (e.g. 30s)\n", o.command);
        goto out;
    }
    if ((o.seed && parse_u64(o.command, "seed", o.seed, &seed) < 0) ||
        (o.threads && parse_u64(o.command, "threads", o.threads, &threads) < 0) ||
        (o.max_connections &&
         parse_u64(o.command, "max-connections", o.max_connections, &max_conn) < 0) ||
        (o.journal_max && parse_u64(o.command, "journal-max", o.journal_max, &journal_max) < 0))
        goto out;

    enum on_miss on_miss = ON_MISS_ERROR;
    if (o.on_miss) {
        if (strcmp(o.on_miss, "error") == 0)
            on_miss = ON_MISS_ERROR;
        else if (strcmp(o.on_miss, "forward") == 0)
            on_miss = ON_MISS_FORWARD;
        else if (strcmp(o.on_miss, "record") == 0)
            on_miss = ON_MISS_RECORD;
        else {
            fprintf(stderr, "apisim %s: --on-miss \"%s\": expected error, forward or record\n",
                    o.command, o.on_miss);
            goto out;
        }
        if (on_miss != ON_MISS_ERROR && !o.upstream) {
            fprintf(stderr, "apisim %s: --on-miss %s needs --upstream URL\n", o.command, o.on_miss);
            goto out;
        }
    }
    enum sequence_end seq_end = SEQUENCE_REPEAT_LAST;
    if (o.sequence_end) {
        if (strcmp(o.sequence_end, "repeat-last") == 0)
            seq_end = SEQUENCE_REPEAT_LAST;
        else if (strcmp(o.sequence_end, "cycle") == 0)
            seq_end = SEQUENCE_CYCLE;
        else if (strcmp(o.sequence_end, "error") == 0)
            seq_end = SEQUENCE_ERROR;
        else {
            fprintf(stderr,
                    "apisim %s: --sequence-end \"%s\": expected repeat-last, cycle or error\n",
                    o.command, o.sequence_end);
            goto out;
        }
    }
    if (o.listen && server_check_listen(o.listen, err) < 0) {
        fprintf(stderr, "apisim %s: %s\n", o.command, err);
        goto out;
    }
    if (o.upstream_cacert && access(o.upstream_cacert, R_OK) != 0) {
        fprintf(stderr, "apisim %s: --upstream-cacert %s: %s\n", o.command, o.upstream_cacert,
                strerror(errno));
        goto out;
    }
    char ca_dir[4096];
    if (!is_mock) {
        if (o.ca_dir && !o.ca_dir[0]) {
            fprintf(stderr, "apisim %s: --ca-dir needs a directory\n", o.command);
            goto out;
        }
        if (!o.ca_dir && ca_default_dir(ca_dir, sizeof ca_dir, err) < 0) {
            fprintf(stderr, "apisim %s: %s\n", o.command, err);
            goto out;
        }
    }
    if (o.upstream && proxy_check_upstream(o.upstream, err) < 0) {
        fprintf(stderr, "apisim %s: %s\n", o.command, err);
        goto out;
    }
    struct quota_state *quota = NULL;
    if (o.quota && quota_from_preset(o.quota, 2000, &quota, err) < 0) {
        fprintf(stderr, "apisim %s: --quota: %s\n", o.command, err);
        goto out;
    }

    /* From here on, failures are runtime failures. */
    rc = EXIT_RUNTIME;
    const char *session = o.session ? o.session : (is_record ? "default" : NULL);
    const char *db = o.db ? o.db : "apisim.db";
    int writes = is_record || on_miss == ON_MISS_RECORD;
    if (!is_mock) {
        if (store_open(&store, db, writes ? STORE_CREATE : STORE_READONLY, err) < 0 ||
            (writes && store_writer_start(store, err) < 0)) {
            fprintf(stderr, "apisim %s: %s\n", o.command, err);
            quota_free(quota);
            goto out;
        }
    }
    struct match_rules default_rules = {.fields = MATCH_ALL};
    if (o.upstream || is_record) {
        const char *rec_session = session ? session : "default";
        struct proxy_options po = {.upstream = o.upstream,
                                   .store = store,
                                   .session = rec_session,
                                   .redact = &o.cfg.redact,
                                   .match = o.cfg.has_match ? &o.cfg.match : &default_rules,
                                   .upstream_timeout_us = timeout_us,
                                   .max_record_body = max_record,
                                   .insecure = o.insecure,
                                   .connect_to = (const char *const *)o.connect_to,
                                   .upstream_cacert = o.upstream_cacert};
        if ((writes && store_ensure_session(store, rec_session, o.upstream, err) < 0) ||
            proxy_new(&proxy, &po, err) < 0) {
            fprintf(stderr, "apisim %s: %s\n", o.command, err);
            quota_free(quota);
            goto out;
        }
    }
    struct replay_options ro = {.store = store,
                                .session = session,
                                .config = &o.cfg,
                                .sequence_end = seq_end,
                                .seed = seed,
                                .mode = o.command,
                                .on_miss = on_miss,
                                .proxy = proxy,
                                .journal_max = (size_t)journal_max,
                                .client_timeout_us = client_timeout_us};
    if (is_record) {
        /* A recorder answers from stubs and the quota fixture first, like a mock. */
        ro.store = NULL;
        ro.record_stream = 1;
    }
    if (replay_new(&replay, &ro, err) < 0) {
        fprintf(stderr, "apisim %s: %s\n", o.command, err);
        quota_free(quota);
        goto out;
    }
    if (quota)
        replay_set_quota(replay, quota);
    if (o.stubs) {
        if (admin_load_stubs_file(replay, o.stubs, err) < 0) {
            fprintf(stderr, "apisim %s: --stubs: %s\n", o.command, err);
            rc = EXIT_USAGE;
            goto out;
        }
        replay_keep_stubs(replay);
    }

    struct front_config fc = {.ca_dir = o.ca_dir ? o.ca_dir : ca_dir,
                              .no_intercept = (const char *const *)o.no_intercept,
                              .passthrough = is_record,
                              .connect_to = (const char *const *)o.connect_to,
                              .idle_timeout_us = client_timeout_us};
    struct server_options so = {
        .listen = o.listen ? o.listen : "127.0.0.1:8080",
        .max_body = max_body,
        .max_connections = (unsigned)max_conn,
        .client_timeout_us = client_timeout_us,
        .threads = (unsigned)threads,
        .admin_token = o.admin_token,
        .handle = replay_handle,
        .handle_admin = admin_handle,
        .app = replay,
        .admin_app = replay,
        .front = is_mock ? NULL : &fc,
    };
    if (server_start(&srv, &so, err) < 0) {
        fprintf(stderr, "apisim %s: %s\n", o.command, err);
        goto out;
    }
    printf("listening on %s\n", server_url(srv));
    fflush(stdout);
    log_msg(LOG_INFO, "%s: %s%s%s", o.command, is_mock ? "mock server" : db,
            o.upstream ? " <-> " : "", o.upstream ? o.upstream : "");
    server_wait_for_signal(srv);
    proxy_stop(proxy); /* wakes what still waits on an upstream: the server then stops */
    server_free(srv);
    srv = NULL;
    rc = 0;
    store_writer_stop(store); /* what is still queued or held is stored (or counted) first */
    if (store && store_write_failures(store) > 0) {
        log_msg(LOG_ERROR, "%llu exchanges could not be stored (see the errors above)",
                (unsigned long long)store_write_failures(store));
        rc = EXIT_RUNTIME;
    }
    uint64_t misses = replay ? replay_misses(replay) : 0;
    if (misses)
        log_msg(LOG_WARN, "%llu request(s) matched no recorded exchange",
                (unsigned long long)misses);
    if (o.strict && misses)
        rc = EXIT_STRICT;
out:
    server_free(srv);
    replay_free(replay);
    proxy_free(proxy);
    store_close(store); /* commits whatever the writer still holds */
    config_free(&o.cfg);
    for (size_t i = 0; i < o.nno_intercept; i++)
        free(o.no_intercept[i]);
    for (size_t i = 0; i < o.nconnect_to; i++)
        free(o.connect_to[i]);
    return rc;
}

/* apisim ca [--ca-dir DIR]: make the CA when missing and print its certificate's path. */
static int ca_main(int argc, char **argv)
{
    const char *dir = NULL;
    char def[4096], err[APISIM_ERR_LEN];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: apisim ca [--ca-dir DIR]\n"
                   "makes apisim's CA when missing (what record and replay use to intercept "
                   "HTTPS)\nand prints the path of its certificate, for clients to trust.\n"
                   "DIR defaults to $APISIM_CA_DIR, else $XDG_CONFIG_HOME/apisim/ca, else "
                   "~/.config/apisim/ca\n");
            return 0;
        }
        if (strncmp(argv[i], "--ca-dir=", 9) == 0) {
            dir = argv[i] + 9;
        } else if (strcmp(argv[i], "--ca-dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else {
            fprintf(stderr,
                    "apisim ca: unexpected argument \"%s\" (usage: apisim ca [--ca-dir DIR])\n",
                    argv[i]);
            return EXIT_USAGE;
        }
    }
    if (!dir || !dir[0]) {
        if (dir || ca_default_dir(def, sizeof def, err) < 0) {
            fprintf(stderr, "apisim ca: %s\n", dir ? "--ca-dir needs a directory" : err);
            return EXIT_USAGE;
        }
        dir = def;
    }
    struct ca *ca = NULL;
    int created = 0;
    if (ca_open(&ca, dir, &created, err) < 0) {
        fprintf(stderr, "apisim ca: %s\n", err);
        return EXIT_RUNTIME;
    }
    if (created)
        log_msg(LOG_INFO, "made a new CA in %s", dir);
    printf("%s\n", ca_cert_path(ca));
    ca_free(ca);
    return 0;
}

static void usage(FILE *f)
{
    fputs("usage: apisim COMMAND [options]\n"
          "\n"
          "servers (print \"listening on http://HOST:PORT\" first; stop with SIGINT/SIGTERM):\n"
          "  record   [--upstream URL] [--db FILE] [--session NAME] forward (or proxy) and record\n"
          "  replay   [--db FILE] [--session NAME] [--latency SPEC]  answer from a recording\n"
          "  mock     [--stubs FILE] [--quota PRESET]                programmable mock server\n"
          "recordings:\n"
          "  ls       [--db FILE] [--session NAME] [--json]          list exchanges\n"
          "  show     [--db FILE] ID                                 print one exchange\n"
          "  export   [--db FILE] [--session NAME] --format har|jsonl|sql [--output FILE]\n"
          "  import   [--db FILE] [--session NAME] [--max-body SIZE] FILE   read HAR or JSONL\n"
          "  init     [--db FILE]                                    create or upgrade a database\n"
          "  ca       [--ca-dir DIR]                                 make/print the CA for HTTPS\n"
          "session fixtures:\n"
          "  claude   [claude arguments]                             a fake claude CLI\n"
          "  claude-record [--db FILE] -- COMMAND [ARGS...]          record a real CLI run\n"
          "\n"
          "run `apisim COMMAND --help` for a command's options.\n",
          f);
}

int main(int argc, char **argv)
{
    /* Run as `claude` through a link: the fake CLI. */
    char *self = strdup(argv[0] ? argv[0] : "apisim");
    int as_claude = self && strcmp(basename(self), "claude") == 0;
    free(self);
    if (as_claude)
        return claude_main(argc, argv);
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    /* SQLite's memory statistics take one global mutex on every allocation, shared by all
     * reader threads; apisim never reads them. */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("apisim %s\n", APISIM_VERSION);
        return 0;
    }
    if (strcmp(cmd, "claude") == 0)
        return claude_main(argc - 1, argv + 1);
    if (strcmp(cmd, "claude-record") == 0)
        return claude_record_main(argc - 1, argv + 1);
    if (strcmp(cmd, "ls") == 0)
        return ls_main(argc - 1, argv + 1);
    if (strcmp(cmd, "show") == 0)
        return show_main(argc - 1, argv + 1);
    if (strcmp(cmd, "export") == 0)
        return export_main(argc - 1, argv + 1);
    if (strcmp(cmd, "import") == 0)
        return import_main(argc - 1, argv + 1);
    if (strcmp(cmd, "init") == 0)
        return init_main(argc - 1, argv + 1);
    if (strcmp(cmd, "ca") == 0)
        return ca_main(argc - 1, argv + 1);
    if (strcmp(cmd, "record") == 0 || strcmp(cmd, "replay") == 0 || strcmp(cmd, "mock") == 0) {
        /* Signals are taken by sigwait in the main thread: block them before any thread. */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        signal(SIGPIPE, SIG_IGN);
        curl_global_init(CURL_GLOBAL_DEFAULT);
        int rc = run_server(argc, argv);
        curl_global_cleanup();
        return rc;
    }
    fprintf(stderr, "apisim: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return EXIT_USAGE;
}
