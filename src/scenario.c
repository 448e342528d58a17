/* scenario — scenario files and presets of the fake claude CLI, built into runs.
 *
 * Generated records start from templates cut from the real CLI's output
 * (../shared/reference/claude-stream-json/), so field names, types and order stay those of
 * the real thing; only values (ids, text, model, timings) are replaced in place.
 */
#include "scenario.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* success.jsonl line 1: the init record */
static const char TPL_INIT[] =
    "{\"type\":\"system\",\"subtype\":\"init\",\"cwd\":\"\",\"session_id\":\"\","
    "\"tools\":[\"Task\",\"Bash\",\"CronCreate\",\"CronDelete\",\"CronList\","
    "\"Edit\",\"EnterWorktree\",\"ExitWorktree\",\"NotebookEdit\",\"Read\","
    "\"ReportFindings\",\"ScheduleWakeup\",\"SendMessage\",\"Skill\",\"TaskCreate\","
    "\"TaskGet\",\"TaskList\",\"TaskOutput\",\"TaskStop\",\"TaskUpdate\",\"WebFetch\","
    "\"WebSearch\",\"Workflow\",\"Write\"],\"mcp_servers\":[],\"model\":\"\","
    "\"permissionMode\":\"default\",\"slash_commands\":[\"deep-research\",\"update-config\","
    "\"verify\",\"debug\",\"code-review\",\"simplify\",\"batch\",\"fewer-permission-prompts\","
    "\"loop\",\"claude-api\",\"run\",\"run-skill-generator\",\"clear\",\"compact\","
    "\"config\",\"context\",\"heapdump\",\"init\",\"reload-skills\",\"review\","
    "\"security-review\",\"usage\",\"insights\",\"goal\",\"team-onboarding\"],"
    "\"apiKeySource\":\"ANTHROPIC_API_KEY\",\"claude_code_version\":\"2.1.197\","
    "\"output_style\":\"default\",\"agents\":[\"claude\",\"Explore\",\"general-purpose\","
    "\"Plan\",\"statusline-setup\"],\"skills\":[\"deep-research\",\"update-config\","
    "\"verify\",\"debug\",\"code-review\",\"simplify\",\"batch\",\"fewer-permission-prompts\","
    "\"loop\",\"claude-api\",\"run\",\"run-skill-generator\"],\"plugins\":[],"
    "\"analytics_disabled\":true,\"product_feedback_disabled\":true,\"uuid\":\"\","
    "\"memory_paths\":{\"auto\":\"\"},\"fast_mode_state\":\"off\"}";

/* success.jsonl line 2: an assistant message */
static const char TPL_ASSISTANT[] =
    "{\"type\":\"assistant\",\"message\":{\"id\":\"\",\"type\":\"message\","
    "\"role\":\"assistant\",\"model\":\"\",\"content\":[{\"type\":\"text\","
    "\"text\":\"\"}],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,"
    "\"output_tokens\":1},\"context_management\":null},\"parent_tool_use_id\":null,"
    "\"session_id\":\"\",\"uuid\":\"\",\"request_id\":\"\"}";

/* a tool result, as the CLI writes it after running a tool */
static const char TPL_TOOL_RESULT[] =
    "{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":[{\"tool_use_id\":\"\","
    "\"type\":\"tool_result\",\"content\":\"README.md\\nsrc\\ntests\",\"is_error\":false}]},"
    "\"parent_tool_use_id\":null,\"session_id\":\"\",\"uuid\":\"\",\"timestamp\":\"\","
    "\"tool_use_result\":{\"stdout\":\"README.md\\nsrc\\ntests\",\"stderr\":\"\","
    "\"interrupted\":false,\"isImage\":false,\"noOutputExpected\":false}}";

/* success.jsonl line 3: the result record */
static const char TPL_RESULT[] =
    "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"api_error_status\":null,"
    "\"duration_ms\":453,\"duration_api_ms\":265,\"ttft_ms\":342,\"ttft_stream_ms\":191,"
    "\"time_to_request_ms\":177,\"num_turns\":1,\"result\":\"\",\"stop_reason\":\"end_turn\","
    "\"session_id\":\"\",\"total_cost_usd\":0.000171,\"usage\":{\"input_tokens\":12,"
    "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":9,"
    "\"server_tool_use\":{\"web_search_requests\":0,\"web_fetch_requests\":0},"
    "\"service_tier\":\"standard\",\"cache_creation\":{\"ephemeral_1h_input_tokens\":0,"
    "\"ephemeral_5m_input_tokens\":0},\"inference_geo\":\"\",\"iterations\":[],"
    "\"speed\":\"standard\"},\"modelUsage\":{},\"permission_denials\":[],\"terminal_reason\":"
    "\"completed\","
    "\"fast_mode_state\":\"off\",\"uuid\":\"\"}";

/* success.jsonl line 3: one model's entry in modelUsage */
static const char TPL_MODEL_USAGE[] =
    "{\"inputTokens\":12,\"outputTokens\":9,\"cacheReadInputTokens\":0,"
    "\"cacheCreationInputTokens\":0,"
    "\"webSearchRequests\":0,\"costUSD\":0.000171,\"contextWindow\":200000,"
    "\"maxOutputTokens\":32000}";

/* api-retry-exhausted-529.jsonl line 2: an API retry */
static const char TPL_API_RETRY[] =
    "{\"type\":\"system\",\"subtype\":\"api_retry\",\"attempt\":1,\"max_retries\":2,"
    "\"retry_delay_ms\":512.9131825926346,\"error_status\":529,\"error\":\"overloaded\","
    "\"session_id\":\"\",\"uuid\":\"\"}";

/* api-retry-exhausted-529.jsonl line 4: the synthetic message of an API error */
static const char TPL_API_ERROR[] =
    "{\"type\":\"assistant\",\"message\":{\"id\":\"\",\"container\":null,\"model\":\"<synthetic>\","
    "\"role\":\"assistant\",\"stop_details\":null,\"stop_reason\":\"stop_sequence\","
    "\"stop_sequence\":\"\",\"type\":\"message\",\"usage\":{\"input_tokens\":0,"
    "\"output_tokens\":0,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
    "\"server_tool_use\":{\"web_search_requests\":0,\"web_fetch_requests\":0},"
    "\"service_tier\":null,\"cache_creation\":{\"ephemeral_1h_input_tokens\":0,"
    "\"ephemeral_5m_input_tokens\":0},\"inference_geo\":null,\"iterations\":null,"
    "\"speed\":null},\"content\":[{\"type\":\"text\",\"text\":\"\"}],\"context_management\":null},"
    "\"parent_tool_use_id\":null,\"session_id\":\"\",\"uuid\":\"\",\"error\":\"\"}";

/* api-retry-exhausted-529.jsonl line 5: the result of an API error */
static const char TPL_API_ERROR_RESULT[] =
    "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":true,\"api_error_status\":529,"
    "\"duration_ms\":1976,\"duration_api_ms\":0,\"num_turns\":1,\"result\":\"\","
    "\"stop_reason\":\"stop_sequence\",\"session_id\":\"\",\"total_cost_usd\":0,"
    "\"usage\":{\"input_tokens\":0,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
    "\"output_tokens\":0,\"server_tool_use\":{\"web_search_requests\":0,\"web_fetch_requests\":0},"
    "\"service_tier\":\"standard\",\"cache_creation\":{\"ephemeral_1h_input_tokens\":0,"
    "\"ephemeral_5m_input_tokens\":0},\"inference_geo\":\"\",\"iterations\":[],"
    "\"speed\":\"standard\"},\"modelUsage\":{},\"permission_denials\":[],\"terminal_reason\":"
    "\"completed\","
    "\"fast_mode_state\":\"off\",\"uuid\":\"\"}";

/* What a record of the stream is made from. */
enum rec_kind {
    REC_JSON,               /* a record of the scenario file, written as given */
    REC_INIT,               /* the system/init record */
    REC_ASSISTANT_TEXT,     /* an assistant message with one text block */
    REC_ASSISTANT_TOOL_USE, /* an assistant message calling the Bash tool */
    REC_TOOL_RESULT,        /* the user record carrying that tool's result */
    REC_RESULT,             /* a successful result */
    REC_RESULT_MAX_TURNS,   /* the result of a run stopped by --max-turns */
    REC_API_RETRY,          /* system/api_retry */
    REC_API_ERROR,          /* the synthetic assistant message of an API error */
    REC_API_ERROR_RESULT,   /* the result record of an API error */
};

struct rec {
    enum rec_kind kind;
    cJSON *json;      /* REC_JSON: the record (owned) */
    const char *text; /* REC_ASSISTANT_TEXT: static text */
    int status;       /* REC_API_*: HTTP status of the failed API call */
    int attempt;      /* REC_API_RETRY: 1-based */
    int max_retries;  /* REC_API_RETRY */
};

struct scenario {
    char *name;
    char *session_id; /* NULL: from the context or fresh */
    char *model;      /* NULL: from the context or the default */
    struct rec *recs;
    size_t nrecs;
    int64_t *delay_us;   /* nrecs + 1 waits, one before each position */
    long corrupt_at;     /* -1 when none */
    int corrupt_replace; /* 1: the corrupt line takes the place of record corrupt_at (files);
                            0: it comes before it (presets) */
    char *corrupt_text;
    long truncate_after; /* -1 when none */
    long exit_at;        /* -1 when none */
    int exit_at_code;
    int hang;
    char *stderr_text;
    int exit_code;
};

static int fail(char *err, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, const char *name, const char *fmt, ...)
{
    int n = snprintf(err, APISIM_ERR_LEN, "scenario %s: ", name);
    if (n < 0 || n >= APISIM_ERR_LEN)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, APISIM_ERR_LEN - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *json_kind(const cJSON *v)
{
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsNull(v))
        return "null";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsObject(v))
        return "an object";
    return "not JSON";
}

void scenario_free(struct scenario *sc)
{
    if (!sc)
        return;
    for (size_t i = 0; i < sc->nrecs; i++)
        cJSON_Delete(sc->recs[i].json);
    free(sc->recs);
    free(sc->delay_us);
    free(sc->name);
    free(sc->session_id);
    free(sc->model);
    free(sc->corrupt_text);
    free(sc->stderr_text);
    free(sc);
}

static struct scenario *scenario_alloc(const char *name, size_t cap)
{
    struct scenario *sc = calloc(1, sizeof *sc);
    if (!sc)
        return NULL;
    sc->corrupt_at = sc->truncate_after = sc->exit_at = -1;
    sc->name = strdup(name);
    sc->recs = calloc(cap ? cap : 1, sizeof *sc->recs);
    sc->delay_us = calloc(cap + 1, sizeof *sc->delay_us);
    if (!sc->name || !sc->recs || !sc->delay_us) {
        scenario_free(sc);
        return NULL;
    }
    return sc;
}

/* ---- parsing a scenario file ---------------------------------------------------------- */

/* An integer in [lo, hi], or -1 with err naming what. */
static int want_int(const cJSON *v, const char *name, const char *what, long lo, long hi, long *out,
                    char *err)
{
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi)
        return fail(err, name, "%s must be an integer from %ld to %ld (it is %s)", what, lo, hi,
                    cJSON_IsNumber(v) ? "out of range" : json_kind(v));
    *out = (long)v->valuedouble;
    return 0;
}

static int want_string(const cJSON *v, const char *name, const char *what, char **out, char *err)
{
    if (!cJSON_IsString(v))
        return fail(err, name, "%s must be a string (it is %s)", what, json_kind(v));
    char *s = strdup(v->valuestring);
    if (!s)
        return fail(err, name, "out of memory");
    free(*out);
    *out = s;
    return 0;
}

/* Check that every member of obj is one of the NULL-terminated keys. */
static int check_keys(const cJSON *obj, const char *name, const char *what, const char *const *keys,
                      char *err)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, obj)
    {
        size_t i = 0;
        while (keys[i] && strcmp(keys[i], it->string) != 0)
            i++;
        if (!keys[i])
            return fail(err, name, "unknown key \"%s\" in %s", it->string, what);
    }
    return 0;
}

static int is_init(const cJSON *rec)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rec, "type");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(rec, "subtype");
    return cJSON_IsString(t) && strcmp(t->valuestring, "system") == 0 && cJSON_IsString(s) &&
           strcmp(s->valuestring, "init") == 0;
}

/* Line and column (1-based) of byte off in text. */
static void text_position(const char *text, size_t off, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

struct retry_opts {
    long at, status, attempts;
    int exhaust, present;
};

static int parse_retry(const cJSON *v, const char *name, struct retry_opts *ro, char *err)
{
    static const char *const keys[] = {"at", "status", "attempts", "exhaust", NULL};
    if (!cJSON_IsObject(v))
        return fail(err, name, "api_retry must be an object (it is %s)", json_kind(v));
    if (check_keys(v, name, "api_retry", keys, err) < 0)
        return -1;
    ro->present = 1;
    ro->at = 0;
    ro->status = 529;
    ro->attempts = 3;
    const cJSON *it;
    cJSON_ArrayForEach(it, v)
    {
        const char *k = it->string;
        if (strcmp(k, "at") == 0) {
            if (want_int(it, name, "api_retry.at", 0, SCENARIO_MAX_RECORDS, &ro->at, err) < 0)
                return -1;
        } else if (strcmp(k, "status") == 0) {
            if (want_int(it, name, "api_retry.status", 100, 599, &ro->status, err) < 0)
                return -1;
        } else if (strcmp(k, "attempts") == 0) {
            if (want_int(it, name, "api_retry.attempts", 1, 100, &ro->attempts, err) < 0)
                return -1;
        } else {
            if (!cJSON_IsBool(it))
                return fail(err, name, "api_retry.exhaust must be true or false (it is %s)",
                            json_kind(it));
            ro->exhaust = cJSON_IsTrue(it);
        }
    }
    return 0;
}

/* Where the positions of a scenario file (0 = the first of "records") land in the stream
 * built from it (init prepended, api_retry records inserted). */
struct positions {
    size_t nmsgs; /* records in the file */
    size_t off;   /* 1 when an init record was prepended */
    struct retry_opts ro;
};

/* The stream index of message m (0..nmsgs; nmsgs is the end), or nrecs when message m is
 * never written (exhausted retries before it). */
static size_t stream_pos(const struct scenario *sc, const struct positions *pp, size_t m)
{
    const struct retry_opts *ro = &pp->ro;
    if (ro->present && ro->exhaust && m >= (size_t)ro->at)
        return sc->nrecs;
    return pp->off + m + (ro->present && m >= (size_t)ro->at ? (size_t)ro->attempts : 0);
}

/* Append the api_retry records of ro to sc->recs (room for them is there). */
static void add_retries(struct scenario *sc, const struct retry_opts *ro)
{
    for (long a = 1; a <= ro->attempts; a++) {
        struct rec *r = &sc->recs[sc->nrecs++];
        r->kind = REC_API_RETRY;
        r->status = (int)ro->status;
        r->attempt = (int)a;
        r->max_retries =
            ro->exhaust ? (int)ro->attempts : (ro->attempts < 10 ? 10 : (int)ro->attempts);
    }
}

/* The records of the file, init prepended and API retries inserted before message ro->at,
 * into sc->recs. */
static int build_records(struct scenario *sc, cJSON *records, struct positions *pp, char *err)
{
    const struct retry_opts *ro = &pp->ro;
    size_t n = (size_t)cJSON_GetArraySize(records);
    size_t i = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, records)
    {
        if (!cJSON_IsObject(it))
            return fail(err, sc->name, "records[%zu] is not a JSON object (it is %s)", i,
                        json_kind(it));
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(it, "type")))
            return fail(err, sc->name, "records[%zu] has no \"type\" string", i);
        i++;
    }
    int has_init = n > 0 && is_init(cJSON_GetArrayItem(records, 0));
    size_t total = n + (has_init ? 0 : 1);
    pp->nmsgs = n;
    pp->off = has_init ? 0 : 1;
    if (ro->present) {
        if ((size_t)ro->at > n)
            return fail(err, sc->name,
                        "api_retry.at %ld is past the %zu records (positions count \"records\" "
                        "from 0; %zu means after the last)",
                        ro->at, n, n);
        total += (size_t)ro->attempts;
    }
    if (total > SCENARIO_MAX_RECORDS)
        return fail(err, sc->name, "more than %d records", SCENARIO_MAX_RECORDS);
    struct rec *recs = calloc(total, sizeof *recs);
    int64_t *delays = calloc(total + 1, sizeof *delays);
    if (!recs || !delays) {
        free(recs);
        free(delays);
        return fail(err, sc->name, "out of memory");
    }
    free(sc->recs);
    free(sc->delay_us);
    sc->recs = recs;
    sc->delay_us = delays;
    sc->nrecs = 0;
    if (!has_init)
        sc->recs[sc->nrecs++].kind = REC_INIT;
    for (size_t m = 0; m <= n; m++) {
        if (ro->present && m == (size_t)ro->at) {
            add_retries(sc, ro);
            if (ro->exhaust)
                return 0; /* the API never answered: nothing from message at on is written */
        }
        if (m == n)
            break;
        struct rec *r = &sc->recs[sc->nrecs++];
        r->kind = REC_JSON;
        r->json = cJSON_DetachItemViaPointer(records, records->child);
    }
    return 0;
}

static int parse_delays(struct scenario *sc, const struct positions *pp, const cJSON *v, char *err)
{
    if (!cJSON_IsObject(v))
        return fail(err, sc->name, "delays_ms must be an object of \"INDEX\": MS (it is %s)",
                    json_kind(v));
    const cJSON *it;
    cJSON_ArrayForEach(it, v)
    {
        const char *k = it->string;
        char *end = NULL;
        unsigned long idx = 0;
        if (k[0] >= '0' && k[0] <= '9' && strlen(k) <= 6)
            idx = strtoul(k, &end, 10);
        if (!end || *end != '\0')
            return fail(err, sc->name, "delays_ms key \"%s\" is not a record index", k);
        if (idx > pp->nmsgs)
            return fail(err, sc->name,
                        "delays_ms key \"%s\" is past the %zu records (%zu waits before the end)",
                        k, pp->nmsgs, pp->nmsgs);
        if (!cJSON_IsNumber(it) || !(it->valuedouble >= 0) ||
            it->valuedouble > SCENARIO_MAX_DELAY_MS)
            return fail(err, sc->name,
                        "delays_ms[\"%s\"] must be a number of milliseconds from 0 to %.0f", k,
                        SCENARIO_MAX_DELAY_MS);
        size_t at = stream_pos(sc, pp, idx);
        sc->delay_us[at] += (int64_t)llround(it->valuedouble * 1000.0);
    }
    return 0;
}

static int parse_corrupt(struct scenario *sc, const struct positions *pp, const cJSON *v, char *err)
{
    static const char *const keys[] = {"at", "text", NULL};
    long at = 0;
    if (!cJSON_IsObject(v))
        return fail(err, sc->name, "corrupt must be an object (it is %s)", json_kind(v));
    if (check_keys(v, sc->name, "corrupt", keys, err) < 0)
        return -1;
    const cJSON *atv = cJSON_GetObjectItemCaseSensitive(v, "at");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(v, "text");
    if (!atv)
        return fail(err, sc->name, "corrupt needs \"at\", the record it replaces");
    if (pp->nmsgs == 0)
        return fail(err, sc->name, "corrupt.at: there is no record to replace (records is empty)");
    if (want_int(atv, sc->name, "corrupt.at", 0, (long)pp->nmsgs - 1, &at, err) < 0)
        return -1;
    if (text) {
        if (want_string(text, sc->name, "corrupt.text", &sc->corrupt_text, err) < 0)
            return -1;
        if (strchr(sc->corrupt_text, '\n'))
            return fail(err, sc->name, "corrupt.text must be one line (it has a newline)");
    }
    size_t pos = stream_pos(sc, pp, (size_t)at);
    sc->corrupt_at = pos < sc->nrecs ? (long)pos : -1; /* -1: that record is never written */
    sc->corrupt_replace = 1;
    return 0;
}

static int parse_exit_at(struct scenario *sc, const struct positions *pp, const cJSON *v, char *err)
{
    static const char *const keys[] = {"at", "code", NULL};
    if (!cJSON_IsObject(v))
        return fail(err, sc->name, "exit_at must be an object (it is %s)", json_kind(v));
    if (check_keys(v, sc->name, "exit_at", keys, err) < 0)
        return -1;
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(v, "at");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(v, "code");
    long c = 0, m = 0;
    if (!at || !code)
        return fail(err, sc->name, "exit_at needs \"at\" and \"code\"");
    if (pp->nmsgs == 0)
        return fail(err, sc->name, "exit_at.at: there is no record to exit at (records is empty)");
    if (want_int(at, sc->name, "exit_at.at", 0, (long)pp->nmsgs - 1, &m, err) < 0 ||
        want_int(code, sc->name, "exit_at.code", 0, 255, &c, err) < 0)
        return -1;
    /* Records 0..m are written, then the exit (retries before m + 1 are not). */
    size_t pos = stream_pos(sc, pp, (size_t)m);
    sc->exit_at = (long)(pos < sc->nrecs ? pos + 1 : sc->nrecs);
    sc->exit_at_code = (int)c;
    return 0;
}

/* truncate_after N: records 0..N-1 are written (not the retries before record N). */
static int parse_truncate(struct scenario *sc, const struct positions *pp, const cJSON *v,
                          char *err)
{
    long t = 0;
    if (want_int(v, sc->name, "truncate_after", 0, (long)pp->nmsgs, &t, err) < 0)
        return -1;
    const struct retry_opts *ro = &pp->ro;
    if (ro->present && ro->exhaust && t > ro->at)
        sc->truncate_after = (long)sc->nrecs;
    else
        sc->truncate_after =
            (long)(pp->off + (size_t)t + (ro->present && t > ro->at ? (size_t)ro->attempts : 0));
    return 0;
}

/* The file says which numbering its positions use: "version": 2 is the one described in
 * scenario.h. A file with positions and no version was written for the numbering before it
 * (the init record 0, api_retry records counted, corrupt inserting): refused, with how to
 * convert, rather than played with its positions off by one. */
static int check_version(const cJSON *root, const char *name, char *err)
{
    static const char *const positional[] = {"delays_ms",      "api_retry", "corrupt",
                                             "truncate_after", "exit_at",   NULL};
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "version");
    long version = 1;
    if (v && want_int(v, name, "version", 1, SCENARIO_FILE_VERSION, &version, err) < 0)
        return -1;
    if (version == SCENARIO_FILE_VERSION)
        return 0;
    for (size_t i = 0; positional[i]; i++) {
        if (cJSON_GetObjectItemCaseSensitive(root, positional[i]))
            return fail(err, name,
                        "\"%s\" is a position, and the file has no \"version\": %d: positions "
                        "now count \"records\" from 0 (the init record apisim adds is not "
                        "counted) and corrupt replaces its record; for a file of the old "
                        "numbering subtract 1 from each position unless records start with an "
                        "init record, also api_retry.attempts for positions after api_retry.at, "
                        "and 1 from exit_at.at, then add \"version\": %d",
                        positional[i], SCENARIO_FILE_VERSION, SCENARIO_FILE_VERSION);
    }
    return 0;
}

int scenario_parse(const char *text, size_t len, const char *name, struct scenario **out, char *err)
{
    static const char *const keys[] = {
        "session_id", "model",          "records", "delays_ms",         "api_retry",
        "corrupt",    "truncate_after", "exit_at", "hang_after_result", "stderr",
        "exit_code",  "version",        NULL};
    int rc = -1;
    cJSON *root = NULL;
    struct scenario *sc = NULL;
    const char *end = NULL;
    struct positions pp = {0};
    int has_exit_code = 0;

    if (!(sc = scenario_alloc(name, 0))) {
        fail(err, name, "out of memory");
        goto out;
    }
    root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (root) {
        while (end < text + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
            end++;
    }
    if (!root || end < text + len) {
        size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        size_t line, col;
        text_position(text, off, &line, &col);
        fail(err, name, "not valid JSON at line %zu column %zu%s", line, col,
             root ? " (text after the JSON value)" : "");
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        fail(err, name, "must be a JSON object with \"records\" (it is %s)", json_kind(root));
        goto out;
    }
    if (check_keys(root, name, "the scenario", keys, err) < 0)
        goto out;
    cJSON *records = cJSON_GetObjectItemCaseSensitive(root, "records");
    if (!records) {
        fail(err, name, "has no \"records\" array");
        goto out;
    }
    if (!cJSON_IsArray(records)) {
        fail(err, name, "records must be an array (it is %s)", json_kind(records));
        goto out;
    }
    if (check_version(root, name, err) < 0)
        goto out;
    const cJSON *retry = cJSON_GetObjectItemCaseSensitive(root, "api_retry");
    if (retry && parse_retry(retry, name, &pp.ro, err) < 0)
        goto out;
    if (build_records(sc, records, &pp, err) < 0)
        goto out;

    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        const char *k = it->string;
        long v = 0;
        if (strcmp(k, "session_id") == 0) {
            if (want_string(it, name, k, &sc->session_id, err) < 0)
                goto out;
            if (strlen(sc->session_id) == 0 || strlen(sc->session_id) >= SCENARIO_ID_LEN) {
                fail(err, name, "session_id must have 1 to %d characters", SCENARIO_ID_LEN - 1);
                goto out;
            }
        } else if (strcmp(k, "model") == 0) {
            if (want_string(it, name, k, &sc->model, err) < 0)
                goto out;
        } else if (strcmp(k, "delays_ms") == 0) {
            if (parse_delays(sc, &pp, it, err) < 0)
                goto out;
        } else if (strcmp(k, "corrupt") == 0) {
            if (parse_corrupt(sc, &pp, it, err) < 0)
                goto out;
        } else if (strcmp(k, "truncate_after") == 0) {
            if (parse_truncate(sc, &pp, it, err) < 0)
                goto out;
        } else if (strcmp(k, "exit_at") == 0) {
            if (parse_exit_at(sc, &pp, it, err) < 0)
                goto out;
        } else if (strcmp(k, "hang_after_result") == 0) {
            if (!cJSON_IsBool(it)) {
                fail(err, name, "hang_after_result must be true or false (it is %s)",
                     json_kind(it));
                goto out;
            }
            sc->hang = cJSON_IsTrue(it);
        } else if (strcmp(k, "stderr") == 0) {
            if (want_string(it, name, k, &sc->stderr_text, err) < 0)
                goto out;
        } else if (strcmp(k, "exit_code") == 0) {
            if (want_int(it, name, k, 0, 255, &v, err) < 0)
                goto out;
            sc->exit_code = (int)v;
            has_exit_code = 1;
        }
    }
    /* A stream cut short (truncated, retries exhausted) exits 1 unless the file says. */
    if (!has_exit_code)
        sc->exit_code = (pp.ro.present && pp.ro.exhaust) || sc->truncate_after >= 0 ? 1 : 0;
    *out = sc;
    sc = NULL;
    rc = 0;
out:
    cJSON_Delete(root);
    scenario_free(sc);
    return rc;
}

/* ---- presets ---------------------------------------------------------------------------- */

#define PRESET_MAX_RECS 8

struct preset {
    const char *name;
    struct rec recs[PRESET_MAX_RECS]; /* up to the first with kind REC_JSON (never used) */
    long corrupt_at, truncate_after, exit_at;
    int exit_at_code, hang, exit_code;
};

#define HELLO "Hello from apisim."
#define R_INIT                                                                                     \
    {                                                                                              \
        .kind = REC_INIT                                                                           \
    }
#define R_TEXT                                                                                     \
    {                                                                                              \
        .kind = REC_ASSISTANT_TEXT, .text = HELLO                                                  \
    }
#define R_TOOL_USE                                                                                 \
    {                                                                                              \
        .kind = REC_ASSISTANT_TOOL_USE                                                             \
    }
#define R_TOOL_RESULT                                                                              \
    {                                                                                              \
        .kind = REC_TOOL_RESULT                                                                    \
    }
#define R_RESULT                                                                                   \
    {                                                                                              \
        .kind = REC_RESULT                                                                         \
    }
#define R_RETRY(s, a, m)                                                                           \
    {                                                                                              \
        .kind = REC_API_RETRY, .status = (s), .attempt = (a), .max_retries = (m)                   \
    }
#define NONE -1, -1, -1

static const struct preset presets[] = {
    {"success", {R_INIT, R_TEXT, R_RESULT}, NONE, 0, 0, 0},
    {"context-exhaustion", {R_INIT, {.kind = REC_API_ERROR, .status = 400}}, NONE, 0, 0, 1},
    {"max-turns",
     {R_INIT, R_TOOL_USE, R_TOOL_RESULT, {.kind = REC_RESULT_MAX_TURNS}},
     NONE,
     0,
     0,
     1},
    {"api-retry",
     {R_INIT, R_RETRY(529, 1, 10), R_RETRY(529, 2, 10), R_TEXT, R_RESULT},
     NONE,
     0,
     0,
     0},
    {"api-retry-exhausted",
     {R_INIT,
      R_RETRY(529, 1, 2),
      R_RETRY(529, 2, 2),
      {.kind = REC_API_ERROR, .status = 529},
      {.kind = REC_API_ERROR_RESULT, .status = 529}},
     NONE,
     0,
     0,
     1},
    {"corrupt-stream", {R_INIT, R_TEXT, R_RESULT}, 2, -1, -1, 0, 0, 1},
    {"truncated", {R_INIT, R_TOOL_USE, R_TOOL_RESULT, R_TEXT, R_RESULT}, -1, 2, -1, 0, 0, 1},
    {"interrupted", {R_INIT, R_TOOL_USE, R_TOOL_RESULT, R_TEXT, R_RESULT}, -1, -1, 3, 130, 0, 130},
    {"hang-after-result", {R_INIT, R_TEXT, R_RESULT}, NONE, 0, 1, 0},
};

const char *const scenario_preset_names[] = {
    "success",   "context-exhaustion",  "max-turns",
    "api-retry", "api-retry-exhausted", "corrupt-stream",
    "truncated", "interrupted",         "hang-after-result",
    NULL};

int scenario_preset(const char *name, struct scenario **out, char *err)
{
    const struct preset *p = NULL;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (strcmp(presets[i].name, name) == 0)
            p = &presets[i];
    }
    if (!p) {
        struct buf b = {.max = APISIM_ERR_LEN - 1};
        for (size_t i = 0; scenario_preset_names[i]; i++)
            buf_printf(&b, "%s%s", i ? ", " : "", scenario_preset_names[i]);
        snprintf(err, APISIM_ERR_LEN, "unknown claude preset \"%s\" (presets: %s)", name,
                 b.p ? b.p : "");
        buf_free(&b);
        return -1;
    }
    size_t n = 0;
    while (n < PRESET_MAX_RECS && p->recs[n].kind != REC_JSON)
        n++;
    char label[128];
    snprintf(label, sizeof label, "preset %s", name);
    struct scenario *sc = scenario_alloc(label, n);
    if (!sc) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
    memcpy(sc->recs, p->recs, n * sizeof *sc->recs);
    sc->nrecs = n;
    sc->corrupt_at = p->corrupt_at;
    sc->truncate_after = p->truncate_after;
    sc->exit_at = p->exit_at;
    sc->exit_at_code = p->exit_at_code;
    sc->hang = p->hang;
    sc->exit_code = p->exit_code;
    *out = sc;
    return 0;
}

/* ---- building a run --------------------------------------------------------------------- */

struct builder {
    const struct scenario *sc;
    const struct scenario_ctx *ctx;
    uint64_t rng;
    char sid[SCENARIO_ID_LEN];
    const char *model;
    const char *prompt;
    char parent_uuid[SCENARIO_ID_LEN]; /* the last message in the session log */
    char tool_id[64];                  /* the last tool_use id, for its tool result */
    const char *last_text;             /* the last assistant text, for the result */
    char error_text[512];              /* text of the last API error */
    int turns;                         /* assistant messages so far */
    int64_t elapsed_us;                /* sum of the waits so far */
    int64_t first_reply_us;            /* elapsed_us at the first assistant message, or -1 */
    int oom;
};

/* splitmix64: tiny, and good enough for ids. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A version 4 uuid into out (>= 37 bytes). */
static void make_uuid(struct builder *b, char *out, size_t outlen)
{
    uint64_t hi = rng_next(&b->rng), lo = rng_next(&b->rng);
    hi = (hi & ~0xf000ULL) | 0x4000ULL;                        /* version 4 */
    lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL; /* variant 10 */
    snprintf(out, outlen, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(hi >> 32),
             (unsigned)((hi >> 16) & 0xffff), (unsigned)(hi & 0xffff), (unsigned)(lo >> 48),
             (unsigned long long)(lo & 0xffffffffffffULL));
}

/* prefix followed by n base62 characters, like the API's msg_/req_/toolu_ ids. */
static void make_id(struct builder *b, const char *prefix, size_t n, char *out, size_t outlen)
{
    static const char digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    size_t len = strlen(prefix);
    if (len + n + 1 > outlen) {
        out[0] = '\0';
        return;
    }
    memcpy(out, prefix, len);
    for (size_t i = 0; i < n; i++)
        out[len + i] = digits[rng_next(&b->rng) % 62];
    out[len + n] = '\0';
}

static void timestamp(struct builder *b, char *out, size_t outlen)
{
    format_iso8601_ms(b->ctx->now_us + b->elapsed_us, out, outlen);
}

static cJSON *tpl(struct builder *b, const char *text)
{
    cJSON *o = cJSON_Parse(text);
    if (!o)
        b->oom = 1;
    return o;
}

/* Replace obj[key] (keeping its place) with v, or add it at the end when missing; v is
 * consumed either way. */
static void put(struct builder *b, cJSON *obj, const char *key, cJSON *v)
{
    if (!obj || !v) {
        cJSON_Delete(v);
        b->oom = 1;
        return;
    }
    if (cJSON_GetObjectItemCaseSensitive(obj, key)) {
        if (!cJSON_ReplaceItemInObjectCaseSensitive(obj, key, v)) {
            cJSON_Delete(v);
            b->oom = 1;
        }
    } else if (!cJSON_AddItemToObject(obj, key, v)) {
        cJSON_Delete(v);
        b->oom = 1;
    }
}

static void put_str(struct builder *b, cJSON *obj, const char *key, const char *s)
{
    put(b, obj, key, cJSON_CreateString(s));
}

static void put_num(struct builder *b, cJSON *obj, const char *key, double d)
{
    put(b, obj, key, cJSON_CreateNumber(d));
}

static cJSON *child(cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The error strings and text the CLI shows for a failed API call with this status. */
static void api_error(int status, const char **retry_error, const char **message_error, char *text,
                      size_t textlen)
{
    static const char server_side[] =
        "This is a server-side issue, usually temporary \xe2\x80\x94 try again in a moment.";
    const char *reason = NULL;
    *retry_error = "server_error";
    *message_error = "server_error";
    switch (status) {
    case 529:
        *retry_error = "overloaded";
        reason = "Overloaded";
        break;
    case 500:
        reason = "Internal server error";
        break;
    case 502:
        reason = "Bad gateway";
        break;
    case 503:
        reason = "Service unavailable";
        break;
    case 504:
        reason = "Gateway timeout";
        break;
    case 400:
        /* The shape of a context exhaustion ("prompt is too long"). */
        *retry_error = *message_error = "invalid_request";
        snprintf(text, textlen,
                 "API Error: 400 {\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
                 "\"message\":\"prompt is too long: 208451 tokens > 200000 maximum\"}}");
        return;
    case 401:
        *retry_error = *message_error = "authentication_failed";
        snprintf(text, textlen, "API Error: 401 Invalid API key \xc2\xb7 Please run /login");
        return;
    case 429:
        *retry_error = *message_error = "rate_limit";
        snprintf(text, textlen, "API Error: 429 Rate limited. Try again later.");
        return;
    default:
        *retry_error = *message_error = status >= 500 ? "server_error" : "unknown";
        snprintf(text, textlen, "API Error: %d", status);
        return;
    }
    snprintf(text, textlen, "API Error: %d %s. %s", status, reason, server_side);
}

static int64_t tokens_of(const char *s)
{
    return 1 + (int64_t)(s ? strlen(s) : 0) / 4;
}

/* A result record of the success shape (subtype success or error_max_turns). */
static cJSON *make_result(struct builder *b, int max_turns)
{
    cJSON *o = tpl(b, TPL_RESULT);
    int64_t in = 11 + tokens_of(b->prompt), outt = 8 + tokens_of(b->last_text);
    double cost = (double)llround((double)in * 3.0 + (double)outt * 15.0) / 1e6;
    int64_t ms = b->elapsed_us / 1000;
    int64_t ttft = (b->first_reply_us < 0 ? b->elapsed_us : b->first_reply_us) / 1000;
    if (max_turns) {
        put_str(b, o, "subtype", "error_max_turns");
        put(b, o, "is_error", cJSON_CreateTrue());
        put_str(b, o, "result", "Error: Reached max turns (1)");
        put_str(b, o, "stop_reason", "tool_use");
        put_str(b, o, "terminal_reason", "max_turns");
    } else {
        put_str(b, o, "result", b->last_text ? b->last_text : "");
    }
    put_num(b, o, "duration_ms", (double)ms);
    put_num(b, o, "duration_api_ms", (double)ms);
    put_num(b, o, "ttft_ms", (double)ttft);
    put_num(b, o, "ttft_stream_ms", (double)ttft);
    put_num(b, o, "time_to_request_ms", 0);
    put_num(b, o, "num_turns", b->turns > 0 ? b->turns : 1);
    put_str(b, o, "session_id", b->sid);
    put_num(b, o, "total_cost_usd", cost);
    cJSON *usage = child(o, "usage");
    put_num(b, usage, "input_tokens", (double)in);
    put_num(b, usage, "output_tokens", (double)outt);
    cJSON *mu = tpl(b, TPL_MODEL_USAGE);
    put_num(b, mu, "inputTokens", (double)in);
    put_num(b, mu, "outputTokens", (double)outt);
    put_num(b, mu, "costUSD", cost);
    cJSON *models = cJSON_CreateObject();
    put(b, models, b->model, mu);
    put(b, o, "modelUsage", models);
    char uuid[40];
    make_uuid(b, uuid, sizeof uuid);
    put_str(b, o, "uuid", uuid);
    return o;
}

static cJSON *make_assistant(struct builder *b, const char *text)
{
    char id[64], req[64], uuid[40];
    cJSON *o = tpl(b, TPL_ASSISTANT);
    cJSON *msg = child(o, "message");
    make_id(b, "msg_01", 22, id, sizeof id);
    make_id(b, "req_011C", 21, req, sizeof req);
    make_uuid(b, uuid, sizeof uuid);
    put_str(b, msg, "id", id);
    put_str(b, msg, "model", b->model);
    put_num(b, child(msg, "usage"), "input_tokens", (double)(11 + tokens_of(b->prompt)));
    if (text) {
        put_str(b, cJSON_GetArrayItem(child(msg, "content"), 0), "text", text);
        b->last_text = text;
    } else {
        /* A call of the Bash tool. */
        cJSON *content = cJSON_CreateArray(), *use = cJSON_CreateObject(), *input;
        make_id(b, "toolu_01", 22, b->tool_id, sizeof b->tool_id);
        put_str(b, use, "type", "tool_use");
        put_str(b, use, "id", b->tool_id);
        put_str(b, use, "name", "Bash");
        put(b, use, "input", input = cJSON_CreateObject());
        put_str(b, input, "command", "ls");
        put_str(b, input, "description", "List files in the working directory");
        if (!content || !use || !cJSON_AddItemToArray(content, use)) {
            cJSON_Delete(use);
            b->oom = 1;
        }
        put(b, msg, "content", content);
    }
    put_str(b, o, "session_id", b->sid);
    put_str(b, o, "uuid", uuid);
    put_str(b, o, "request_id", req);
    return o;
}

/* The record for r, as a new object (the caller deletes it). */
static cJSON *materialize(struct builder *b, const struct rec *r)
{
    char uuid[40], ts[40];
    const char *retry_error, *message_error;
    cJSON *o = NULL;
    switch (r->kind) {
    case REC_JSON:
        if (!(o = cJSON_Duplicate(r->json, 1))) {
            b->oom = 1;
            return NULL;
        }
        /* Real records all carry these; fill them in where the file left them out. */
        if (!child(o, "session_id"))
            put_str(b, o, "session_id", b->sid);
        if (!child(o, "uuid")) {
            make_uuid(b, uuid, sizeof uuid);
            put_str(b, o, "uuid", uuid);
        }
        return o;
    case REC_INIT: {
        char auto_dir[4096], slug[2048];
        o = tpl(b, TPL_INIT);
        if (scenario_slug(b->ctx->cwd, slug, sizeof slug) < 0)
            slug[0] = '\0';
        snprintf(auto_dir, sizeof auto_dir, "%s/projects/%s/memory/", b->ctx->config_dir, slug);
        make_uuid(b, uuid, sizeof uuid);
        put_str(b, o, "cwd", b->ctx->cwd);
        put_str(b, o, "session_id", b->sid);
        put_str(b, o, "model", b->model);
        put_str(b, o, "permissionMode",
                b->ctx->permission_mode ? b->ctx->permission_mode : "default");
        put_str(b, o, "uuid", uuid);
        put_str(b, child(o, "memory_paths"), "auto", auto_dir);
        return o;
    }
    case REC_ASSISTANT_TEXT:
    case REC_ASSISTANT_TOOL_USE:
        if (b->first_reply_us < 0)
            b->first_reply_us = b->elapsed_us;
        b->turns++;
        return make_assistant(b, r->kind == REC_ASSISTANT_TEXT ? r->text : NULL);
    case REC_TOOL_RESULT:
        o = tpl(b, TPL_TOOL_RESULT);
        make_uuid(b, uuid, sizeof uuid);
        timestamp(b, ts, sizeof ts);
        put_str(b, cJSON_GetArrayItem(child(child(o, "message"), "content"), 0), "tool_use_id",
                b->tool_id);
        put_str(b, o, "session_id", b->sid);
        put_str(b, o, "uuid", uuid);
        put_str(b, o, "timestamp", ts);
        return o;
    case REC_RESULT:
    case REC_RESULT_MAX_TURNS:
        return make_result(b, r->kind == REC_RESULT_MAX_TURNS);
    case REC_API_RETRY: {
        /* Exponential backoff from 500 ms with up to 25% jitter, as the CLI waits. */
        double u = (double)(rng_next(&b->rng) >> 11) / 9007199254740992.0;
        double delay = 500.0 * pow(2.0, r->attempt - 1) * (1.0 + 0.25 * u);
        o = tpl(b, TPL_API_RETRY);
        api_error(r->status, &retry_error, &message_error, b->error_text, sizeof b->error_text);
        make_uuid(b, uuid, sizeof uuid);
        put_num(b, o, "attempt", r->attempt);
        put_num(b, o, "max_retries", r->max_retries);
        put_num(b, o, "retry_delay_ms", round(delay * 1e9) / 1e9);
        put_num(b, o, "error_status", r->status);
        put_str(b, o, "error", retry_error);
        put_str(b, o, "session_id", b->sid);
        put_str(b, o, "uuid", uuid);
        return o;
    }
    case REC_API_ERROR:
        o = tpl(b, TPL_API_ERROR);
        api_error(r->status, &retry_error, &message_error, b->error_text, sizeof b->error_text);
        b->last_text = b->error_text;
        b->turns++;
        make_uuid(b, uuid, sizeof uuid);
        put_str(b, child(o, "message"), "id", uuid);
        put_str(b, cJSON_GetArrayItem(child(child(o, "message"), "content"), 0), "text",
                b->error_text);
        make_uuid(b, uuid, sizeof uuid);
        put_str(b, o, "session_id", b->sid);
        put_str(b, o, "uuid", uuid);
        put_str(b, o, "error", message_error);
        return o;
    case REC_API_ERROR_RESULT:
        o = tpl(b, TPL_API_ERROR_RESULT);
        api_error(r->status, &retry_error, &message_error, b->error_text, sizeof b->error_text);
        make_uuid(b, uuid, sizeof uuid);
        put_num(b, o, "api_error_status", r->status);
        put_num(b, o, "duration_ms", (double)(b->elapsed_us / 1000));
        put_num(b, o, "num_turns", b->turns > 0 ? b->turns : 1);
        put_str(b, o, "result", b->error_text);
        put_str(b, o, "session_id", b->sid);
        put_str(b, o, "uuid", uuid);
        return o;
    }
    return NULL;
}

/* Append o as one line to out (o is deleted). */
static void emit_line(struct builder *b, struct buf *out, cJSON *o)
{
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    if (!s || buf_puts(out, s) < 0 || buf_puts(out, "\n") < 0)
        b->oom = 1;
    free(s);
    cJSON_Delete(o);
}

/* The fields every message of the session log ends with. */
static void log_trailer(struct builder *b, cJSON *o, const char *uuid)
{
    char ts[40];
    timestamp(b, ts, sizeof ts);
    put_str(b, o, "uuid", uuid);
    put_str(b, o, "timestamp", ts);
}

static void log_context(struct builder *b, cJSON *o)
{
    put_str(b, o, "userType", "external");
    put_str(b, o, "entrypoint", "sdk-cli");
    put_str(b, o, "cwd", b->ctx->cwd);
    put_str(b, o, "sessionId", b->sid);
    put_str(b, o, "version", SCENARIO_CLI_VERSION);
    put_str(b, o, "gitBranch", "HEAD");
}

static void log_parent(struct builder *b, cJSON *o)
{
    put(b, o, "parentUuid",
        b->parent_uuid[0] ? cJSON_CreateString(b->parent_uuid) : cJSON_CreateNull());
    put(b, o, "isSidechain", cJSON_CreateFalse());
}

/* The session log's first lines: the queued prompt and the user message. */
static char *log_head(struct builder *b)
{
    struct buf out = {0};
    char ts[40], uuid[40], prompt_id[40];
    const char *prompt = b->prompt ? b->prompt : "";
    timestamp(b, ts, sizeof ts);
    for (int dequeue = 0; dequeue < 2; dequeue++) {
        cJSON *q = cJSON_CreateObject();
        put_str(b, q, "type", "queue-operation");
        put_str(b, q, "operation", dequeue ? "dequeue" : "enqueue");
        put_str(b, q, "timestamp", ts);
        put_str(b, q, "sessionId", b->sid);
        if (!dequeue)
            put_str(b, q, "content", prompt);
        emit_line(b, &out, q);
    }
    cJSON *u = cJSON_CreateObject(), *msg = cJSON_CreateObject();
    make_uuid(b, prompt_id, sizeof prompt_id);
    make_uuid(b, uuid, sizeof uuid);
    log_parent(b, u);
    put_str(b, u, "promptId", prompt_id);
    put_str(b, u, "type", "user");
    put_str(b, msg, "role", "user");
    put_str(b, msg, "content", prompt);
    put(b, u, "message", msg);
    log_trailer(b, u, uuid);
    put_str(b, u, "permissionMode", b->ctx->permission_mode ? b->ctx->permission_mode : "default");
    put_str(b, u, "promptSource", "sdk");
    log_context(b, u);
    emit_line(b, &out, u);
    snprintf(b->parent_uuid, sizeof b->parent_uuid, "%s", uuid);
    return buf_steal(&out, NULL);
}

/* The session log line of a stream record, or NULL when it has none (system and result
 * records, records without a message). */
static char *log_message(struct builder *b, const cJSON *rec)
{
    const char *type = str_of(rec, "type"), *uuid = str_of(rec, "uuid");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(rec, "message");
    if (!type || !uuid || !msg || (strcmp(type, "assistant") != 0 && strcmp(type, "user") != 0))
        return NULL;
    struct buf out = {0};
    cJSON *o = cJSON_CreateObject();
    int assistant = strcmp(type, "assistant") == 0;
    log_parent(b, o);
    if (!assistant)
        put_str(b, o, "type", type);
    put(b, o, "message", cJSON_Duplicate(msg, 1));
    if (assistant) {
        const char *req = str_of(rec, "request_id"), *error = str_of(rec, "error");
        if (req)
            put_str(b, o, "requestId", req);
        if (error) {
            put_str(b, o, "error", error);
            put(b, o, "isApiErrorMessage", cJSON_CreateTrue());
        }
        put_str(b, o, "type", type);
    }
    log_trailer(b, o, uuid);
    log_context(b, o);
    emit_line(b, &out, o);
    snprintf(b->parent_uuid, sizeof b->parent_uuid, "%s", uuid);
    return buf_steal(&out, NULL);
}

static char *log_tail(struct builder *b)
{
    struct buf out = {0};
    cJSON *o = cJSON_CreateObject();
    put_str(b, o, "type", "last-prompt");
    put_str(b, o, "lastPrompt", b->prompt ? b->prompt : "");
    put_str(b, o, "leafUuid", b->parent_uuid);
    put_str(b, o, "sessionId", b->sid);
    emit_line(b, &out, o);
    return buf_steal(&out, NULL);
}

void scenario_run_free(struct scenario_run *run)
{
    if (!run)
        return;
    for (size_t i = 0; i < run->nsteps; i++) {
        free(run->steps[i].line);
        free(run->steps[i].log);
        free(run->steps[i].result_text);
    }
    free(run->steps);
    free(run->stderr_text);
    free(run->log_head);
    free(run->log_tail);
    free(run);
}

/* The first half of line, not splitting a UTF-8 character: a record cut short. */
static char *half_line(const char *line)
{
    size_t n = strlen(line) / 2;
    while (n > 0 && ((unsigned char)line[n] & 0xc0) == 0x80)
        n--;
    return xstrndup(line, n ? n : strlen(line));
}

/* Room for one more step in run (capacity *cap). Returns the step, zeroed, or NULL. */
static struct scenario_step *new_step(struct scenario_run *run, size_t *cap)
{
    if (run->nsteps == *cap) {
        size_t n = *cap ? *cap * 2 : 16;
        struct scenario_step *p = realloc(run->steps, n * sizeof *p);
        if (!p)
            return NULL;
        run->steps = p;
        *cap = n;
    }
    struct scenario_step *st = &run->steps[run->nsteps++];
    memset(st, 0, sizeof *st);
    return st;
}

/* Append o as one more line of run, written delay_us after the one before (o is deleted). */
static int push_json(struct builder *b, struct scenario_run *run, size_t *cap, cJSON *o,
                     int64_t delay_us)
{
    char *line = o ? cJSON_PrintUnformatted(o) : NULL;
    struct scenario_step *st = line ? new_step(run, cap) : NULL;
    cJSON_Delete(o);
    if (!st) {
        free(line);
        b->oom = 1;
        return -1;
    }
    st->delay_us = delay_us;
    st->line = line;
    return 0;
}

/* A stream_event record carrying event (consumed). */
static cJSON *stream_event(struct builder *b, cJSON *event, const cJSON *parent)
{
    char uuid[40];
    cJSON *o = cJSON_CreateObject();
    make_uuid(b, uuid, sizeof uuid);
    put_str(b, o, "type", "stream_event");
    put(b, o, "event", event);
    put_str(b, o, "session_id", b->sid);
    put(b, o, "parent_tool_use_id", parent ? cJSON_Duplicate(parent, 1) : cJSON_CreateNull());
    put_str(b, o, "uuid", uuid);
    return o;
}

/* {"type": type, "index": index} */
static cJSON *event_of(struct builder *b, const char *type, int index)
{
    cJSON *e = cJSON_CreateObject();
    put_str(b, e, "type", type);
    if (index >= 0)
        put_num(b, e, "index", index);
    return e;
}

/* A content_block_delta event of block index: {"type": type, field: value}. value NULL
 * (its making ran out of memory) counts as out of memory. Returns 0 or -1 (b->oom set). */
static int push_delta(struct builder *b, struct scenario_run *run, size_t *cap, int index,
                      const cJSON *parent, const char *type, const char *field, const char *value)
{
    cJSON *delta = cJSON_CreateObject(), *e = event_of(b, "content_block_delta", index);
    put_str(b, delta, "type", type);
    put_str(b, delta, field, value ? value : "");
    put(b, e, "delta", delta);
    if (push_json(b, run, cap, stream_event(b, e, parent), 0) < 0 || !value) {
        b->oom = 1;
        return -1;
    }
    return 0;
}

/* The events of one content block before the message record: content_block_start and its
 * deltas (text in up to three pieces, a tool's input as one input_json_delta). */
static int push_block_events(struct builder *b, struct scenario_run *run, size_t *cap,
                             const cJSON *block, int index, const cJSON *parent)
{
    const char *type = str_of(block, "type");
    cJSON *start = event_of(b, "content_block_start", index), *cb;
    if (type && strcmp(type, "tool_use") == 0) {
        cb = cJSON_Duplicate(block, 1);
        put(b, cb, "input", cJSON_CreateObject());
    } else if (type && strcmp(type, "text") == 0) {
        cb = cJSON_CreateObject();
        put_str(b, cb, "type", "text");
        put_str(b, cb, "text", "");
    } else {
        cb = cJSON_Duplicate(block, 1);
    }
    put(b, start, "content_block", cb);
    if (push_json(b, run, cap, stream_event(b, start, parent), 0) < 0)
        return -1;
    const char *text = str_of(block, "text");
    if (type && strcmp(type, "text") == 0 && text && *text) {
        /* At most three pieces, each cut before a space ("Hello", " from", " apisim."), as
         * the API streams a short text. */
        size_t len = strlen(text), from = 0;
        for (int piece = 0; piece < 3 && from < len; piece++) {
            size_t to = piece == 2 ? len : from + (len - from) / (size_t)(3 - piece);
            size_t back = to;
            while (back > from && text[back] != ' ')
                back--;
            if (back > from) {
                to = back;
            } else {
                while (to < len && text[to] != ' ')
                    to++;
            }
            if (to <= from)
                to = len;
            char *chunk = xstrndup(text + from, to - from);
            int rc = push_delta(b, run, cap, index, parent, "text_delta", "text", chunk);
            free(chunk);
            if (rc < 0)
                return -1;
            from = to;
        }
    } else if (type && strcmp(type, "tool_use") == 0) {
        const cJSON *input = cJSON_GetObjectItemCaseSensitive(block, "input");
        char *json = input ? cJSON_PrintUnformatted(input) : strdup("{}");
        int rc = push_delta(b, run, cap, index, parent, "input_json_delta", "partial_json", json);
        free(json);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* The records the real CLI writes around an assistant message with
 * --include-partial-messages: system/status "requesting" and message_start (waiting
 * delay_us first), each block's start and deltas, the message itself (line, taken), each
 * block's stop, message_delta and message_stop. Returns the index of the message's step,
 * or -1 (out of memory). */
static long push_partial(struct builder *b, struct scenario_run *run, size_t *cap, const cJSON *rec,
                         char *line, int64_t delay_us)
{
    char uuid[40];
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(rec, "message");
    const cJSON *parent = cJSON_GetObjectItemCaseSensitive(rec, "parent_tool_use_id");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
    cJSON *blocks = NULL;
    long at = -1;

    if (cJSON_IsNull(parent))
        parent = NULL;
    /* Content as a string is one text block. */
    if (cJSON_IsArray(content)) {
        blocks = cJSON_Duplicate(content, 1);
    } else {
        blocks = cJSON_CreateArray();
        if (cJSON_IsString(content)) {
            cJSON *t = cJSON_CreateObject();
            put_str(b, t, "type", "text");
            put_str(b, t, "text", content->valuestring);
            if (!cJSON_AddItemToArray(blocks, t)) {
                cJSON_Delete(t);
                b->oom = 1;
            }
        }
    }
    if (!blocks) {
        b->oom = 1;
        goto out;
    }
    cJSON *status = cJSON_CreateObject();
    make_uuid(b, uuid, sizeof uuid);
    put_str(b, status, "type", "system");
    put_str(b, status, "subtype", "status");
    put_str(b, status, "status", "requesting");
    put_str(b, status, "uuid", uuid);
    put_str(b, status, "session_id", b->sid);
    if (push_json(b, run, cap, status, delay_us) < 0)
        goto out;

    cJSON *m = cJSON_CreateObject(), *start = event_of(b, "message_start", -1);
    static const char *const keys[] = {"id", "type", "role", "model", NULL};
    for (size_t i = 0; keys[i]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(msg, keys[i]);
        if (v)
            put(b, m, keys[i], cJSON_Duplicate(v, 1));
    }
    put(b, m, "content", cJSON_CreateArray());
    put(b, m, "stop_reason", cJSON_CreateNull());
    put(b, m, "stop_sequence", cJSON_CreateNull());
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(msg, "usage");
    if (usage)
        put(b, m, "usage", cJSON_Duplicate(usage, 1));
    put(b, start, "message", m);
    cJSON *ev = stream_event(b, start, parent);
    put_num(b, ev, "ttft_ms", (double)(delay_us / 1000));
    if (push_json(b, run, cap, ev, 0) < 0)
        goto out;

    int nblocks = cJSON_GetArraySize(blocks);
    for (int i = 0; i < nblocks; i++) {
        if (push_block_events(b, run, cap, cJSON_GetArrayItem(blocks, i), i, parent) < 0)
            goto out;
        if (i + 1 < nblocks &&
            push_json(b, run, cap, stream_event(b, event_of(b, "content_block_stop", i), parent),
                      0) < 0)
            goto out;
    }
    struct scenario_step *st = new_step(run, cap);
    if (!st) {
        b->oom = 1;
        goto out;
    }
    st->line = line;
    line = NULL;
    at = (long)(run->nsteps - 1);
    if (nblocks > 0 &&
        push_json(b, run, cap,
                  stream_event(b, event_of(b, "content_block_stop", nblocks - 1), parent), 0) < 0) {
        at = -1;
        goto out;
    }
    cJSON *delta = cJSON_CreateObject(), *md = event_of(b, "message_delta", -1);
    const cJSON *reason = cJSON_GetObjectItemCaseSensitive(msg, "stop_reason");
    put(b, delta, "stop_reason",
        cJSON_IsString(reason) ? cJSON_Duplicate(reason, 1) : cJSON_CreateString("end_turn"));
    put(b, delta, "stop_sequence", cJSON_CreateNull());
    put(b, md, "delta", delta);
    cJSON *u = cJSON_CreateObject();
    const cJSON *out_tokens = cJSON_GetObjectItemCaseSensitive(usage, "output_tokens");
    put_num(b, u, "output_tokens", cJSON_IsNumber(out_tokens) ? out_tokens->valuedouble : 1);
    put(b, md, "usage", u);
    if (push_json(b, run, cap, stream_event(b, md, parent), 0) < 0 ||
        push_json(b, run, cap, stream_event(b, event_of(b, "message_stop", -1), parent), 0) < 0)
        at = -1;
out:
    free(line);
    cJSON_Delete(blocks);
    return b->oom ? -1 : at;
}

/* Whether rec is an assistant message the API streamed (not the CLI's synthetic one). */
static int streamed_message(const cJSON *rec)
{
    const char *type = str_of(rec, "type");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(rec, "message");
    const char *model = str_of(msg, "model");
    return type && strcmp(type, "assistant") == 0 && cJSON_IsObject(msg) &&
           !(model && strcmp(model, "<synthetic>") == 0);
}

int scenario_build(const struct scenario *sc, const struct scenario_ctx *ctx,
                   struct scenario_run **out, char *err)
{
    struct builder b = {.sc = sc, .ctx = ctx, .rng = ctx->seed, .first_reply_us = -1};
    struct scenario_run *run = calloc(1, sizeof *run);
    cJSON *o = NULL;
    char *line = NULL;
    size_t cap = 0;
    int rc = -1;
    if (!run)
        goto out;

    const cJSON *init = sc->nrecs && sc->recs[0].kind == REC_JSON ? sc->recs[0].json : NULL;
    const char *sid = sc->session_id ? sc->session_id : str_of(init, "session_id");
    if (!sid)
        sid = ctx->session_id;
    if (sid)
        snprintf(b.sid, sizeof b.sid, "%s", sid);
    else
        make_uuid(&b, b.sid, sizeof b.sid);
    b.model = sc->model ? sc->model : str_of(init, "model");
    if (!b.model)
        b.model = ctx->model ? ctx->model : SCENARIO_DEFAULT_MODEL;
    b.prompt = ctx->prompt;
    snprintf(run->session_id, sizeof run->session_id, "%s", b.sid);
    run->log_head = log_head(&b);

    size_t stop = sc->nrecs;
    int by_exit_at = 0, result_written = 0, hung = 0;
    if (sc->truncate_after >= 0 && (size_t)sc->truncate_after < stop)
        stop = (size_t)sc->truncate_after;
    if (sc->exit_at >= 0 && (size_t)sc->exit_at <= stop) {
        stop = (size_t)sc->exit_at;
        by_exit_at = 1;
    }
    const char *last_line = NULL;
    for (size_t i = 0; i <= stop && !b.oom; i++) {
        int64_t d = sc->delay_us[i];
        int corrupt_here = sc->corrupt_at >= 0 && (size_t)sc->corrupt_at == i;
        b.elapsed_us += d;
        if (i < sc->nrecs && (i < stop || (corrupt_here && !sc->corrupt_text))) {
            if (!(o = materialize(&b, &sc->recs[i])) || !(line = cJSON_PrintUnformatted(o)))
                goto out;
        }
        if (corrupt_here) {
            struct scenario_step *st = new_step(run, &cap);
            if (!st)
                goto out;
            st->delay_us = d;
            st->corrupt = 1;
            if (sc->corrupt_text)
                st->line = strdup(sc->corrupt_text);
            else
                st->line = half_line(line ? line : last_line ? last_line : "{\"type\":");
            if (!st->line)
                goto out;
            d = 0;
            if (sc->corrupt_replace && i < stop) {
                /* The corrupt line took this record's place. */
                cJSON_Delete(o);
                o = NULL;
                free(line);
                line = NULL;
                continue;
            }
        }
        if (i == stop) {
            run->end_delay_us = d;
            break;
        }
        struct scenario_step *st;
        if (ctx->partial_messages && streamed_message(o)) {
            long at = push_partial(&b, run, &cap, o, line, d);
            line = NULL;
            if (at < 0)
                goto out;
            st = &run->steps[at];
        } else {
            if (!(st = new_step(run, &cap)))
                goto out;
            st->delay_us = d;
            st->line = line;
            line = NULL;
        }
        const char *type = str_of(o, "type");
        last_line = st->line;
        st->log = log_message(&b, o);
        if (type && strcmp(type, "result") == 0) {
            const char *text = str_of(o, "result");
            st->is_result = 1;
            result_written = 1;
            if (text && !(st->result_text = strdup(text)))
                goto out;
        }
        cJSON_Delete(o);
        o = NULL;
        if (st->is_result && sc->hang) {
            hung = 1;
            break;
        }
    }
    if (b.oom)
        goto out;

    run->exit_code = by_exit_at ? sc->exit_at_code : sc->exit_code;
    if (by_exit_at && !hung)
        run->end = run->exit_code == 130 ? SCENARIO_END_INTERRUPT : SCENARIO_END_EXIT;
    else if (sc->hang)
        run->end = SCENARIO_END_HANG;
    else
        run->end = run->exit_code == 130 ? SCENARIO_END_INTERRUPT : SCENARIO_END_EXIT;
    if (run->end == SCENARIO_END_INTERRUPT)
        run->exit_code = 130;
    if (result_written && run->end != SCENARIO_END_INTERRUPT)
        run->log_tail = log_tail(&b);
    if (sc->stderr_text && !(run->stderr_text = strdup(sc->stderr_text)))
        goto out;
    if (!run->log_head || b.oom)
        goto out;
    *out = run;
    run = NULL;
    rc = 0;
out:
    if (rc < 0)
        snprintf(err, APISIM_ERR_LEN, "%s: out of memory while building the run", sc->name);
    cJSON_Delete(o);
    free(line);
    scenario_run_free(run);
    return rc;
}

int scenario_slug(const char *cwd, char *out, size_t outlen)
{
    size_t n = strlen(cwd);
    if (n + 1 > outlen)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = cwd[i];
        int keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        out[i] = keep ? c : '-';
    }
    out[n] = '\0';
    return 0;
}
