/* Test helper (not a unit test): prints Redis Cluster hash slots as common/cluster.c computes
 * them, for tests/integration/test_cluster_keys.py to compare with a real cluster's
 * CLUSTER KEYSLOT.
 *   keyslot                       one key per line on stdin -> "<slot>" per line
 *   keyslot --keys PREFIX PARTS SUB EVENT NAME...
 *                                 every key common/keys.c formats, for partitions 0..PARTS-1
 *                                 and the given subscription id, event id and event names
 *                                 (the index keys in both modes: "event", and "cluster-event" /
 *                                 "cluster-event-tenant" / "cluster-index-ready" as on a
 *                                 redis-cluster:// URL):
 *                                 "<kind>\t<partition or ->\t<key>\t<slot>" per line */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "keys.h"

static void put(const char *kind, long part, const char *key, size_t len)
{
    char p[24] = "-";
    if (part >= 0)
        snprintf(p, sizeof p, "%ld", part);
    printf("%s\t%s\t%.*s\t%u\n", kind, p, (int)len, key, cluster_slot(key, len));
}

static int print_keys(int argc, char **argv)
{
    char *end;
    long parts = argc >= 4 ? strtol(argv[1], &end, 10) : 0;
    if (argc < 4 || *end || parts < 1 || parts > 4096 || keys_set_prefix(argv[0]) < 0) {
        fprintf(stderr, "usage: keyslot --keys PREFIX PARTS SUB EVENT NAME...\n");
        return 2;
    }
    const char *sub = argv[2], *event = argv[3];
    char k[KEY_MAX];
    put("index-ready", -1, k, key_index_ready(k));
    put("index-rebuild", -1, k, key_index_rebuild(k));
    put("index-patterns", -1, k, key_index_patterns(k));
    for (int i = 4; i < argc; i++)
        put("event", -1, k, key_event(k, NULL, argv[i], strlen(argv[i])));
    keys_set_cluster(true); /* redis-cluster://: the index in the ready mark's slot */
    put("cluster-index-ready", -1, k, key_index_ready(k));
    for (int i = 4; i < argc; i++) {
        put("cluster-event", -1, k, key_event(k, NULL, argv[i], strlen(argv[i])));
        put("cluster-event-tenant", -1, k, key_event(k, "acme", argv[i], strlen(argv[i])));
    }
    keys_set_cluster(false);
    for (long p = 0; p < parts; p++) {
        unsigned u = (unsigned)p;
        put("jobs", p, k, key_jobs(k, u));
        put("retry", p, k, key_retry(k, u));
        put("live", p, k, key_live(k, u));
        put("dead", p, k, key_dead(k, u));
        put("payload", p, k, key_payload(k, u, event));
        put("ctl", p, k, key_ctl(k, u, sub));
        put("ctl-prefix", p, k, key_ctl(k, u, ""));
        put("held", p, k, key_held(k, u, sub));
        put("held-subs", p, k, key_held_subs(k, u));
        put("rate", p, k, key_rate(k, u, sub));
        put("batch-pend", p, k, key_batch_pend(k, u, sub));
        put("batch-pend-prefix", p, k, key_batch_pend(k, u, ""));
        put("batch-subs", p, k, key_batch_subs(k, u));
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--keys") == 0)
        return print_keys(argc - 2, argv + 2);
    if (argc != 1) {
        fprintf(stderr, "usage: keyslot < keys | keyslot --keys PREFIX PARTS SUB EVENT NAME...\n");
        return 2;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        size_t len = (size_t)n;
        if (len && line[len - 1] == '\n')
            len--;
        printf("%u\n", cluster_slot(line, len));
    }
    free(line);
    return 0;
}
