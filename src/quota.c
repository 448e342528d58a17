#include "quota.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const quota_window_names[QUOTA_NWINDOWS] = {"five_hour", "seven_day", "seven_day_opus",
                                                        "seven_day_sonnet"};

enum { W_FIVE_HOUR = 0, W_SEVEN_DAY = 1 };

#define HOUR_S 3600
#define DAY_S 86400

struct preset {
    const char *name;
    int status;
    int64_t default_delay_ms;
    /* Named windows; a utilization < 0 marks the end. */
    struct {
        int window;
        double utilization;
        int has_reset;
        int64_t resets_in_s;
    } w[2];
};

/* The exact values are a contract (DESIGN.md "Quota presets", docs/quota.md). */
static const struct preset presets[] = {
    {"ok", 200, 0, {{W_FIVE_HOUR, 12.0, 1, 3 * HOUR_S}, {W_SEVEN_DAY, 30.0, 1, 4 * DAY_S}}},
    {"near-limit", 200, 0, {{W_FIVE_HOUR, 86.0, 1, 1 * HOUR_S}, {W_SEVEN_DAY, 40.0, 1, 4 * DAY_S}}},
    {"exhausted", 200, 0, {{W_FIVE_HOUR, 100.0, 1, 2 * HOUR_S}, {-1, -1, 0, 0}}},
    {"long-window-exhausted",
     200,
     0,
     {{W_SEVEN_DAY, 100.0, 1, 3 * DAY_S}, {W_FIVE_HOUR, 20.0, 1, 3 * HOUR_S}}},
    {"unknown-reset", 200, 0, {{W_FIVE_HOUR, 95.0, 0, 0}, {-1, -1, 0, 0}}},
    {"rate-limited", 429, 0, {{-1, -1, 0, 0}, {-1, -1, 0, 0}}},
    {"server-error", 503, 0, {{-1, -1, 0, 0}, {-1, -1, 0, 0}}},
    {"slow",
     200,
     QUOTA_SLOW_DEFAULT_MS,
     {{W_FIVE_HOUR, 12.0, 1, 3 * HOUR_S}, {W_SEVEN_DAY, 30.0, 1, 4 * DAY_S}}},
    {"unauthorized", 401, 0, {{-1, -1, 0, 0}, {-1, -1, 0, 0}}},
};

#define NPRESETS (sizeof presets / sizeof presets[0])

static const char preset_list[] = "ok, near-limit, exhausted, long-window-exhausted, "
                                  "unknown-reset, rate-limited, server-error, slow, unauthorized";

static const char retry_after_s[] = "30";

static const char body_unauthorized[] =
    "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":"
    "\"OAuth token has expired. Please obtain a new token or refresh your existing "
    "token.\"}}";
static const char body_no_bearer[] =
    "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":"
    "\"OAuth authentication is required: send Authorization: Bearer TOKEN\"}}";
static const char body_rate_limited[] =
    "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":"
    "\"Rate limited. Please try again later.\"}}";
static const char body_server_error[] =
    "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":"
    "\"Service unavailable\"}}";
static const char body_bad_method[] =
    "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":"
    "\"Method not allowed: " QUOTA_PATH " answers GET\"}}";

static const struct preset *preset_find(const char *name)
{
    for (size_t i = 0; i < NPRESETS; i++)
        if (strcmp(presets[i].name, name) == 0)
            return &presets[i];
    return NULL;
}

static int delay_check(int64_t delay_ms, const char *what, char *err)
{
    if (delay_ms > QUOTA_MAX_DELAY_MS) {
        snprintf(err, APISIM_ERR_LEN, "%s: %lld ms is longer than the maximum of %d ms", what,
                 (long long)delay_ms, QUOTA_MAX_DELAY_MS);
        return -1;
    }
    return 0;
}

int quota_from_preset(const char *name, int64_t delay_ms, struct quota_state **out, char *err)
{
    int rc = -1;
    struct quota_state *q = NULL;
    const struct preset *p = name ? preset_find(name) : NULL;
    *out = NULL;
    if (!p) {
        snprintf(err, APISIM_ERR_LEN, "unknown quota preset \"%.64s\" (expected one of: %s)",
                 name ? name : "", preset_list);
        goto out;
    }
    if (delay_check(delay_ms, "delay_ms", err) < 0)
        goto out;
    q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        goto out;
    }
    snprintf(q->preset, sizeof q->preset, "%s", p->name);
    q->status = p->status;
    /* Only `slow` waits: main.c passes its default to every preset. */
    if (p->default_delay_ms > 0)
        q->delay_ms = delay_ms < 0 ? p->default_delay_ms : delay_ms;
    for (size_t i = 0; i < 2; i++) {
        if (p->w[i].window < 0)
            continue;
        struct quota_window *w = &q->windows[p->w[i].window];
        w->has_utilization = 1;
        w->utilization = p->w[i].utilization;
        w->has_reset = p->w[i].has_reset;
        w->resets_in_s = p->w[i].resets_in_s;
    }
    *out = q;
    q = NULL;
    rc = 0;
out:
    free(q);
    return rc;
}

#define JERR(...) snprintf(err, APISIM_ERR_LEN, "fixtures/quota: " __VA_ARGS__)

/* 1 when item is a number holding an integer in [lo, hi]. */
static int json_is_int_in(const cJSON *item, double lo, double hi)
{
    if (!cJSON_IsNumber(item))
        return 0;
    double v = item->valuedouble;
    return isfinite(v) && v == floor(v) && v >= lo && v <= hi;
}

static int window_index(const char *name)
{
    for (int i = 0; i < QUOTA_NWINDOWS; i++)
        if (strcmp(quota_window_names[i], name) == 0)
            return i;
    return -1;
}

static int window_from_json(const cJSON *wj, struct quota_window *w, char *err)
{
    const char *name = wj->string;
    if (cJSON_IsNull(wj))
        return 0;
    if (!cJSON_IsObject(wj)) {
        JERR("field \"windows.%s\": expected an object {\"utilization\", \"resets_in_s\"} or "
             "null",
             name);
        return -1;
    }
    for (const cJSON *f = wj->child; f; f = f->next) {
        if (strcmp(f->string, "utilization") == 0) {
            if (cJSON_IsNull(f))
                continue;
            if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble) || f->valuedouble < 0) {
                JERR("field \"windows.%s.utilization\": expected a number >= 0 or null", name);
                return -1;
            }
            w->has_utilization = 1;
            w->utilization = f->valuedouble;
        } else if (strcmp(f->string, "resets_in_s") == 0) {
            if (cJSON_IsNull(f))
                continue;
            if (!json_is_int_in(f, -QUOTA_MAX_RESETS_IN_S, QUOTA_MAX_RESETS_IN_S)) {
                JERR("field \"windows.%s.resets_in_s\": expected an integer number of seconds "
                     "(-%d..%d) or null",
                     name, QUOTA_MAX_RESETS_IN_S, QUOTA_MAX_RESETS_IN_S);
                return -1;
            }
            w->has_reset = 1;
            w->resets_in_s = (int64_t)f->valuedouble;
        } else {
            JERR("field \"windows.%s.%.64s\": unknown field (expected utilization, resets_in_s)",
                 name, f->string);
            return -1;
        }
    }
    return 0;
}

int quota_from_json(const cJSON *body, struct quota_state **out, char *err)
{
    int rc = -1;
    struct quota_state *q = NULL;
    const cJSON *preset = NULL, *windows = NULL, *delay = NULL;
    int64_t delay_ms = -1;
    char perr[APISIM_ERR_LEN];
    *out = NULL;
    if (!cJSON_IsObject(body)) {
        JERR("expected a JSON object {\"preset\": NAME} or {\"windows\": {...}}");
        goto out;
    }
    for (const cJSON *f = body->child; f; f = f->next) {
        if (strcmp(f->string, "preset") == 0) {
            preset = f;
        } else if (strcmp(f->string, "windows") == 0) {
            windows = f;
        } else if (strcmp(f->string, "delay_ms") == 0) {
            delay = f;
        } else {
            JERR("field \"%.64s\": unknown field (expected preset, windows, delay_ms)", f->string);
            goto out;
        }
    }
    if (delay) {
        if (!json_is_int_in(delay, 0, QUOTA_MAX_DELAY_MS)) {
            JERR("field \"delay_ms\": expected an integer 0..%d", QUOTA_MAX_DELAY_MS);
            goto out;
        }
        delay_ms = (int64_t)delay->valuedouble;
    }
    if (preset && windows) {
        JERR("give either \"preset\" or \"windows\", not both");
        goto out;
    }
    if (delay && !(cJSON_IsString(preset) && strcmp(preset->valuestring, "slow") == 0)) {
        JERR("field \"delay_ms\": only the \"slow\" preset takes a delay");
        goto out;
    }
    if (preset) {
        if (!cJSON_IsString(preset)) {
            JERR("field \"preset\": expected a string (one of: %s)", preset_list);
            goto out;
        }
        if (quota_from_preset(preset->valuestring, delay_ms, &q, perr) < 0) {
            JERR("field \"preset\": %.400s", perr);
            goto out;
        }
    } else if (windows) {
        if (!cJSON_IsObject(windows)) {
            JERR("field \"windows\": expected an object of windows (%s, %s, %s, %s)",
                 quota_window_names[0], quota_window_names[1], quota_window_names[2],
                 quota_window_names[3]);
            goto out;
        }
        q = calloc(1, sizeof *q);
        if (!q) {
            JERR("out of memory");
            goto out;
        }
        snprintf(q->preset, sizeof q->preset, "windows");
        q->status = 200;
        for (const cJSON *wj = windows->child; wj; wj = wj->next) {
            int i = window_index(wj->string);
            if (i < 0) {
                JERR("field \"windows.%.64s\": unknown window (expected %s, %s, %s, %s)",
                     wj->string, quota_window_names[0], quota_window_names[1],
                     quota_window_names[2], quota_window_names[3]);
                goto out;
            }
            if (window_from_json(wj, &q->windows[i], err) < 0)
                goto out;
        }
    } else {
        JERR("field \"preset\" or \"windows\" is required");
        goto out;
    }
    *out = q;
    q = NULL;
    rc = 0;
out:
    quota_free(q);
    return rc;
}

cJSON *quota_describe(const struct quota_state *q)
{
    cJSON *o = cJSON_CreateObject(), *ws = NULL;
    int ok = o != NULL;
    ok = ok && cJSON_AddStringToObject(o, "preset", q->preset);
    ok = ok && cJSON_AddNumberToObject(o, "status", q->status);
    ok = ok && cJSON_AddNumberToObject(o, "delay_ms", (double)q->delay_ms);
    ok = ok && cJSON_AddStringToObject(o, "path", QUOTA_PATH);
    ok = ok && (ws = cJSON_AddObjectToObject(o, "windows")) != NULL;
    for (int i = 0; ok && i < QUOTA_NWINDOWS; i++) {
        const struct quota_window *w = &q->windows[i];
        cJSON *wo = cJSON_AddObjectToObject(ws, quota_window_names[i]);
        ok = wo != NULL;
        ok = ok && (w->has_utilization ? cJSON_AddNumberToObject(wo, "utilization", w->utilization)
                                       : cJSON_AddNullToObject(wo, "utilization"));
        ok =
            ok && (w->has_reset ? cJSON_AddNumberToObject(wo, "resets_in_s", (double)w->resets_in_s)
                                : cJSON_AddNullToObject(wo, "resets_in_s"));
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* A number as Python's json prints a float: 12.0, 95.5, 33.333333333333336. */
static int put_number(struct buf *b, double v)
{
    char s[40];
    if (v == floor(v) && fabs(v) < 1e15)
        return buf_printf(b, "%.1f", v);
    snprintf(s, sizeof s, "%.15g", v);
    if (strtod(s, NULL) != v)
        snprintf(s, sizeof s, "%.17g", v);
    return buf_puts(b, s);
}

/* t_s (seconds since the epoch) as "2026-11-24T17:00:00+00:00". */
static int put_time(struct buf *b, int64_t t_s)
{
    time_t t = (time_t)t_s;
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        return -1;
    return buf_printf(b, "%04d-%02d-%02dT%02d:%02d:%02d+00:00", tm.tm_year + 1900, tm.tm_mon + 1,
                      tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static char *windows_body(const struct quota_state *q, int64_t now_us)
{
    struct buf b = {0};
    int64_t now_s = now_us >= 0 ? now_us / 1000000 : -((-now_us + 999999) / 1000000);
    int rc = buf_puts(&b, "{");
    for (int i = 0; rc == 0 && i < QUOTA_NWINDOWS; i++) {
        const struct quota_window *w = &q->windows[i];
        rc = buf_printf(&b, "%s\"%s\":{\"utilization\":", i ? "," : "", quota_window_names[i]);
        if (rc == 0)
            rc = w->has_utilization ? put_number(&b, w->utilization) : buf_puts(&b, "null");
        if (rc == 0)
            rc = buf_puts(&b, ",\"resets_at\":");
        if (rc == 0 && w->has_reset) {
            rc = buf_puts(&b, "\"");
            if (rc == 0)
                rc = put_time(&b, now_s + w->resets_in_s);
            if (rc == 0)
                rc = buf_puts(&b, "\"");
        } else if (rc == 0) {
            rc = buf_puts(&b, "null");
        }
        if (rc == 0)
            rc = buf_puts(&b, "}");
    }
    if (rc == 0)
        rc = buf_puts(&b, "}");
    if (rc < 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b, NULL);
}

/* 1 when the request carries "Authorization: Bearer TOKEN" with a non-empty token. */
static int has_bearer(const struct server_request *req)
{
    const char *v = headers_get(&req->headers, "authorization");
    if (!v)
        return 0;
    while (*v == ' ' || *v == '\t')
        v++;
    for (const char *s = "bearer"; *s; s++, v++)
        if (tolower((unsigned char)*v) != *s)
            return 0;
    if (*v != ' ' && *v != '\t')
        return 0;
    while (*v == ' ' || *v == '\t')
        v++;
    return *v != '\0';
}

int quota_answer(const struct quota_state *q, const struct server_request *req, int64_t now_us,
                 struct server_response *resp)
{
    int status;
    char *body = NULL;
    struct headers h = {0};
    const char *fixed = NULL;
    int get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;

    if (!get) {
        status = 405;
        fixed = body_bad_method;
    } else if (q->status == 401 || !has_bearer(req)) {
        status = 401;
        fixed = q->status == 401 ? body_unauthorized : body_no_bearer;
    } else {
        status = q->status;
        if (status == 429)
            fixed = body_rate_limited;
        else if (status == 503)
            fixed = body_server_error;
    }
    body = fixed ? xstrndup(fixed, strlen(fixed)) : windows_body(q, now_us);
    if (!body || headers_add(&h, "Content-Type", "application/json") < 0 ||
        (status == 429 && headers_add(&h, "Retry-After", retry_after_s) < 0) ||
        (status == 405 && headers_add(&h, "Allow", "GET, HEAD") < 0)) {
        free(body);
        headers_free(&h);
        return -1;
    }
    headers_free(&resp->headers);
    if (!resp->body_borrowed)
        free(resp->body);
    resp->status = status;
    resp->headers = h;
    resp->body = (unsigned char *)body;
    resp->body_len = strlen(body);
    resp->body_borrowed = 0;
    resp->delay_us = get ? q->delay_ms * 1000 : 0;
    return 0;
}

void quota_free(struct quota_state *q)
{
    free(q);
}
