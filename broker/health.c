/* GET /healthz (the process runs) and GET /readyz (Redis and PostgreSQL are reachable). */
#include "api.h"

void api_healthz(struct req *r)
{
    struct buf b = {0};
    buf_adds(&b, "{\"status\":\"ok\"}");
    http_reply(r, 200, &b);
}

void api_readyz(struct req *r)
{
    struct broker *br = r->b;
    bool redis = rds_up(br->redis);
    /* PostgreSQL counts as up once the API keys were read from it too (broker/auth.c): a
     * broker put in service before that would refuse the api_keys table's keys. */
    bool pg =
        pg_up(br->pg_commit) && pg_up(br->pg_fanout) && pg_up(br->pg_api) && auth_ready();
    bool ready = redis && pg && !br->draining;
    struct buf b = {0};
    buf_printf(&b, "{\"status\":\"%s\",\"redis\":\"%s\",\"postgres\":\"%s\"}",
               ready ? "ready" : "unavailable", redis ? "up" : "down", pg ? "up" : "down");
    http_reply(r, ready ? 200 : 503, &b);
}
