/* Unit tests for common/keys.c: the index rebuild token shares the ready mark's Redis Cluster
 * hash slot (one script touches both), whatever the prefix. */
#include "keys.h"
#include "unit.h"

/* The part of a key Redis Cluster hashes: the first {...} with something inside, else all. */
static void hashed_part(const char *key, char *out, size_t outlen)
{
    const char *open = strchr(key, '{');
    const char *close = open ? strchr(open + 1, '}') : NULL;
    if (open && close && close > open + 1)
        snprintf(out, outlen, "%.*s", (int)(close - open - 1), open + 1);
    else
        snprintf(out, outlen, "%s", key);
}

static void check_prefix(const char *prefix)
{
    char ready[KEY_MAX], token[KEY_MAX], a[KEY_MAX], b[KEY_MAX];
    CHECK(keys_set_prefix(prefix) == 0);
    CHECK_EQ_INT(key_index_ready(ready), strlen(ready));
    CHECK_EQ_INT(key_index_rebuild(token), strlen(token));
    CHECK(strcmp(ready, token) != 0);
    hashed_part(ready, a, sizeof a);
    hashed_part(token, b, sizeof b);
    CHECK_STR(a, b);
}

int main(int argc, char **argv)
{
    (void)argc;
    check_prefix("wh:");
    check_prefix("app.webhooks:");
    check_prefix("");
    char token[KEY_MAX];
    CHECK(keys_set_prefix("wh:") == 0);
    key_index_rebuild(token);
    CHECK_STR(token, "{wh:index-ready}:rebuild");
    CHECK(keys_set_prefix("{x}:") < 0); /* why the token's tag can wrap the whole ready key */
    return unit_done(argv[0]);
}
