/* The held protocol's scripts (common/held.h): pausing a subscription's delivery state in
 * Redis, and releasing its held jobs to the job stream, oldest first. */
#include "held.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* KEYS: ctl. ARGV: version, state. */
static const char pause_lua[] = "local v = redis.call('HGET', KEYS[1], 'v') "
                                "if v and tonumber(v) > tonumber(ARGV[1]) then return 0 end "
                                "redis.call('HSET', KEYS[1], 'st', ARGV[2], 'v', ARGV[1]) return 1";

/* KEYS: ctl, held, held-subs, jobs. ARGV: sub, max, version ('' = leave ctl), stream field.
 * unpack() of max <= HELD_RELEASE_CHUNK members stays far below Lua's stack limit. */
static const char release_lua[] =
    "if ARGV[3] ~= '' then "
    "  local v = redis.call('HGET', KEYS[1], 'v') "
    "  if v and tonumber(v) > tonumber(ARGV[3]) then return 0 end "
    "  redis.call('HSET', KEYS[1], 'st', 'active', 'v', ARGV[3]) "
    "end "
    "local m = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1) "
    "for i = 1, #m do redis.call('XADD', KEYS[4], '*', ARGV[4], m[i]) end "
    "if #m > 0 then redis.call('ZREM', KEYS[2], unpack(m)) end "
    "local left = redis.call('ZCARD', KEYS[2]) "
    "if left == 0 then redis.call('DEL', KEYS[2]) redis.call('SREM', KEYS[3], ARGV[1]) end "
    "return left";

static void add(struct held_cmd *c, const char *p, size_t n)
{
    if (c->argc >= (int)(sizeof c->argv / sizeof c->argv[0]))
        abort(); /* a programming error: the array is sized for the longest command */
    c->argv[c->argc] = p;
    c->lens[c->argc++] = n;
}

static void adds(struct held_cmd *c, const char *s)
{
    add(c, s, strlen(s));
}

void held_pause_cmd(struct held_cmd *c, unsigned part, const char *sub, long long version)
{
    memset(c, 0, sizeof *c);
    snprintf(c->sub, sizeof c->sub, "%s", sub);
    snprintf(c->version, sizeof c->version, "%lld", version);
    add(c, "EVAL", 4);
    add(c, pause_lua, sizeof pause_lua - 1);
    add(c, "1", 1);
    add(c, c->keys[0], key_ctl(c->keys[0], part, c->sub));
    adds(c, c->version);
    adds(c, "paused");
}

void held_release_cmd(struct held_cmd *c, unsigned part, const char *sub, long max,
                      long long version)
{
    memset(c, 0, sizeof *c);
    snprintf(c->sub, sizeof c->sub, "%s", sub);
    snprintf(c->num, sizeof c->num, "%ld", max > 0 ? max : 1);
    if (version >= 0)
        snprintf(c->version, sizeof c->version, "%lld", version);
    add(c, "EVAL", 4);
    add(c, release_lua, sizeof release_lua - 1);
    add(c, "4", 1);
    add(c, c->keys[0], key_ctl(c->keys[0], part, c->sub));
    add(c, c->keys[1], key_held(c->keys[1], part, c->sub));
    add(c, c->keys[2], key_held_subs(c->keys[2], part));
    add(c, c->keys[3], key_jobs(c->keys[3], part));
    adds(c, c->sub);
    adds(c, c->num);
    adds(c, c->version);
    adds(c, KEYS_STREAM_FIELD);
}
