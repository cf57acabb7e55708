/* Unit tests for webhookctl's pure parts: option parsing (cli/args.c), table cells and
 * alignment (cli/table.c), path and query escaping (cli/api.c), exit codes by status. */
#include "../../cli/api.h"
#include "../../cli/args.h"
#include "../../cli/table.h"
#include "mem.h"
#include "unit.h"

#include <stdarg.h>
#include <stdlib.h>

static const struct opt cmd_opts[] = {
    {"event", "NAME", 0, "the event"},
    {"header", "K=V", OPT_REPEAT, "a header"},
    {"all", NULL, 0, "every page"},
    {NULL, NULL, 0, NULL},
};
static const struct opt global_opts[] = {
    {"json", NULL, 0, "raw"},
    {"api-url", "URL", 0, "broker"},
    {NULL, NULL, 0, NULL},
};

static int parse(struct args *a, char *err, size_t errlen, int argc, ...)
{
    static char *argv[32];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    return args_parse(a, argc, argv, cmd_opts, global_opts, err, errlen);
}

static void test_args(void)
{
    struct args a;
    char err[128];
    CHECK_EQ_INT(parse(&a, err, sizeof err, 8, "e1", "--event", "book", "--header=A=1", "id",
                       "--json", "--header", "B=2"),
                 0);
    CHECK_EQ_INT(a.npos, 2);
    CHECK_STR(a.pos[0], "e1");
    CHECK_STR(a.pos[1], "id");
    CHECK_STR(args_get(&a, "event"), "book");
    CHECK(args_has(&a, "json"));
    CHECK(!args_has(&a, "all"));
    int i = 0;
    CHECK_STR(args_next(&a, "header", &i), "A=1");
    CHECK_STR(args_next(&a, "header", &i), "B=2");
    CHECK(args_next(&a, "header", &i) == NULL);
    CHECK(!a.help);

    /* "--" ends the options; "-" is a value; -h is help */
    CHECK_EQ_INT(parse(&a, err, sizeof err, 4, "--", "--event", "-", "-h"), 0);
    CHECK_EQ_INT(a.npos, 3);
    CHECK_STR(a.pos[1], "-");
    CHECK(!args_has(&a, "event"));
    CHECK_EQ_INT(parse(&a, err, sizeof err, 2, "x", "-h"), 0);
    CHECK(a.help);

    CHECK_EQ_INT(parse(&a, err, sizeof err, 1, "--bogus"), -1);
    CHECK_STR(err, "unknown option --bogus");
    CHECK_EQ_INT(parse(&a, err, sizeof err, 1, "--event"), -1);
    CHECK_STR(err, "--event needs a value (NAME)");
    CHECK_EQ_INT(parse(&a, err, sizeof err, 4, "--event", "a", "--event", "b"), -1);
    CHECK_STR(err, "--event is given twice");
    CHECK_EQ_INT(parse(&a, err, sizeof err, 1, "--all=yes"), -1);
    CHECK_STR(err, "--all takes no value");
    CHECK_EQ_INT(parse(&a, err, sizeof err, 1, "-x"), -1);
    CHECK_EQ_INT(parse(&a, err, sizeof err, 9, "1", "2", "3", "4", "5", "6", "7", "8", "9"), -1);
}

static void check_cell(const char *json, const char *want)
{
    cJSON *j = cJSON_Parse(json);
    char *got = table_cell(j);
    CHECK_STR(got, want);
    free(got);
    cJSON_Delete(j);
}

static void test_cells(void)
{
    check_cell("null", "-");
    check_cell("true", "true");
    check_cell("42", "42");
    check_cell("-3", "-3");
    check_cell("2.5", "2.5");
    check_cell("\"ok\\n\"", "ok");
    check_cell("\"a\\tb\\r\\nc\\u0001\"", "a\\tb\\r\\nc?");
    check_cell("{\"a\": [1, 2]}", "{\"a\":[1,2]}");
    char *missing = table_cell(NULL);
    CHECK_STR(missing, "-");
    free(missing);

    cJSON *o = cJSON_Parse("{\"a\":{\"b\":7}}");
    CHECK_EQ_INT(cJSON_GetNumberValue(table_get(o, "a.b")), 7);
    CHECK(table_get(o, "a.c") == NULL);
    CHECK(table_get(o, "a.b.c") == NULL);
    cJSON_Delete(o);
}

static void test_table(void)
{
    static const struct col cols[] = {{"ID", "id"}, {"NAME", "n"}, {"X", "x"}, {NULL, NULL}};
    cJSON *arr = cJSON_Parse("[{\"id\":\"1\",\"n\":\"élan\",\"x\":null},"
                             "{\"id\":\"long-id\",\"n\":\"b\",\"x\":3}]");
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    table_print(f, arr, cols);
    fclose(f);
    CHECK_STR(out, "ID       NAME  X\n"
                   "1        élan  -\n"
                   "long-id  b     3\n");
    free(out);
    cJSON_Delete(arr);

    cJSON *obj = cJSON_Parse("{\"id\":\"x\",\"eventName\":\"e\",\"jobs\":[]}");
    static const char *const skip[] = {"jobs", NULL};
    f = open_memstream(&out, &len);
    table_kv(f, obj, skip);
    fclose(f);
    CHECK_STR(out, "id:        x\neventName: e\n");
    free(out);
    cJSON_Delete(obj);
}

static void test_escaping(void)
{
    struct buf p = {0};
    buf_adds(&p, "/api/v0/webhooks");
    api_seg(&p, "a:b/c d");
    api_query(&p, "since", "2026-12-02T07:00:00+02:00");
    api_query(&p, "skip", NULL);
    api_query(&p, "q", "x&y=z~_.-");
    CHECK_STR(p.data, "/api/v0/webhooks/a%3Ab%2Fc%20d?since=2026-12-02T07%3A00%3A00%2B02%3A00"
                      "&q=x%26y%3Dz~_.-");
    buf_free(&p);
}

static void test_exit_codes(void)
{
    CHECK_EQ_INT(api_exit_code(200), EXIT_OK);
    CHECK_EQ_INT(api_exit_code(202), EXIT_OK);
    CHECK_EQ_INT(api_exit_code(400), EXIT_CLIENT);
    CHECK_EQ_INT(api_exit_code(403), EXIT_CLIENT);
    CHECK_EQ_INT(api_exit_code(404), EXIT_CLIENT);
    CHECK_EQ_INT(api_exit_code(401), EXIT_AUTH);
    CHECK_EQ_INT(api_exit_code(500), EXIT_SERVER);
    CHECK_EQ_INT(api_exit_code(503), EXIT_SERVER);
    CHECK_EQ_INT(api_exit_code(302), EXIT_SERVER);
}

int main(int argc, char **argv)
{
    (void)argc;
    test_args();
    test_cells();
    test_table();
    test_escaping();
    test_exit_codes();
    return unit_done(argv[0]);
}
