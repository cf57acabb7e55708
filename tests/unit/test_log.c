/* Unit tests for common/log.c: the JSON line format (LOG_FORMAT=json), the naming of the context,
 * the escaping of hostile messages, truncation, and the text format left as it was. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "unit.h"

static int capture_fd = -1;
static char captured[8192];
static size_t captured_len;

/* Points stderr at an empty temporary file (the checks' own reports go there too until end). */
static int saved_stderr = -1;
static void capture_begin(void)
{
    if (capture_fd < 0) {
        FILE *f = tmpfile();
        if (!f)
            abort();
        capture_fd = dup(fileno(f));
        fclose(f);
    }
    if (ftruncate(capture_fd, 0) < 0 || lseek(capture_fd, 0, SEEK_SET) < 0)
        abort();
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    dup2(capture_fd, STDERR_FILENO);
}

/* Restores stderr; what was written is in captured[0..captured_len), NUL-terminated. */
static void capture_end(void)
{
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    ssize_t n = pread(capture_fd, captured, sizeof captured - 1, 0);
    captured_len = n > 0 ? (size_t)n : 0;
    captured[captured_len] = '\0';
}

/* The one line captured, parsed; NULL (and a failed check) unless it is exactly one line of
 * one JSON object with no raw control character. Caller deletes. */
static cJSON *one_json_line(void)
{
    CHECK(captured_len > 0 && captured[captured_len - 1] == '\n');
    size_t controls = 0;
    for (size_t i = 0; i + 1 < captured_len; i++)
        controls += (unsigned char)captured[i] < 0x20;
    CHECK_EQ_INT(controls, 0);
    cJSON *o = cJSON_Parse(captured);
    CHECK(cJSON_IsObject(o));
    if (!cJSON_IsObject(o))
        fprintf(stderr, "    line: %s", captured);
    return cJSON_IsObject(o) ? o : (cJSON_Delete(o), NULL);
}

static const char *str_member(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int members(const cJSON *o)
{
    return cJSON_GetArraySize(o);
}

/* "2026-12-02T09:21:58.690Z" */
static int is_rfc3339_ms(const char *t)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (!t || strlen(t) != sizeof shape - 1)
        return 0;
    for (size_t i = 0; shape[i]; i++)
        if (shape[i] == 'd' ? (t[i] < '0' || t[i] > '9') : t[i] != shape[i])
            return 0;
    return 1;
}

static void test_fields(void)
{
    capture_begin();
    log_write(LOG_WARN, LOG_CTX_JOB, "req-7", "hello %d", 5);
    capture_end();
    cJSON *o = one_json_line();
    if (!o)
        return;
    CHECK(is_rfc3339_ms(str_member(o, "time")));
    CHECK_STR(str_member(o, "level"), "warn");
    CHECK_STR(str_member(o, "process"), "test-log");
    const cJSON *pid = cJSON_GetObjectItemCaseSensitive(o, "pid");
    CHECK(cJSON_IsNumber(pid) && (long)pid->valuedouble == (long)getpid());
    CHECK_STR(str_member(o, "requestId"), "req-7");
    CHECK_STR(str_member(o, "message"), "hello 5");
    CHECK_EQ_INT(members(o), 6);
    /* The fixed members come first, in this order, and the message last. */
    CHECK(strncmp(captured, "{\"time\":\"", 9) == 0);
    CHECK(strstr(captured, "\",\"level\":\"warn\",\"process\":\"test-log\",\"pid\":") != NULL);
    CHECK(strstr(captured, ",\"requestId\":\"req-7\",\"message\":\"hello 5\"}\n") != NULL);
    cJSON_Delete(o);
}

/* Which member each kind of context goes into. */
static void test_contexts(void)
{
    static const char job[] = "01938a6e-7c1d-7a2b-8c3d-4e5f60718293";
    static const struct {
        enum log_ctx kind;
        const char *ctx, *member;
    } cases[] = {
        {LOG_CTX_JOB, "req-12", "requestId"},
        {LOG_CTX_JOB, "conn-3", "connectionId"},
        {LOG_CTX_JOB, job, "jobId"},
        {LOG_CTX_JOB, "01938A6E-7C1D-7A2B-8C3D-4E5F60718293", "jobId"},
        {LOG_CTX_JOB, "prep", "module"},
        {LOG_CTX_JOB, "", "module"},
        {LOG_CTX_JOB, "01938a6e-7c1d-7a2b-8c3d-4e5f6071829", "module"}, /* one digit short */
        /* The kind names a UUID only: other shapes keep their own member. */
        {LOG_CTX_RECOVERY, "req-3", "requestId"},
        {LOG_CTX_SUB, "prep", "module"},
        {LOG_CTX_SUB, job, "subscriptionId"},
        {LOG_CTX_EVENT, job, "eventId"},
        {LOG_CTX_JOB, job, "jobId"},
        {LOG_CTX_RECOVERY, job, "recoveryId"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        capture_begin();
        log_write(LOG_INFO, cases[i].kind, cases[i].ctx, "x");
        capture_end();
        cJSON *o = one_json_line();
        if (!o)
            continue;
        CHECK_STR(str_member(o, cases[i].member), cases[i].ctx);
        CHECK_EQ_INT(members(o), 6);
        cJSON_Delete(o);
    }
    capture_begin();
    log_write(LOG_ERROR, LOG_CTX_JOB, NULL, "no context");
    capture_end();
    cJSON *o = one_json_line();
    if (o) {
        CHECK_EQ_INT(members(o), 5);
        CHECK_STR(str_member(o, "level"), "error");
        CHECK_STR(str_member(o, "message"), "no context");
        cJSON_Delete(o);
    }
    /* A context is escaped like the message. */
    capture_begin();
    log_write(LOG_INFO, LOG_CTX_JOB, "a\"b\n", "x");
    capture_end();
    o = one_json_line();
    if (o) {
        CHECK_STR(str_member(o, "module"), "a\"b\n");
        cJSON_Delete(o);
    }
}

/* What a peer could put in a message: quotes, backslashes, control characters, and bytes that
 * are not UTF-8 (stray continuation, truncated sequence, overlong form, surrogate, > U+10FFFF). */
static void test_hostile(void)
{
    static const char msg[] = "q\" b\\ n\n r\r t\t soh\x01 esc\x1b del\x7f "
                              "ok:\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 "
                              "bad:\xff|\x80|\xc3|\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|\xe2\x82";
    static const char want[] = "q\" b\\ n\n r\r t\t soh\x01 esc\x1b del\x7f "
                               "ok:\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 "
                               "bad:\xef\xbf\xbd|\xef\xbf\xbd|\xef\xbf\xbd|"
                               "\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|"
                               "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|"
                               "\xef\xbf\xbd\xef\xbf\xbd";
    capture_begin();
    log_write(LOG_INFO, LOG_CTX_JOB, "req-1", "peer said: %s", msg);
    capture_end();
    cJSON *o = one_json_line();
    if (!o)
        return;
    const char *got = str_member(o, "message");
    CHECK(got && strncmp(got, "peer said: ", 11) == 0);
    if (got)
        CHECK_STR(got + 11, want);
    CHECK(strstr(captured, "soh\\u0001 esc\\u001b del\\u007f ") != NULL);
    CHECK(strstr(captured, "q\\\" b\\\\ n\\n r\\r t\\t") != NULL);
    CHECK(strstr(captured, "bad:\\ufffd|") != NULL);
    cJSON_Delete(o);

    /* A NUL inside the message (%c) is escaped, not an end of line. */
    capture_begin();
    log_write(LOG_INFO, LOG_CTX_JOB, NULL, "a%cb", 0);
    capture_end();
    CHECK(strstr(captured, "\"message\":\"a\\u0000b\"}\n") != NULL);
}

/* A message that escapes to more than a line holds is cut, and the line stays one valid object. */
static void test_long(void)
{
    char big[3000];
    memset(big, '"', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    capture_begin();
    log_write(LOG_INFO, LOG_CTX_JOB, "req-2", "%s", big);
    capture_end();
    CHECK(captured_len <= 4096);
    cJSON *o = one_json_line();
    if (o) {
        const char *m = str_member(o, "message");
        CHECK(m && strlen(m) > 1000 && strlen(m) < sizeof big - 1);
        CHECK(m && strspn(m, "\"") == strlen(m));
        CHECK_STR(str_member(o, "requestId"), "req-2");
        cJSON_Delete(o);
    }
    /* Cut inside multi-byte characters: never half a character. */
    char wide[2100];
    size_t n = 0;
    while (n + 3 < sizeof wide) {
        memcpy(wide + n, "\xe2\x82\xac", 3);
        n += 3;
    }
    wide[n] = '\0';
    capture_begin();
    log_write(LOG_INFO, LOG_CTX_JOB, NULL, "%s", wide);
    capture_end();
    o = one_json_line();
    if (o) {
        const char *m = str_member(o, "message");
        CHECK(m && strlen(m) > 1000);
        /* The text buffer's cut may leave a partial euro at the end: replaced, not passed on. */
        size_t euros = 0;
        while (m && memcmp(m + 3 * euros, "\xe2\x82\xac", 3) == 0)
            euros++;
        CHECK(m && (m[3 * euros] == '\0' || strcmp(m + 3 * euros, "\xef\xbf\xbd") == 0 ||
                    strcmp(m + 3 * euros, "\xef\xbf\xbd\xef\xbf\xbd") == 0));
        cJSON_Delete(o);
    }
}

/* LOG_FORMAT=text keeps the line it always had. */
static void test_text(void)
{
    CHECK_EQ_INT(log_set_format("bogus"), -1);
    CHECK_EQ_INT(log_set_format("JSON"), -1);
    CHECK_EQ_INT(log_set_format("text"), 0);
    capture_begin();
    log_write(LOG_WARN, LOG_CTX_SUB, "prep", "hello %s", "there");
    capture_end();
    char want[64];
    snprintf(want, sizeof want, "Z test-log[%d] WARN prep: hello there\n", (int)getpid());
    CHECK(captured_len > strlen(want) && strcmp(captured + captured_len - strlen(want), want) == 0);
    CHECK(captured[0] == '2' && captured[10] == 'T');
    CHECK_EQ_INT(log_set_format("json"), 0);
}

/* Lines under the level are not written, and their arguments not evaluated. */
static void test_level(void)
{
    int evaluated = 0;
    CHECK_EQ_INT(log_set_level("info"), 0);
    capture_begin();
    log_debug("prep", "%d", ++evaluated);
    log_sub(LOG_DEBUG, "x", "%d", ++evaluated);
    capture_end();
    CHECK_EQ_INT(evaluated, 0);
    CHECK_EQ_INT(captured_len, 0);
    CHECK_EQ_INT(log_set_level("debug"), 0);
    capture_begin();
    log_debug("prep", "%d", ++evaluated);
    capture_end();
    CHECK_EQ_INT(evaluated, 1);
    cJSON *o = one_json_line();
    if (o) {
        CHECK_STR(str_member(o, "level"), "debug");
        CHECK_STR(str_member(o, "module"), "prep");
        cJSON_Delete(o);
    }
}

int main(int argc, char **argv)
{
    (void)argc;
    log_set_program("test-log");
    CHECK_EQ_INT(log_set_format("json"), 0);
    test_fields();
    test_contexts();
    test_hostile();
    test_long();
    test_text();
    test_level();
    return unit_done(argv[0]);
}
