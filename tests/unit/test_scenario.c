/* Unit tests for scenario.c: scenario files, presets and the runs built from them, as tables
 * of cases. Shapes (field names, types, order) are those of the real CLI's records in
 * ../shared/reference/claude-stream-json/, written down here as "name:type" lists. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

#include "check.h"

/* Shapes of the reference records: member names in order, with s(tring) n(umber) b(oolean)
 * 0 (null) a(rray) o(bject). */
static const char SHAPE_INIT[] =
    "type:s,subtype:s,cwd:s,session_id:s,tools:a,mcp_servers:a,model:s,permissionMode:s,"
    "slash_commands:a,apiKeySource:s,claude_code_version:s,output_style:s,agents:a,skills:a,"
    "plugins:a,analytics_disabled:b,product_feedback_disabled:b,uuid:s,memory_paths:o,"
    "fast_mode_state:s";
static const char SHAPE_ASSISTANT[] =
    "type:s,message:o,parent_tool_use_id:0,session_id:s,uuid:s,request_id:s";
static const char SHAPE_ASSISTANT_MESSAGE[] = "id:s,type:s,role:s,model:s,content:a,stop_reason:0,"
                                              "stop_sequence:0,usage:o,context_management:0";
static const char SHAPE_RESULT[] =
    "type:s,subtype:s,is_error:b,api_error_status:0,duration_ms:n,duration_api_ms:n,ttft_ms:n,"
    "ttft_stream_ms:n,time_to_request_ms:n,num_turns:n,result:s,stop_reason:s,session_id:s,"
    "total_cost_usd:n,usage:o,modelUsage:o,permission_denials:a,terminal_reason:s,"
    "fast_mode_state:s,uuid:s";
static const char SHAPE_RESULT_USAGE[] =
    "input_tokens:n,cache_creation_input_tokens:n,cache_read_input_tokens:n,output_tokens:n,"
    "server_tool_use:o,service_tier:s,cache_creation:o,inference_geo:s,iterations:a,speed:s";
static const char SHAPE_API_RETRY[] = "type:s,subtype:s,attempt:n,max_retries:n,retry_delay_ms:n,"
                                      "error_status:n,error:s,session_id:s,uuid:s";
static const char SHAPE_API_ERROR[] =
    "type:s,message:o,parent_tool_use_id:0,session_id:s,uuid:s,error:s";
static const char SHAPE_API_ERROR_MESSAGE[] =
    "id:s,container:0,model:s,role:s,stop_details:0,stop_reason:s,stop_sequence:s,type:s,"
    "usage:o,content:a,context_management:0";
static const char SHAPE_API_ERROR_RESULT[] =
    "type:s,subtype:s,is_error:b,api_error_status:n,duration_ms:n,duration_api_ms:n,num_turns:n,"
    "result:s,stop_reason:s,session_id:s,total_cost_usd:n,usage:o,modelUsage:o,"
    "permission_denials:a,terminal_reason:s,fast_mode_state:s,uuid:s";
/* success.session-log.jsonl lines 1, 2, 3, 6 and 7. */
static const char SHAPE_LOG_ENQUEUE[] = "type:s,operation:s,timestamp:s,sessionId:s,content:s";
static const char SHAPE_LOG_DEQUEUE[] = "type:s,operation:s,timestamp:s,sessionId:s";
static const char SHAPE_LOG_PROMPT[] =
    "parentUuid:0,isSidechain:b,promptId:s,type:s,message:o,uuid:s,timestamp:s,permissionMode:s,"
    "promptSource:s,userType:s,entrypoint:s,cwd:s,sessionId:s,version:s,gitBranch:s";
static const char SHAPE_LOG_ASSISTANT[] =
    "parentUuid:s,isSidechain:b,message:o,requestId:s,type:s,uuid:s,timestamp:s,userType:s,"
    "entrypoint:s,cwd:s,sessionId:s,version:s,gitBranch:s";
static const char SHAPE_LOG_LAST_PROMPT[] = "type:s,lastPrompt:s,leafUuid:s,sessionId:s";

static const struct scenario_ctx CTX = {
    .cwd = "/home/user/project",
    .config_dir = "/home/user/.claude",
    .prompt = "say hi",
    .now_us = 1795534556050000LL,
    .seed = 42,
};

/* "name:t,..." of obj's members into out. */
static void shape(const cJSON *obj, char *out, size_t outlen)
{
    size_t n = 0;
    const cJSON *it;
    out[0] = '\0';
    cJSON_ArrayForEach(it, obj)
    {
        char t = cJSON_IsString(it)   ? 's'
                 : cJSON_IsNumber(it) ? 'n'
                 : cJSON_IsBool(it)   ? 'b'
                 : cJSON_IsNull(it)   ? '0'
                 : cJSON_IsArray(it)  ? 'a'
                                      : 'o';
        int w = snprintf(out + n, outlen - n, "%s%s:%c", n ? "," : "", it->string, t);
        if (w < 0 || (size_t)w >= outlen - n)
            return;
        n += (size_t)w;
    }
}

static void check_shape(const cJSON *obj, const char *want, const char *what)
{
    char got[2048];
    shape(obj, got, sizeof got);
    CHECK(strcmp(got, want) == 0, "%s shape\n  got  %s\n  want %s", what, got, want);
}

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static int is_uuid4(const char *s)
{
    if (strlen(s) != 36 || s[14] != '4' || !strchr("89ab", s[19]))
        return 0;
    for (int i = 0; i < 36; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !strchr("0123456789abcdef", s[i]))
            return 0;
    }
    return 1;
}

/* "system/init assistant ! result" for the steps of run (! is the corrupt line). */
static void run_types(const struct scenario_run *run, char *out, size_t outlen)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < run->nsteps; i++) {
        char t[64] = "!";
        cJSON *o = run->steps[i].corrupt ? NULL : cJSON_Parse(run->steps[i].line);
        if (o && strcmp(str(o, "type"), "system") == 0)
            snprintf(t, sizeof t, "system/%s", str(o, "subtype"));
        else if (o)
            snprintf(t, sizeof t, "%s", str(o, "type"));
        else if (!run->steps[i].corrupt)
            snprintf(t, sizeof t, "?");
        cJSON_Delete(o);
        int w = snprintf(out + n, outlen - n, "%s%s", i ? " " : "", t);
        if (w > 0 && (size_t)w < outlen - n)
            n += (size_t)w;
    }
}

/* Checks every run must pass: JSON objects (but the corrupt line), init first, one session
 * id, fresh distinct v4 uuids, the reference shapes of generated records, one log line per
 * message with the stream's uuid and a parentUuid chain. */
static void check_run_invariants(const struct scenario_run *run, const char *what)
{
    char uuids[64][40];
    size_t nuuids = 0;
    CHECK(run->nsteps > 0, "%s: no steps", what);
    cJSON *head = NULL;
    char prev_uuid[64] = "";
    for (size_t i = 0; i < run->nsteps; i++) {
        const struct scenario_step *st = &run->steps[i];
        CHECK(!strchr(st->line, '\n'), "%s: step %zu has a newline", what, i);
        if (st->corrupt) {
            cJSON *bad = cJSON_Parse(st->line);
            CHECK(bad == NULL, "%s: corrupt step %zu parses as JSON", what, i);
            cJSON_Delete(bad);
            continue;
        }
        cJSON *o = cJSON_Parse(st->line);
        CHECK(cJSON_IsObject(o), "%s: step %zu is not a JSON object: %s", what, i, st->line);
        if (!o)
            continue;
        const char *type = str(o, "type"), *subtype = str(o, "subtype");
        if (i == 0)
            CHECK(strcmp(type, "system") == 0 && strcmp(subtype, "init") == 0,
                  "%s: first record is %s/%s", what, type, subtype);
        CHECK(strcmp(str(o, "session_id"), run->session_id) == 0, "%s: step %zu session_id %s",
              what, i, str(o, "session_id"));
        const char *uuid = str(o, "uuid");
        CHECK(is_uuid4(uuid), "%s: step %zu uuid \"%s\"", what, i, uuid);
        for (size_t k = 0; k < nuuids; k++)
            CHECK(strcmp(uuids[k], uuid) != 0, "%s: uuid %s repeats", what, uuid);
        if (nuuids < 64)
            snprintf(uuids[nuuids++], sizeof uuids[0], "%s", uuid);
        CHECK(st->is_result == (strcmp(type, "result") == 0), "%s: step %zu is_result", what, i);
        if (st->is_result && cJSON_GetObjectItem(o, "result"))
            CHECK(st->result_text && strcmp(st->result_text, str(o, "result")) == 0,
                  "%s: result_text", what);
        else
            CHECK(st->result_text == NULL, "%s: result_text without a result", what);
        int message = (strcmp(type, "assistant") == 0 || strcmp(type, "user") == 0) &&
                      cJSON_GetObjectItem(o, "message");
        CHECK((st->log != NULL) == message, "%s: step %zu (%s) log line", what, i, type);
        if (st->log) {
            cJSON *l = cJSON_Parse(st->log);
            CHECK(l && strcmp(str(l, "uuid"), uuid) == 0, "%s: log uuid of step %zu", what, i);
            CHECK(l && strcmp(str(l, "sessionId"), run->session_id) == 0, "%s: log sessionId",
                  what);
            if (prev_uuid[0])
                CHECK(strcmp(str(l, "parentUuid"), prev_uuid) == 0, "%s: parentUuid chain", what);
            snprintf(prev_uuid, sizeof prev_uuid, "%s", uuid);
            cJSON_Delete(l);
        }
        cJSON_Delete(o);
    }
    /* The log head: enqueue, dequeue, the prompt. */
    const char *p = run->log_head;
    const char *shapes[] = {SHAPE_LOG_ENQUEUE, SHAPE_LOG_DEQUEUE, SHAPE_LOG_PROMPT};
    for (int k = 0; k < 3; k++) {
        const char *nl = strchr(p, '\n');
        CHECK(nl != NULL, "%s: log head line %d", what, k);
        if (!nl)
            break;
        cJSON_Delete(head);
        head = cJSON_ParseWithLength(p, (size_t)(nl - p));
        check_shape(head, shapes[k], "log head");
        p = nl + 1;
    }
    CHECK(*p == '\0', "%s: log head has more than 3 lines", what);
    cJSON_Delete(head);
}

static struct scenario_run *build(const struct scenario *sc, const struct scenario_ctx *ctx)
{
    char err[APISIM_ERR_LEN] = "";
    struct scenario_run *run = NULL;
    int rc = scenario_build(sc, ctx, &run, err);
    CHECK(rc == 0 && run, "build: %s", err);
    return rc == 0 ? run : NULL;
}

static cJSON *step_json(const struct scenario_run *run, size_t i)
{
    return i < run->nsteps && !run->steps[i].corrupt ? cJSON_Parse(run->steps[i].line) : NULL;
}

/* ------------------------------------------------------------ presets */

static void test_presets(void)
{
    static const struct {
        const char *name;
        const char *types;
        enum scenario_end end;
        int exit_code;
        int tail; /* 1 when the session log ends with a last-prompt record */
    } cases[] = {
        {"success", "system/init assistant result", SCENARIO_END_EXIT, 0, 1},
        {"context-exhaustion", "system/init assistant", SCENARIO_END_EXIT, 1, 0},
        {"max-turns", "system/init assistant user result", SCENARIO_END_EXIT, 1, 1},
        {"api-retry", "system/init system/api_retry system/api_retry assistant result",
         SCENARIO_END_EXIT, 0, 1},
        {"api-retry-exhausted", "system/init system/api_retry system/api_retry assistant result",
         SCENARIO_END_EXIT, 1, 1},
        {"corrupt-stream", "system/init assistant ! result", SCENARIO_END_EXIT, 1, 1},
        {"truncated", "system/init assistant", SCENARIO_END_EXIT, 1, 0},
        {"interrupted", "system/init assistant user", SCENARIO_END_INTERRUPT, 130, 0},
        {"hang-after-result", "system/init assistant result", SCENARIO_END_HANG, 0, 1},
    };
    size_t ncases = sizeof cases / sizeof cases[0];
    size_t nnames = 0;
    while (scenario_preset_names[nnames])
        nnames++;
    CHECK(nnames == ncases, "%zu preset names, %zu cases", nnames, ncases);
    for (size_t i = 0; i < ncases; i++) {
        char err[APISIM_ERR_LEN] = "", types[512];
        struct scenario *sc = NULL;
        CHECK(scenario_preset(cases[i].name, &sc, err) == 0, "preset %s: %s", cases[i].name, err);
        CHECK(nnames == ncases && strcmp(scenario_preset_names[i], cases[i].name) == 0,
              "preset name %zu", i);
        struct scenario_run *run = sc ? build(sc, &CTX) : NULL;
        if (!run) {
            scenario_free(sc);
            continue;
        }
        run_types(run, types, sizeof types);
        CHECK(strcmp(types, cases[i].types) == 0, "preset %s: records \"%s\", want \"%s\"",
              cases[i].name, types, cases[i].types);
        CHECK(run->end == cases[i].end, "preset %s: end %d", cases[i].name, run->end);
        if (cases[i].end != SCENARIO_END_HANG)
            CHECK(run->exit_code == cases[i].exit_code, "preset %s: exit %d", cases[i].name,
                  run->exit_code);
        CHECK((run->log_tail != NULL) == cases[i].tail, "preset %s: log tail", cases[i].name);
        check_run_invariants(run, cases[i].name);
        scenario_run_free(run);
        scenario_free(sc);
    }
}

/* Field by field, the records the presets make, against the reference shapes. */
static void test_preset_records(void)
{
    char err[APISIM_ERR_LEN];
    struct scenario *sc = NULL;
    struct scenario_run *run = NULL;
    cJSON *o = NULL, *l = NULL, *tail = NULL;

    /* success: init, assistant, result, and the session log of the reference. */
    CHECK(scenario_preset("success", &sc, err) == 0, "%s", err);
    if (sc && (run = build(sc, &CTX)) && run->nsteps == 3) {
        o = step_json(run, 0);
        check_shape(o, SHAPE_INIT, "init");
        CHECK(strcmp(str(o, "cwd"), "/home/user/project") == 0, "init cwd");
        CHECK(strcmp(str(o, "model"), SCENARIO_DEFAULT_MODEL) == 0, "init model");
        CHECK(strcmp(str(o, "permissionMode"), "default") == 0, "init permissionMode");
        CHECK(strcmp(str(cJSON_GetObjectItem(o, "memory_paths"), "auto"),
                     "/home/user/.claude/projects/-home-user-project/memory/") == 0,
              "init memory_paths");
        cJSON_Delete(o);
        o = step_json(run, 1);
        check_shape(o, SHAPE_ASSISTANT, "assistant");
        check_shape(cJSON_GetObjectItem(o, "message"), SHAPE_ASSISTANT_MESSAGE,
                    "assistant.message");
        CHECK(strncmp(str(cJSON_GetObjectItem(o, "message"), "id"), "msg_01", 6) == 0, "msg id");
        CHECK(strncmp(str(o, "request_id"), "req_", 4) == 0, "request_id");
        l = cJSON_Parse(run->steps[1].log);
        check_shape(l, SHAPE_LOG_ASSISTANT, "log assistant");
        cJSON_Delete(o);
        o = step_json(run, 2);
        check_shape(o, SHAPE_RESULT, "result");
        check_shape(cJSON_GetObjectItem(o, "usage"), SHAPE_RESULT_USAGE, "result.usage");
        CHECK(strcmp(str(o, "subtype"), "success") == 0, "result subtype");
        CHECK(cJSON_IsFalse(cJSON_GetObjectItem(o, "is_error")), "result is_error");
        CHECK(strcmp(str(o, "result"), "Hello from apisim.") == 0, "result text");
        CHECK(num(o, "num_turns") == 1, "num_turns");
        CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "modelUsage"), SCENARIO_DEFAULT_MODEL),
              "modelUsage names the model");
        tail = run->log_tail ? cJSON_Parse(run->log_tail) : NULL;
        check_shape(tail, SHAPE_LOG_LAST_PROMPT, "log last-prompt");
        CHECK(strcmp(str(tail, "leafUuid"), str(l, "uuid")) == 0, "leafUuid");
        CHECK(strcmp(str(tail, "lastPrompt"), "say hi") == 0, "lastPrompt");
        CHECK(strstr(run->log_head, "\"content\":\"say hi\""), "prompt in the log head");
    }
    cJSON_Delete(o);
    cJSON_Delete(l);
    cJSON_Delete(tail);
    o = l = tail = NULL;
    scenario_run_free(run);
    scenario_free(sc);
    run = NULL;
    sc = NULL;

    /* api-retry-exhausted: as the reference, 529 and is_error. */
    CHECK(scenario_preset("api-retry-exhausted", &sc, err) == 0, "%s", err);
    if (sc && (run = build(sc, &CTX)) && run->nsteps == 5) {
        for (int k = 1; k <= 2; k++) {
            o = step_json(run, (size_t)k);
            check_shape(o, SHAPE_API_RETRY, "api_retry");
            CHECK(num(o, "attempt") == k && num(o, "max_retries") == 2, "attempt %d", k);
            CHECK(num(o, "error_status") == 529 && strcmp(str(o, "error"), "overloaded") == 0,
                  "retry status");
            CHECK(num(o, "retry_delay_ms") >= 500.0 * k && num(o, "retry_delay_ms") < 700.0 * k,
                  "retry_delay_ms %f", num(o, "retry_delay_ms"));
            cJSON_Delete(o);
        }
        o = step_json(run, 3);
        check_shape(o, SHAPE_API_ERROR, "api error message");
        check_shape(cJSON_GetObjectItem(o, "message"), SHAPE_API_ERROR_MESSAGE,
                    "api error message.message");
        CHECK(strcmp(str(o, "error"), "server_error") == 0, "api error: error");
        cJSON_Delete(o);
        o = step_json(run, 4);
        check_shape(o, SHAPE_API_ERROR_RESULT, "api error result");
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(o, "is_error")), "is_error");
        CHECK(num(o, "api_error_status") == 529, "api_error_status");
        CHECK(strncmp(str(o, "result"), "API Error: 529 Overloaded", 25) == 0, "result %s",
              str(o, "result"));
    }
    cJSON_Delete(o);
    o = NULL;
    scenario_run_free(run);
    scenario_free(sc);
    run = NULL;
    sc = NULL;

    /* context-exhaustion: "prompt is too long" and no result. */
    CHECK(scenario_preset("context-exhaustion", &sc, err) == 0, "%s", err);
    if (sc && (run = build(sc, &CTX)) && run->nsteps == 2) {
        o = step_json(run, 1);
        const cJSON *content = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "message"), "content");
        CHECK(strstr(str(cJSON_GetArrayItem(content, 0), "text"), "prompt is too long"),
              "context exhaustion text");
    }
    cJSON_Delete(o);
    o = NULL;
    scenario_run_free(run);
    scenario_free(sc);
    run = NULL;
    sc = NULL;

    /* max-turns: error_max_turns with the success shape. */
    CHECK(scenario_preset("max-turns", &sc, err) == 0, "%s", err);
    if (sc && (run = build(sc, &CTX)) && run->nsteps == 4) {
        o = step_json(run, 3);
        CHECK(strcmp(str(o, "subtype"), "error_max_turns") == 0, "subtype");
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(o, "is_error")), "is_error");
        cJSON *use = step_json(run, 1), *res = step_json(run, 2);
        const cJSON *block = cJSON_GetArrayItem(
            cJSON_GetObjectItem(cJSON_GetObjectItem(use, "message"), "content"), 0);
        const cJSON *result = cJSON_GetArrayItem(
            cJSON_GetObjectItem(cJSON_GetObjectItem(res, "message"), "content"), 0);
        CHECK(strcmp(str(block, "type"), "tool_use") == 0, "tool_use block");
        CHECK(strcmp(str(block, "id"), str(result, "tool_use_id")) == 0, "tool_use_id matches");
        cJSON_Delete(use);
        cJSON_Delete(res);
    }
    cJSON_Delete(o);
    scenario_run_free(run);
    scenario_free(sc);
}

/* ------------------------------------------------------------ scenario files */

static void test_files(void)
{
    static const struct {
        const char *json;
        const char *types;
        enum scenario_end end;
        int exit_code;
        const char *delays; /* delay_us of each step, comma-separated, then ";" end delay */
    } cases[] = {
        /* delays before records; init prepended, not counted */
        {"{\"version\":2,\"records\":[{\"type\":\"assistant\",\"message\":{\"content\":[]}},"
         "{\"type\":\"result\",\"result\":\"hi\"}],\"delays_ms\":{\"0\":250,\"1\":100.5}}",
         "system/init assistant result", SCENARIO_END_EXIT, 0, "0,250000,100500;0"},
        /* a corrupt line with its text replaces record 0, taking its delay */
        {"{\"version\":2,\"records\":[{\"type\":\"assistant\"},{\"type\":\"result\"}],"
         "\"corrupt\":{\"at\":0,\"text\":\"{oops\"},\"delays_ms\":{\"0\":5}}",
         "system/init ! result", SCENARIO_END_EXIT, 0, "0,5000,0;0"},
        /* the last record corrupt */
        {"{\"version\":2,\"records\":[{\"type\":\"assistant\"}],\"corrupt\":{\"at\":0}}",
         "system/init !", SCENARIO_END_EXIT, 0, "0,0;0"},
        /* truncate_after 0: nothing of the records, exit 1 by default, the wait before it */
        {"{\"version\":2,\"records\":[{\"type\":\"assistant\"}],\"truncate_after\":0,"
         "\"delays_ms\":{\"0\":30}}",
         "system/init", SCENARIO_END_EXIT, 1, "0;30000"},
        /* truncate_after the last record still says truncated: exit 1 */
        {"{\"version\":2,\"records\":[{\"type\":\"assistant\"}],\"truncate_after\":1}",
         "system/init assistant", SCENARIO_END_EXIT, 1, "0,0;0"},
        /* exit_at N writes record N; it wins over the exit code */
        {"{\"version\":2,\"records\":[{\"type\":\"assistant\"},{\"type\":\"result\"}],"
         "\"exit_at\":{\"at\":0,\"code\":3},\"exit_code\":0,\"delays_ms\":{\"1\":40}}",
         "system/init assistant", SCENARIO_END_EXIT, 3, "0,0;40000"},
        /* exit_at with 130 is an interrupt */
        {"{\"version\":2,\"records\":[{\"type\":\"assistant\"},{\"type\":\"result\"}],"
         "\"exit_at\":{\"at\":0,\"code\":130}}",
         "system/init assistant", SCENARIO_END_INTERRUPT, 130, "0,0;0"},
        /* exit_code 130 at the end is an interrupt too */
        {"{\"records\":[],\"exit_code\":130}", "system/init", SCENARIO_END_INTERRUPT, 130, "0;0"},
        /* recovered API retries before record 1 */
        {"{\"version\":2,\"records\":[{\"type\":\"assistant\"},{\"type\":\"result\"}],"
         "\"api_retry\":{\"at\":1,\"attempts\":2}}",
         "system/init assistant system/api_retry system/api_retry result", SCENARIO_END_EXIT, 0,
         "0,0,0,0,0;0"},
        /* retries after the last record */
        {"{\"version\":2,\"records\":[{\"type\":\"assistant\"}],"
         "\"api_retry\":{\"at\":1,\"attempts\":1}}",
         "system/init assistant system/api_retry", SCENARIO_END_EXIT, 0, "0,0,0;0"},
        /* exhausted API retries (at 0 by default): nothing of the records; exit 1 */
        {"{\"version\":2,\"records\":[{\"type\":\"assistant\"},{\"type\":\"result\"}],"
         "\"api_retry\":{\"attempts\":3,\"status\":500,\"exhaust\":true}}",
         "system/init system/api_retry system/api_retry system/api_retry", SCENARIO_END_EXIT, 1,
         "0,0,0,0;0"},
        {"{\"version\":2,\"records\":[],\"api_retry\":{\"attempts\":1,\"exhaust\":true},"
         "\"exit_code\":7}",
         "system/init system/api_retry", SCENARIO_END_EXIT, 7, "0,0;0"},
        /* positions after the retries skip them: exit_at 0 stops before retries at 1 */
        {"{\"version\":2,\"records\":[{\"type\":\"assistant\"},{\"type\":\"result\"}],"
         "\"api_retry\":{\"at\":1,\"attempts\":2},\"exit_at\":{\"at\":0,\"code\":4}}",
         "system/init assistant", SCENARIO_END_EXIT, 4, "0,0;0"},
        /* truncate_after 1 does not write the retries that come before record 1 */
        {"{\"version\":2,\"records\":[{\"type\":\"assistant\"},{\"type\":\"result\"}],"
         "\"api_retry\":{\"at\":1,\"attempts\":2},\"truncate_after\":1}",
         "system/init assistant", SCENARIO_END_EXIT, 1, "0,0;0"},
        /* a delay before a record with retries before it waits after them */
        {"{\"version\":2,\"records\":[{\"type\":\"assistant\"}],"
         "\"api_retry\":{\"at\":0,\"attempts\":1},\"delays_ms\":{\"0\":10}}",
         "system/init system/api_retry assistant", SCENARIO_END_EXIT, 0, "0,0,10000;0"},
        /* an init record of the file's own is kept, not doubled, and is record 0 */
        {"{\"records\":[{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"abc\"},"
         "{\"type\":\"result\",\"result\":\"x\"}]}",
         "system/init result", SCENARIO_END_EXIT, 0, "0,0;0"},
        {"{\"version\":2,\"records\":[{\"type\":\"system\",\"subtype\":\"init\"},"
         "{\"type\":\"result\",\"result\":\"x\"}],\"truncate_after\":1}",
         "system/init", SCENARIO_END_EXIT, 1, "0;0"},
        /* hang after the result: what follows it is not written */
        {"{\"records\":[{\"type\":\"result\"},{\"type\":\"assistant\"}],"
         "\"hang_after_result\":true}",
         "system/init result", SCENARIO_END_HANG, 0, "0,0;0"},
        /* hang without a result: at the end */
        {"{\"version\":2,\"records\":[{\"type\":\"assistant\"}],\"hang_after_result\":true,"
         "\"truncate_after\":0}",
         "system/init", SCENARIO_END_HANG, 0, "0;0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[APISIM_ERR_LEN] = "", types[512], delays[512];
        struct scenario *sc = NULL;
        int rc = scenario_parse(cases[i].json, strlen(cases[i].json), "case.json", &sc, err);
        CHECK(rc == 0, "case %zu: %s", i, err);
        struct scenario_run *run = rc == 0 ? build(sc, &CTX) : NULL;
        if (run) {
            size_t n = 0;
            run_types(run, types, sizeof types);
            CHECK(strcmp(types, cases[i].types) == 0, "case %zu: records \"%s\", want \"%s\"", i,
                  types, cases[i].types);
            CHECK(run->end == cases[i].end, "case %zu: end %d", i, run->end);
            if (cases[i].end != SCENARIO_END_HANG)
                CHECK(run->exit_code == cases[i].exit_code, "case %zu: exit %d", i, run->exit_code);
            for (size_t k = 0; k < run->nsteps; k++)
                n += (size_t)snprintf(delays + n, sizeof delays - n, "%s%lld", k ? "," : "",
                                      (long long)run->steps[k].delay_us);
            snprintf(delays + n, sizeof delays - n, ";%lld", (long long)run->end_delay_us);
            CHECK(strcmp(delays, cases[i].delays) == 0, "case %zu: delays %s, want %s", i, delays,
                  cases[i].delays);
            check_run_invariants(run, cases[i].json);
        }
        scenario_run_free(run);
        scenario_free(sc);
    }
}

/* Details the table cannot say: corrupt text, retry fields, ids and models, stderr. */
static void test_file_details(void)
{
    char err[APISIM_ERR_LEN];
    struct scenario *sc = NULL;
    struct scenario_run *run = NULL;
    cJSON *o = NULL;
    const char *text;

    /* the default corrupt text is the first half of the record it replaces (the same
     * record as written without corrupt: same seed, same ids) */
    const char *plain = "{\"records\":[{\"type\":\"assistant\",\"message\":{\"content\":"
                        "\"abcdefgh\"}},{\"type\":\"result\"}]}";
    text = "{\"version\":2,\"records\":[{\"type\":\"assistant\",\"message\":{\"content\":"
           "\"abcdefgh\"}},{\"type\":\"result\"}],\"corrupt\":{\"at\":0}}";
    struct scenario *sc2 = NULL;
    struct scenario_run *run2 = NULL;
    CHECK(scenario_parse(text, strlen(text), "c.json", &sc, err) == 0, "%s", err);
    CHECK(scenario_parse(plain, strlen(plain), "p.json", &sc2, err) == 0, "%s", err);
    if (sc && sc2 && (run = build(sc, &CTX)) && (run2 = build(sc2, &CTX)) && run->nsteps == 3 &&
        run2->nsteps == 3) {
        size_t half = strlen(run->steps[1].line);
        CHECK(run->steps[1].corrupt, "step 1 corrupt");
        CHECK(half > 0 && half < strlen(run2->steps[1].line) &&
                  strncmp(run->steps[1].line, run2->steps[1].line, half) == 0,
              "corrupt line \"%s\" is a prefix of \"%s\"", run->steps[1].line, run2->steps[1].line);
        CHECK(strcmp(run->steps[2].line, run2->steps[2].line) == 0, "the record after is kept");
    } else {
        CHECK(0, "corrupt runs: %zu and %zu steps", run ? run->nsteps : 0, run2 ? run2->nsteps : 0);
    }
    scenario_run_free(run);
    scenario_run_free(run2);
    scenario_free(sc);
    scenario_free(sc2);
    run = NULL;
    sc = NULL;

    /* the file's session_id and model win over the context's; records get them */
    struct scenario_ctx ctx = CTX;
    ctx.session_id = "from-flag";
    ctx.model = "claude-from-flag";
    text = "{\"session_id\":\"s-1\",\"model\":\"claude-opus-4\",\"stderr\":\"boom\","
           "\"records\":[{\"type\":\"assistant\",\"uuid\":\"mine\"}]}";
    CHECK(scenario_parse(text, strlen(text), "m.json", &sc, err) == 0, "%s", err);
    if (sc && (run = build(sc, &ctx)) && run->nsteps == 2) {
        CHECK(strcmp(run->session_id, "s-1") == 0, "session id %s", run->session_id);
        o = step_json(run, 0);
        CHECK(strcmp(str(o, "model"), "claude-opus-4") == 0, "model %s", str(o, "model"));
        cJSON_Delete(o);
        o = step_json(run, 1);
        CHECK(strcmp(str(o, "uuid"), "mine") == 0, "a record's own uuid is kept");
        CHECK(strcmp(str(o, "session_id"), "s-1") == 0, "session_id filled in");
        CHECK(run->stderr_text && strcmp(run->stderr_text, "boom") == 0, "stderr");
    }
    cJSON_Delete(o);
    o = NULL;
    scenario_run_free(run);
    scenario_free(sc);
    run = NULL;
    sc = NULL;

    /* without them in the file, the context's */
    text = "{\"records\":[]}";
    CHECK(scenario_parse(text, strlen(text), "e.json", &sc, err) == 0, "%s", err);
    if (sc && (run = build(sc, &ctx))) {
        CHECK(strcmp(run->session_id, "from-flag") == 0, "session id %s", run->session_id);
        o = step_json(run, 0);
        CHECK(strcmp(str(o, "model"), "claude-from-flag") == 0, "model %s", str(o, "model"));
    }
    cJSON_Delete(o);
    o = NULL;
    scenario_run_free(run);
    run = NULL;

    /* same seed, same run; another seed, other ids */
    if (sc) {
        struct scenario_run *a = build(sc, &CTX), *b = build(sc, &CTX);
        ctx = CTX;
        ctx.seed = 43;
        struct scenario_run *c = build(sc, &ctx);
        CHECK(a && b && strcmp(a->steps[0].line, b->steps[0].line) == 0, "deterministic");
        CHECK(a && c && strcmp(a->session_id, c->session_id) != 0, "seed changes ids");
        CHECK(a && is_uuid4(a->session_id), "session id is a uuid: %s", a ? a->session_id : "");
        scenario_run_free(a);
        scenario_run_free(b);
        scenario_run_free(c);
    }
    scenario_free(sc);
    sc = NULL;

    /* recovered retries: max_retries 10, status and error of a 429 */
    text = "{\"version\":2,\"records\":[],\"api_retry\":{\"attempts\":2,\"status\":429}}";
    CHECK(scenario_parse(text, strlen(text), "r.json", &sc, err) == 0, "%s", err);
    if (sc && (run = build(sc, &CTX)) && run->nsteps == 3) {
        o = step_json(run, 2);
        CHECK(num(o, "attempt") == 2 && num(o, "max_retries") == 10, "recovered retry counts");
        CHECK(num(o, "error_status") == 429 && strcmp(str(o, "error"), "rate_limit") == 0,
              "429 retry");
    }
    cJSON_Delete(o);
    scenario_run_free(run);
    scenario_free(sc);
}

/* ------------------------------------------------------------ partial messages */

/* The event types of run's stream_event records and the other records' types, in order. */
static void event_types(const struct scenario_run *run, char *out, size_t outlen)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < run->nsteps; i++) {
        cJSON *o = step_json(run, i);
        const char *t = str(o, "type");
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "event");
        char name[64];
        if (e)
            snprintf(name, sizeof name, "%s", str(e, "type"));
        else if (strcmp(t, "system") == 0)
            snprintf(name, sizeof name, "system/%s", str(o, "subtype"));
        else
            snprintf(name, sizeof name, "%s", t);
        cJSON_Delete(o);
        int w = snprintf(out + n, outlen - n, "%s%s", i ? " " : "", name);
        if (w > 0 && (size_t)w < outlen - n)
            n += (size_t)w;
    }
}

/* With --include-partial-messages the order of
 * reference/claude-stream-json/success.partial-messages.jsonl, and the deltas add up to the
 * message's text; the session log and the result do not change. */
static void test_partial_messages(void)
{
    char err[APISIM_ERR_LEN] = "", types[1024];
    struct scenario *sc = NULL;
    struct scenario_ctx ctx = CTX;
    ctx.partial_messages = 1;
    CHECK(scenario_preset("success", &sc, err) == 0, "%s", err);
    struct scenario_run *run = sc ? build(sc, &ctx) : NULL;
    struct scenario_run *plain = sc ? build(sc, &CTX) : NULL;
    if (run && plain) {
        event_types(run, types, sizeof types);
        const char *want = "system/init system/status message_start content_block_start "
                           "content_block_delta content_block_delta content_block_delta assistant "
                           "content_block_stop message_delta message_stop result";
        CHECK(strcmp(types, want) == 0, "partial types \"%s\"", types);
        char text[256] = "";
        size_t n = 0;
        for (size_t i = 0; i < run->nsteps; i++) {
            cJSON *o = step_json(run, i);
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "event");
            if (e && strcmp(str(e, "type"), "content_block_delta") == 0) {
                const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "delta");
                n += (size_t)snprintf(text + n, sizeof text - n, "%s", str(d, "text"));
                CHECK(strcmp(str(d, "type"), "text_delta") == 0, "text_delta");
            }
            if (e)
                CHECK(strcmp(str(o, "session_id"), run->session_id) == 0 &&
                          is_uuid4(str(o, "uuid")),
                      "stream_event %zu has the session id and a uuid", i);
            cJSON_Delete(o);
        }
        CHECK(strcmp(text, "Hello from apisim.") == 0, "deltas add up to \"%s\"", text);
        CHECK(run->steps[run->nsteps - 1].is_result, "the result is last");
        size_t logs = 0, plain_logs = 0;
        for (size_t i = 0; i < run->nsteps; i++)
            logs += run->steps[i].log != NULL;
        for (size_t i = 0; i < plain->nsteps; i++)
            plain_logs += plain->steps[i].log != NULL;
        CHECK(logs == plain_logs, "session log lines %zu, without partials %zu", logs, plain_logs);
    }
    scenario_run_free(run);
    scenario_run_free(plain);
    scenario_free(sc);
    sc = NULL;
    run = NULL;

    /* a tool call streams its input as one input_json_delta */
    CHECK(scenario_preset("max-turns", &sc, err) == 0, "%s", err);
    if (sc && (run = build(sc, &ctx))) {
        event_types(run, types, sizeof types);
        CHECK(strstr(types, "system/status message_start content_block_start content_block_delta "
                            "assistant content_block_stop message_delta message_stop user") != NULL,
              "tool use types \"%s\"", types);
        for (size_t i = 0; i < run->nsteps; i++) {
            cJSON *o = step_json(run, i);
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "event");
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "delta");
            if (d && str(d, "partial_json")[0])
                CHECK(strcmp(str(d, "type"), "input_json_delta") == 0 &&
                          strstr(str(d, "partial_json"), "\"command\""),
                      "input_json_delta %s", str(d, "partial_json"));
            cJSON_Delete(o);
        }
    }
    scenario_run_free(run);
    scenario_free(sc);
}

/* ------------------------------------------------------------ bad input */

static void test_parse_errors(void)
{
    static const struct {
        const char *json;
        const char *want; /* a part of the message after "scenario bad.json: " */
    } cases[] = {
        {"", "not valid JSON at line 1 column 1"},
        {"{\"records\": [1,]}", "not valid JSON at line 1"},
        {"{\n  \"records\": [\n    {\"type\": \"x\"},,\n  ]\n}", "not valid JSON at line 3"},
        {"{\"records\":[]} trailing", "text after the JSON value"},
        {"[]", "must be a JSON object with \"records\" (it is an array)"},
        {"{}", "has no \"records\" array"},
        {"{\"records\":{}}", "records must be an array (it is an object)"},
        {"{\"records\":[1]}", "records[0] is not a JSON object (it is a number)"},
        {"{\"records\":[{\"type\":\"assistant\"},\"x\"]}",
         "records[1] is not a JSON object (it is a string)"},
        {"{\"records\":[{\"type\":\"assistant\"},[]]}",
         "records[1] is not a JSON object (it is an array)"},
        {"{\"records\":[{\"message\":{}}]}", "records[0] has no \"type\" string"},
        {"{\"records\":[],\"bogus\":1}", "unknown key \"bogus\" in the scenario"},
#define V2 "{\"version\":2,"
        {V2 "\"records\":[],\"delays_ms\":[]}", "delays_ms must be an object"},
        {V2 "\"records\":[],\"delays_ms\":{\"a\":1}}", "delays_ms key \"a\" is not a record index"},
        {V2 "\"records\":[],\"delays_ms\":{\"2\":1}}", "delays_ms key \"2\" is past the 0 records"},
        {V2 "\"records\":[],\"delays_ms\":{\"0\":-1}}", "delays_ms[\"0\"] must be a number"},
        {V2 "\"records\":[],\"delays_ms\":{\"0\":\"5\"}}", "delays_ms[\"0\"] must be a number"},
        {V2 "\"records\":[],\"api_retry\":{\"at\":-1}}", "api_retry.at must be an integer from 0"},
        {V2 "\"records\":[],\"api_retry\":{\"at\":5}}", "api_retry.at 5 is past the 0 records"},
        {V2 "\"records\":[],\"api_retry\":{\"status\":\"529\"}}",
         "api_retry.status must be an integer from 100 to 599 (it is a string)"},
        {V2 "\"records\":[],\"api_retry\":{\"tries\":2}}", "unknown key \"tries\" in api_retry"},
        {V2 "\"records\":[],\"api_retry\":{\"exhaust\":1}}", "api_retry.exhaust must be true or"},
        {V2 "\"records\":[],\"corrupt\":{}}", "corrupt needs \"at\""},
        {V2 "\"records\":[],\"corrupt\":{\"at\":0}}", "corrupt.at: there is no record to replace"},
        {V2 "\"records\":[{\"type\":\"a\"}],\"corrupt\":{\"at\":1}}",
         "corrupt.at must be an integer from 0 to 0"},
        {V2 "\"records\":[{\"type\":\"a\"}],\"corrupt\":{\"at\":0,\"text\":\"a\\nb\"}}",
         "must be one line"},
        {V2 "\"records\":[],\"truncate_after\":-1}", "truncate_after must be an integer from 0"},
        {V2 "\"records\":[],\"truncate_after\":1.5}", "truncate_after must be an integer"},
        {V2 "\"records\":[{\"type\":\"a\"}],\"exit_at\":{\"at\":1}}",
         "exit_at needs \"at\" and \"code\""},
        {V2 "\"records\":[{\"type\":\"a\"}],\"exit_at\":{\"at\":0,\"code\":300}}",
         "exit_at.code must be an integer"},
        {V2 "\"records\":[{\"type\":\"a\"}],\"exit_at\":{\"at\":1,\"code\":3}}",
         "exit_at.at must be an integer from 0 to 0"},
        {V2 "\"records\":[],\"exit_at\":{\"at\":0,\"code\":3}}", "exit_at.at: there is no record"},
        /* positions written for the numbering before version 2 are refused, saying how */
        {"{\"records\":[],\"truncate_after\":0}",
         "\"truncate_after\" is a position, and the file has no \"version\": 2"},
        {"{\"version\":1,\"records\":[],\"api_retry\":{}}", "subtract 1 from each position"},
        {"{\"version\":3,\"records\":[]}", "version must be an integer from 1 to 2"},
#undef V2
        {"{\"records\":[],\"exit_code\":256}", "exit_code must be an integer from 0 to 255"},
        {"{\"records\":[],\"hang_after_result\":\"yes\"}", "hang_after_result must be true or"},
        {"{\"records\":[],\"session_id\":5}", "session_id must be a string (it is a number)"},
        {"{\"records\":[],\"session_id\":\"\"}", "session_id must have 1 to"},
        {"{\"records\":[],\"stderr\":null}", "stderr must be a string (it is null)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[APISIM_ERR_LEN] = "";
        struct scenario *sc = NULL;
        int rc = scenario_parse(cases[i].json, strlen(cases[i].json), "bad.json", &sc, err);
        CHECK(rc == -1 && sc == NULL, "case %zu (%s) accepted", i, cases[i].json);
        CHECK(strncmp(err, "scenario bad.json: ", 19) == 0 && strstr(err, cases[i].want),
              "case %zu: \"%s\" does not say \"%s\"", i, err, cases[i].want);
        CHECK(!strchr(err, '\n'), "case %zu: message has a newline", i);
        scenario_free(sc);
    }

    char err[APISIM_ERR_LEN] = "";
    struct scenario *sc = NULL;
    CHECK(scenario_preset("nope", &sc, err) == -1 && sc == NULL, "unknown preset accepted");
    CHECK(strstr(err, "unknown claude preset \"nope\"") && strstr(err, "hang-after-result"),
          "unknown preset message: %s", err);
    scenario_free(NULL); /* a no-op */
    scenario_run_free(NULL);
}

/* ------------------------------------------------------------ slug */

static void test_slug(void)
{
    static const struct {
        const char *cwd;
        const char *slug;
    } cases[] = {
        {"/home/user/project", "-home-user-project"},
        {"/tmp/a_b.c d/x-y", "-tmp-a-b-c-d-x-y"},
        {"/", "-"},
        {"/srv/Caf\xc3\xa9", "-srv-Caf--"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[256];
        CHECK(scenario_slug(cases[i].cwd, out, sizeof out) == 0 && strcmp(out, cases[i].slug) == 0,
              "slug(%s) = %s", cases[i].cwd, out);
    }
    char tiny[4];
    CHECK(scenario_slug("/home", tiny, sizeof tiny) == -1, "slug too long for out");
}

int main(void)
{
    test_presets();
    test_preset_records();
    test_files();
    test_file_details();
    test_partial_messages();
    test_parse_errors();
    test_slug();
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("test_scenario: all passed\n");
    return 0;
}
