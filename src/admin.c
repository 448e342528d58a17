#include "admin.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"
#include "quota.h"

#define ADMIN_PREFIX "/__apisim/"
#define ADMIN_MAX_PATH 4096
#define ADMIN_MAX_METHOD 32

/* Where a stub's fault is: a field path ("sequence[1].status") and what is wrong. */
struct fault {
    char field[128];
    char msg[APISIM_ERR_LEN - 160];
};

static int fault_set(struct fault *f, const char *prefix, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fault_set(struct fault *f, const char *prefix, const char *field, const char *fmt, ...)
{
    va_list ap;
    snprintf(f->field, sizeof f->field, "%s%s", prefix, field);
    va_start(ap, fmt);
    vsnprintf(f->msg, sizeof f->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- stubs ----------------------------------------------------------------------------- */

/* 1 when item is a number holding an integer in [lo, hi]. */
static int json_is_int_in(const cJSON *item, double lo, double hi)
{
    if (!cJSON_IsNumber(item))
        return 0;
    double v = item->valuedouble;
    return isfinite(v) && v == floor(v) && v >= lo && v <= hi;
}

static const char *const response_fields[] = {"status",      "headers",  "json",  "body",
                                              "body_base64", "delay_ms", "fault", "after_bytes",
                                              "dribble",     NULL};

static int is_response_field(const char *name)
{
    for (size_t i = 0; response_fields[i]; i++)
        if (strcmp(response_fields[i], name) == 0)
            return 1;
    return 0;
}

static int is_token_char(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int headers_from_json(const cJSON *a, const char *prefix, struct headers *h, struct fault *f)
{
    int i = 0;
    if (!cJSON_IsArray(a))
        return fault_set(f, prefix, "headers", "expected a list of [name, value] pairs");
    if (cJSON_GetArraySize(a) > ADMIN_MAX_HEADERS)
        return fault_set(f, prefix, "headers", "more than %d headers", ADMIN_MAX_HEADERS);
    for (const cJSON *p = a->child; p; p = p->next, i++) {
        char field[48];
        snprintf(field, sizeof field, "headers[%d]", i);
        const cJSON *name = cJSON_GetArrayItem(p, 0), *value = cJSON_GetArrayItem(p, 1);
        if (!cJSON_IsArray(p) || cJSON_GetArraySize(p) != 2 || !cJSON_IsString(name) ||
            !cJSON_IsString(value))
            return fault_set(f, prefix, field, "expected a [name, value] pair of strings");
        const char *s = name->valuestring;
        if (!*s)
            return fault_set(f, prefix, field, "empty header name");
        for (; *s; s++)
            if (!is_token_char((unsigned char)*s))
                return fault_set(f, prefix, field,
                                 "header name \"%.64s\" has a character not allowed in a name",
                                 name->valuestring);
        for (s = value->valuestring; *s; s++)
            if (*s == '\r' || *s == '\n')
                return fault_set(f, prefix, field, "header value has a line break");
        if (headers_add(h, name->valuestring, value->valuestring) < 0)
            return fault_set(f, prefix, field, "out of memory");
    }
    return 0;
}

/* "dribble": {"chunks": K, "over_ms": D}. */
static int dribble_from_json(const cJSON *d, const char *prefix, int64_t client_timeout_us,
                             struct exchange *ex, struct fault *f)
{
    const cJSON *chunks = NULL, *over = NULL;
    if (!cJSON_IsObject(d))
        return fault_set(f, prefix, "dribble",
                         "expected an object {\"chunks\": K, \"over_ms\": D}");
    for (const cJSON *it = d->child; it; it = it->next) {
        if (strcmp(it->string, "chunks") == 0)
            chunks = it;
        else if (strcmp(it->string, "over_ms") == 0)
            over = it;
        else
            return fault_set(f, prefix, "dribble",
                             "unknown field \"%.64s\" (expected chunks, over_ms)", it->string);
    }
    if (!json_is_int_in(chunks, 1, ADMIN_MAX_DRIBBLE_CHUNKS))
        return fault_set(f, prefix, "dribble.chunks", "expected an integer 1..%d",
                         ADMIN_MAX_DRIBBLE_CHUNKS);
    if (!json_is_int_in(over, 0, ADMIN_MAX_DELAY_MS))
        return fault_set(f, prefix, "dribble.over_ms", "expected an integer 0..%d",
                         ADMIN_MAX_DELAY_MS);
    if (client_timeout_us > 0 && over->valuedouble * 1000.0 > (double)client_timeout_us)
        return fault_set(f, prefix, "dribble.over_ms",
                         "%.0f ms is longer than --client-timeout (%lld ms): raise "
                         "--client-timeout or dribble faster",
                         over->valuedouble, (long long)(client_timeout_us / 1000));
    ex->dribble_chunks = (unsigned)chunks->valuedouble;
    ex->dribble_over_ms = (int64_t)over->valuedouble;
    return 0;
}

/* The fault fields once the body is known: after_bytes belongs to reset-mid-body and falls
 * inside the body; a dribble needs a body to dribble. */
static int check_fault(const cJSON *after, const char *prefix, struct exchange *ex, struct fault *f)
{
    if (ex->fault == FAULT_RESET_MID_BODY) {
        if (!after)
            return fault_set(f, prefix, "after_bytes",
                             "required with \"fault\": \"reset-mid-body\" (body bytes sent "
                             "before the reset)");
        if (!json_is_int_in(after, 0, 1e15) || after->valuedouble >= (double)ex->response_body_len)
            return fault_set(f, prefix, "after_bytes",
                             "expected an integer 0..%zu (less than the body's %zu bytes)",
                             ex->response_body_len ? ex->response_body_len - 1 : 0,
                             ex->response_body_len);
        ex->fault_after_bytes = (uint64_t)after->valuedouble;
    } else if (after) {
        return fault_set(f, prefix, "after_bytes", "only with \"fault\": \"reset-mid-body\"");
    }
    if (ex->dribble_chunks && (ex->fault == FAULT_RESET || ex->fault == FAULT_EMPTY ||
                               ex->fault == FAULT_GARBAGE || ex->fault == FAULT_STALL))
        return fault_set(f, prefix, "dribble", "not with \"fault\": \"%s\" (it sends no body)",
                         fault_kind_name((enum fault_kind)ex->fault));
    return 0;
}

/* Fill the response side of ex from the fields of o (a stub or one response of a
 * sequence). prefix goes before field names in faults ("sequence[1]."). */
static int response_from_json(const cJSON *o, const char *prefix, int64_t client_timeout_us,
                              struct exchange *ex, struct fault *f)
{
    const cJSON *body_field = NULL, *after = NULL;
    ex->status = 200;
    for (const cJSON *it = o->child; it; it = it->next) {
        const char *k = it->string;
        if (strcmp(k, "fault") == 0) {
            enum fault_kind kind;
            char why[APISIM_ERR_LEN];
            if (!cJSON_IsString(it))
                return fault_set(f, prefix, k, "expected a string such as \"reset\"");
            if (fault_stub_kind(it->valuestring, &kind, why) < 0)
                return fault_set(f, prefix, k, "%s", why);
            ex->fault = (int)kind;
        } else if (strcmp(k, "after_bytes") == 0) {
            after = it;
        } else if (strcmp(k, "dribble") == 0) {
            if (dribble_from_json(it, prefix, client_timeout_us, ex, f) < 0)
                return -1;
        } else if (strcmp(k, "status") == 0) {
            if (!json_is_int_in(it, 100, 599))
                return fault_set(f, prefix, k, "expected an integer 100..599");
            ex->status = (int)it->valuedouble;
        } else if (strcmp(k, "headers") == 0) {
            if (headers_from_json(it, prefix, &ex->response_headers, f) < 0)
                return -1;
        } else if (strcmp(k, "delay_ms") == 0) {
            if (!json_is_int_in(it, 0, ADMIN_MAX_DELAY_MS))
                return fault_set(f, prefix, k, "expected an integer 0..%d", ADMIN_MAX_DELAY_MS);
            ex->delay_ms = (int64_t)it->valuedouble;
        } else if (strcmp(k, "json") == 0 || strcmp(k, "body") == 0 ||
                   strcmp(k, "body_base64") == 0) {
            if (body_field)
                return fault_set(f, prefix, k,
                                 "give only one of json, body, body_base64 (\"%s\" is given "
                                 "too)",
                                 body_field->string);
            body_field = it;
        }
    }
    if (!body_field)
        return check_fault(after, prefix, ex, f);
    const char *k = body_field->string;
    if (strcmp(k, "json") == 0) {
        char *text = cJSON_PrintUnformatted(body_field);
        if (!text)
            return fault_set(f, prefix, k, "out of memory");
        ex->response_body = (unsigned char *)text;
        ex->response_body_len = strlen(text);
        if (!headers_get(&ex->response_headers, "content-type") &&
            headers_add(&ex->response_headers, "Content-Type", "application/json") < 0)
            return fault_set(f, prefix, k, "out of memory");
    } else if (strcmp(k, "body") == 0) {
        if (!cJSON_IsString(body_field))
            return fault_set(f, prefix, k,
                             "expected a string (use \"json\" for a JSON value, \"body_base64\" "
                             "for bytes)");
        size_t n = strlen(body_field->valuestring);
        ex->response_body = (unsigned char *)xstrndup(body_field->valuestring, n);
        if (!ex->response_body)
            return fault_set(f, prefix, k, "out of memory");
        ex->response_body_len = n;
    } else {
        if (!cJSON_IsString(body_field))
            return fault_set(f, prefix, k, "expected a base64 string");
        struct buf b = {0};
        int d = base64_decode_append(body_field->valuestring, strlen(body_field->valuestring), &b);
        if (d < 0) {
            buf_free(&b);
            return fault_set(f, prefix, k, d == -2 ? "out of memory" : "not valid base64");
        }
        ex->response_body = (unsigned char *)buf_steal(&b, &ex->response_body_len);
    }
    return check_fault(after, prefix, ex, f);
}

static int method_from_json(const cJSON *m, char *out, struct fault *f)
{
    if (!m)
        return fault_set(f, "", "method", "required (e.g. \"GET\")");
    if (!cJSON_IsString(m) || !*m->valuestring || strlen(m->valuestring) >= ADMIN_MAX_METHOD)
        return fault_set(f, "", "method", "expected an HTTP method such as \"GET\"");
    size_t i = 0;
    for (const char *s = m->valuestring; *s; s++, i++) {
        if (!is_token_char((unsigned char)*s))
            return fault_set(f, "", "method", "expected an HTTP method such as \"GET\"");
        out[i] = (char)toupper((unsigned char)*s);
    }
    out[i] = '\0';
    return 0;
}

static int path_check(const cJSON *p, struct fault *f)
{
    if (!p)
        return fault_set(f, "", "path", "required (e.g. \"/v1/items\")");
    if (!cJSON_IsString(p) || p->valuestring[0] != '/')
        return fault_set(f, "", "path", "expected a string starting with \"/\"");
    const char *s = p->valuestring;
    if (strlen(s) > ADMIN_MAX_PATH)
        return fault_set(f, "", "path", "longer than %d bytes", ADMIN_MAX_PATH);
    if (strchr(s, '?') || strchr(s, '#'))
        return fault_set(f, "", "path",
                         "must not have a query or fragment: stubs match method and path");
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return fault_set(f, "", "path", "has a space or control character");
    if (strncmp(p->valuestring, ADMIN_PREFIX, sizeof ADMIN_PREFIX - 1) == 0 ||
        strcmp(p->valuestring, "/__apisim") == 0)
        return fault_set(f, "", "path", "/__apisim/ is reserved for the control API");
    return 0;
}

static struct exchange *stub_exchange(const char *method, const char *path)
{
    struct exchange *ex = exchange_new();
    if (!ex)
        return NULL;
    ex->method = xstrndup(method, strlen(method));
    ex->path = xstrndup(path, strlen(path));
    ex->query = xstrndup("", 0);
    ex->source = xstrndup("stub", 4);
    ex->session = xstrndup("stub", 4);
    ex->started_us = now_wall_us();
    if (!ex->method || !ex->path || !ex->query || !ex->source || !ex->session) {
        exchange_free(ex);
        return NULL;
    }
    return ex;
}

static void stubs_free(struct exchange **seq, size_t n)
{
    for (size_t i = 0; seq && i < n; i++)
        exchange_free(seq[i]);
    free(seq);
}

/* Parse one stub into *seq_out (n_out exchanges, owned by the caller: stubs_free). */
static int stub_from_json(const cJSON *o, int64_t client_timeout_us, struct exchange ***seq_out,
                          size_t *n_out, struct fault *f)
{
    int rc = -1;
    const cJSON *method = NULL, *path = NULL, *sequence = NULL, *response_field = NULL;
    char m[ADMIN_MAX_METHOD];
    struct exchange **seq = NULL;
    size_t n = 0;
    *seq_out = NULL;
    *n_out = 0;
    if (!cJSON_IsObject(o)) {
        fault_set(f, "", "", "expected a JSON object {\"method\", \"path\", ...}");
        goto out;
    }
    for (const cJSON *it = o->child; it; it = it->next) {
        if (strcmp(it->string, "method") == 0) {
            method = it;
        } else if (strcmp(it->string, "path") == 0) {
            path = it;
        } else if (strcmp(it->string, "sequence") == 0) {
            sequence = it;
        } else if (is_response_field(it->string)) {
            if (!response_field)
                response_field = it;
        } else {
            fault_set(f, "", it->string,
                      "unknown field (expected method, path, status, headers, json, body, "
                      "body_base64, delay_ms, fault, after_bytes, dribble, sequence)");
            goto out;
        }
    }
    if (method_from_json(method, m, f) < 0 || path_check(path, f) < 0)
        goto out;
    if (sequence) {
        if (response_field) {
            fault_set(f, "", response_field->string,
                      "not allowed beside \"sequence\" (give it in each response)");
            goto out;
        }
        int count = cJSON_GetArraySize(sequence);
        if (!cJSON_IsArray(sequence) || count < 1) {
            fault_set(f, "", "sequence", "expected a non-empty list of responses");
            goto out;
        }
        if (count > ADMIN_MAX_SEQUENCE) {
            fault_set(f, "", "sequence", "more than %d responses", ADMIN_MAX_SEQUENCE);
            goto out;
        }
        seq = calloc((size_t)count, sizeof *seq);
        if (!seq) {
            fault_set(f, "", "sequence", "out of memory");
            goto out;
        }
        for (const cJSON *r = sequence->child; r; r = r->next, n++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "sequence[%zu]", n);
            if (!cJSON_IsObject(r)) {
                fault_set(f, prefix, "", "expected an object {\"status\", \"headers\", ...}");
                goto out;
            }
            snprintf(prefix, sizeof prefix, "sequence[%zu].", n);
            for (const cJSON *it = r->child; it; it = it->next) {
                if (!is_response_field(it->string)) {
                    fault_set(f, prefix, it->string,
                              "unknown field (expected status, headers, json, body, "
                              "body_base64, delay_ms, fault, after_bytes, dribble)");
                    goto out;
                }
            }
            seq[n] = stub_exchange(m, path->valuestring);
            if (!seq[n]) {
                fault_set(f, prefix, "", "out of memory");
                goto out;
            }
            if (response_from_json(r, prefix, client_timeout_us, seq[n], f) < 0) {
                n++;
                goto out;
            }
        }
    } else {
        seq = calloc(1, sizeof *seq);
        if (!seq || !(seq[0] = stub_exchange(m, path->valuestring))) {
            fault_set(f, "", "", "out of memory");
            goto out;
        }
        n = 1;
        if (response_from_json(o, "", client_timeout_us, seq[0], f) < 0)
            goto out;
    }
    *seq_out = seq;
    *n_out = n;
    seq = NULL;
    rc = 0;
out:
    stubs_free(seq, n);
    return rc;
}

/* ---- HTTP plumbing --------------------------------------------------------------------- */

/* Answer cJSON o (consumed) with status. Returns 0, or -1 when out of memory. */
static int answer_json(struct server_response *resp, int status, cJSON *o)
{
    char *text = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!text)
        return -1;
    server_response_json(resp, status, text);
    return 0;
}

static int answer_error(struct server_response *resp, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int answer_error(struct server_response *resp, int status, const char *fmt, ...)
{
    char msg[APISIM_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    server_response_error(resp, status, msg);
    return resp->body ? 0 : -1;
}

/* Parse the request body as JSON into *out. Returns 0, or -1 after answering 400/413 (the
 * message starts with what, the endpoint's name). */
static int parse_body(const struct server_request *req, const char *what, cJSON **out,
                      struct server_response *resp)
{
    char *text = NULL;
    const char *end = NULL;
    *out = NULL;
    if (req->body_len > ADMIN_MAX_BODY) {
        answer_error(resp, 413, "%s: body larger than %u bytes", what, ADMIN_MAX_BODY);
        return -1;
    }
    if (req->body_len == 0) {
        answer_error(resp, 400, "%s: body is empty; expected a JSON object", what);
        return -1;
    }
    if (memchr(req->body, '\0', req->body_len)) {
        answer_error(resp, 400, "%s: body is not JSON (it contains a NUL byte)", what);
        return -1;
    }
    text = xstrndup((const char *)req->body, req->body_len);
    if (!text) {
        answer_error(resp, 500, "%s: out of memory", what);
        return -1;
    }
    *out = cJSON_ParseWithOpts(text, &end, 1);
    if (!*out) {
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        answer_error(resp, 400, "%s: body is not JSON (syntax error at byte %zu)", what, at);
    }
    free(text);
    return *out ? 0 : -1;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decode s..s+n ('+' is a space) into out (outsz bytes). Returns -1 when it does
 * not fit or decodes to a NUL. */
static int url_decode(const char *s, size_t n, char *out, size_t outsz)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            c = hexval(s[i + 1]) * 16 + hexval(s[i + 2]);
            i += 2;
        }
        if (c == 0 || o + 1 >= outsz)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

/* The method and path filters of ?method=&path= (empty means no filter). Returns 0, or -1
 * after answering 400. */
static int journal_filters(const struct server_request *req, const char *what, char *method,
                           size_t msz, char *path, size_t psz, struct server_response *resp)
{
    method[0] = path[0] = '\0';
    for (const char *p = req->query; p && *p;) {
        const char *amp = strchr(p, '&');
        const char *end = amp ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *nend = eq ? eq : end;
        const char *v = eq ? eq + 1 : end;
        size_t nlen = (size_t)(nend - p);
        if (nlen == 0) {
            /* "a=1&&b=2": nothing between the separators */
        } else if (nlen == 6 && memcmp(p, "method", 6) == 0) {
            if (url_decode(v, (size_t)(end - v), method, msz) < 0)
                return answer_error(resp, 400, "%s: query parameter \"method\": too long", what),
                       -1;
        } else if (nlen == 4 && memcmp(p, "path", 4) == 0) {
            if (url_decode(v, (size_t)(end - v), path, psz) < 0)
                return answer_error(resp, 400, "%s: query parameter \"path\": too long", what), -1;
        } else {
            return answer_error(resp, 400,
                                "%s: query parameter \"%.*s\": unknown (expected method, path)",
                                what, (int)(nlen > 64 ? 64 : nlen), p),
                   -1;
        }
        p = amp ? amp + 1 : NULL;
    }
    return 0;
}

/* ---- endpoints ------------------------------------------------------------------------- */

static int do_health(struct replay *rp, struct server_request *req, struct server_response *resp)
{
    struct replay_stats st = {0};
    (void)req;
    replay_stats(rp, &st);
    cJSON *o = cJSON_CreateObject();
    const char *mode = replay_mode(rp);
    int ok = o && cJSON_AddStringToObject(o, "status", "ok") &&
             cJSON_AddStringToObject(o, "mode", mode ? mode : "replay") &&
             cJSON_AddNumberToObject(o, "exchanges", (double)st.exchanges) &&
             cJSON_AddNumberToObject(o, "stubs", (double)st.stubs) &&
             cJSON_AddNumberToObject(o, "requests", (double)st.requests) &&
             cJSON_AddNumberToObject(o, "misses", (double)st.misses) &&
             cJSON_AddNumberToObject(o, "faults", (double)st.faults);
    if (!ok) {
        cJSON_Delete(o);
        return -1;
    }
    return answer_json(resp, 200, o);
}

static int do_stubs(struct replay *rp, struct server_request *req, struct server_response *resp)
{
    cJSON *body = NULL, *o = NULL;
    struct exchange **seq = NULL;
    size_t n = 0;
    struct fault f;
    char err[APISIM_ERR_LEN];
    int rc = 0;
    if (parse_body(req, "stubs", &body, resp) < 0)
        goto out;
    if (stub_from_json(body, replay_client_timeout_us(rp), &seq, &n, &f) < 0) {
        if (f.field[0])
            rc = answer_error(resp, 400, "stubs: field \"%s\": %s", f.field, f.msg);
        else
            rc = answer_error(resp, 400, "stubs: %s", f.msg);
        goto out;
    }
    int64_t id = replay_add_stub(rp, seq, n, err); /* takes the exchanges */
    free(seq);
    seq = NULL;
    n = 0;
    if (id < 0) {
        rc = answer_error(resp, 500, "stubs: %s", err);
        goto out;
    }
    o = cJSON_CreateObject();
    if (!o || !cJSON_AddNumberToObject(o, "id", (double)id)) {
        rc = -1;
        goto out;
    }
    rc = answer_json(resp, 201, o);
    o = NULL;
out:
    stubs_free(seq, n);
    cJSON_Delete(o);
    cJSON_Delete(body);
    return rc;
}

static int do_requests(struct replay *rp, struct server_request *req, struct server_response *resp)
{
    char method[ADMIN_MAX_METHOD * 2], path[ADMIN_MAX_PATH + 1];
    if (journal_filters(req, "requests", method, sizeof method, path, sizeof path, resp) < 0)
        return 0;
    cJSON *j = replay_journal(rp, method[0] ? method : NULL, path[0] ? path : NULL);
    return answer_json(resp, 200, j);
}

static int do_requests_count(struct replay *rp, struct server_request *req,
                             struct server_response *resp)
{
    char method[ADMIN_MAX_METHOD * 2], path[ADMIN_MAX_PATH + 1];
    if (journal_filters(req, "requests/count", method, sizeof method, path, sizeof path, resp) < 0)
        return 0;
    size_t n = replay_journal_count(rp, method[0] ? method : NULL, path[0] ? path : NULL);
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddNumberToObject(o, "count", (double)n)) {
        cJSON_Delete(o);
        return -1;
    }
    return answer_json(resp, 200, o);
}

static int do_reset(struct replay *rp, struct server_request *req, struct server_response *resp)
{
    (void)req;
    replay_reset(rp);
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddTrueToObject(o, "reset")) {
        cJSON_Delete(o);
        return -1;
    }
    return answer_json(resp, 200, o);
}

static int do_quota_set(struct replay *rp, struct server_request *req, struct server_response *resp)
{
    cJSON *body = NULL, *d = NULL;
    struct quota_state *q = NULL;
    char err[APISIM_ERR_LEN];
    int rc = 0;
    if (parse_body(req, "fixtures/quota", &body, resp) < 0)
        goto out;
    if (quota_from_json(body, &q, err) < 0) {
        rc = answer_error(resp, 400, "%s", err);
        goto out;
    }
    d = quota_describe(q);
    if (!d || !cJSON_AddTrueToObject(d, "active")) {
        rc = -1;
        goto out;
    }
    replay_set_quota(rp, q); /* takes q */
    q = NULL;
    rc = answer_json(resp, 200, d);
    d = NULL;
out:
    quota_free(q);
    cJSON_Delete(d);
    cJSON_Delete(body);
    return rc;
}

static int do_quota_clear(struct replay *rp, struct server_request *req,
                          struct server_response *resp)
{
    (void)req;
    replay_set_quota(rp, NULL);
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddFalseToObject(o, "active")) {
        cJSON_Delete(o);
        return -1;
    }
    return answer_json(resp, 200, o);
}

typedef int (*endpoint_fn)(struct replay *rp, struct server_request *req,
                           struct server_response *resp);

static const struct endpoint {
    const char *path; /* after /__apisim/ */
    endpoint_fn get, post, del;
    const char *allow;
} endpoints[] = {
    {"health", do_health, NULL, NULL, "GET"},
    {"stubs", NULL, do_stubs, NULL, "POST"},
    {"requests", do_requests, NULL, NULL, "GET"},
    {"requests/count", do_requests_count, NULL, NULL, "GET"},
    {"reset", NULL, do_reset, NULL, "POST"},
    {"fixtures/quota", NULL, do_quota_set, do_quota_clear, "POST, DELETE"},
};

int admin_handle(void *app, struct server_request *req, struct server_response *resp)
{
    struct replay *rp = app;
    const char *sub = "";
    if (strncmp(req->path, ADMIN_PREFIX, sizeof ADMIN_PREFIX - 1) == 0)
        sub = req->path + sizeof ADMIN_PREFIX - 1;
    for (size_t i = 0; i < sizeof endpoints / sizeof endpoints[0]; i++) {
        const struct endpoint *e = &endpoints[i];
        if (strcmp(e->path, sub) != 0)
            continue;
        endpoint_fn fn = NULL;
        if (strcmp(req->method, "GET") == 0)
            fn = e->get;
        else if (strcmp(req->method, "POST") == 0)
            fn = e->post;
        else if (strcmp(req->method, "DELETE") == 0)
            fn = e->del;
        if (!fn) {
            if (answer_error(resp, 405, "control API: %s %s: method not allowed (allowed: %s)",
                             req->method, req->path, e->allow) < 0 ||
                headers_add(&resp->headers, "Allow", e->allow) < 0)
                return -1;
            return 0;
        }
        return fn(rp, req, resp);
    }
    return answer_error(resp, 404,
                        "control API: no endpoint %.200s (endpoints: health, stubs, requests, "
                        "requests/count, reset, fixtures/quota)",
                        req->path);
}

/* ---- --stubs FILE ---------------------------------------------------------------------- */

/* The bytes of the file at path (at most ADMIN_MAX_STUBS_FILE), NUL-terminated; the caller
 * frees them. NULL with err naming the file when it cannot be read. */
static char *read_file(const char *path, size_t *len, char *err)
{
    FILE *fp = fopen(path, "rb");
    struct buf b = {.max = ADMIN_MAX_STUBS_FILE};
    char chunk[65536];
    size_t n;
    if (!fp) {
        snprintf(err, APISIM_ERR_LEN, "%s: %s", path, strerror(errno));
        return NULL;
    }
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0) {
        if (buf_append(&b, chunk, n) < 0) {
            snprintf(err, APISIM_ERR_LEN, "%s: larger than %u bytes (or out of memory)", path,
                     ADMIN_MAX_STUBS_FILE);
            fclose(fp);
            buf_free(&b);
            return NULL;
        }
    }
    if (ferror(fp)) {
        snprintf(err, APISIM_ERR_LEN, "%s: %s", path, strerror(errno));
        fclose(fp);
        buf_free(&b);
        return NULL;
    }
    fclose(fp);
    return buf_steal(&b, len);
}

int admin_load_stubs_file(struct replay *rp, const char *path, char *err)
{
    int rc = -1;
    size_t len = 0, count = 0, i = 0;
    char *text = read_file(path, &len, err);
    cJSON *root = NULL;
    const char *end = NULL;
    struct stub {
        struct exchange **seq;
        size_t n;
    } *stubs = NULL;
    struct fault f;
    if (!text)
        goto out;
    if (memchr(text, '\0', len)) {
        snprintf(err, APISIM_ERR_LEN, "%s: not JSON (it contains a NUL byte)", path);
        goto out;
    }
    root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        snprintf(err, APISIM_ERR_LEN, "%s: not JSON (syntax error at byte %zu)", path,
                 end && end >= text ? (size_t)(end - text) : (size_t)0);
        goto out;
    }
    if (!cJSON_IsArray(root)) {
        snprintf(err, APISIM_ERR_LEN, "%s: expected a JSON array of stubs", path);
        goto out;
    }
    count = (size_t)cJSON_GetArraySize(root);
    stubs = calloc(count ? count : 1, sizeof *stubs);
    if (!stubs) {
        snprintf(err, APISIM_ERR_LEN, "%s: out of memory", path);
        goto out;
    }
    /* Check every stub before adding any, so a faulty file adds nothing. */
    for (const cJSON *s = root->child; s; s = s->next, i++) {
        if (stub_from_json(s, replay_client_timeout_us(rp), &stubs[i].seq, &stubs[i].n, &f) < 0) {
            snprintf(err, APISIM_ERR_LEN, "%s: [%zu]%s%s: %s", path, i,
                     f.field[0] && f.field[0] != '[' ? "." : "", f.field, f.msg);
            goto out;
        }
    }
    for (i = 0; i < count; i++) {
        int64_t id = replay_add_stub(rp, stubs[i].seq, stubs[i].n, err);
        free(stubs[i].seq);
        stubs[i].seq = NULL;
        stubs[i].n = 0;
        if (id < 0)
            goto out;
    }
    rc = 0;
out:
    for (i = 0; stubs && i < count; i++)
        stubs_free(stubs[i].seq, stubs[i].n);
    free(stubs);
    cJSON_Delete(root);
    free(text);
    return rc;
}
