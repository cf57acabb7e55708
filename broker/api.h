/* Route handlers of the broker's HTTP API (docs/api.md). Each replies exactly once. */
#ifndef WH_API_H
#define WH_API_H

#include <stdint.h>

#include "http.h"

void api_healthz(struct req *r);
void api_readyz(struct req *r);

void subs_register(struct req *r);   /* POST /api/v0/webhooks */
void subs_list(struct req *r);       /* GET /api/v0/webhooks */
void subs_list_event(struct req *r); /* GET /api/v0/webhooks/<name> */
void subs_get(struct req *r);        /* GET /api/v0/webhooks/<name>/<id> */
void subs_delete(struct req *r);     /* DELETE /api/v0/webhooks/<name>/<id> */
void subs_patch(struct req *r);      /* PATCH /api/v0/webhooks/<name>/<id> */
/* POST /api/v0/webhooks/<name>/<id>/rotate-secret */
void subs_rotate_secret(struct req *r);
/* Rebuilds the Redis event index from PostgreSQL when it is not known to be complete. */
void subs_index_ensure(struct broker *b);
/* The Redis connection was lost: a rebuild under way ends without the ready mark (Redis may
 * come back from an older snapshot holding the rebuild's token but not its later entries). */
void subs_index_redis_lost(void);

void trigger_post(struct req *r); /* POST /api/v0/trigger-event/<name> */
void events_get(struct req *r);   /* GET /api/v0/events/<id> */

void jobs_list(struct req *r); /* GET /api/v0/jobs */
void jobs_get(struct req *r);  /* GET /api/v0/jobs/<id> */

void admin_delivery_get(struct req *r); /* GET /api/v0/admin/delivery */
void admin_delivery_put(struct req *r); /* PUT /api/v0/admin/delivery */

/* Sending finished jobs again (broker/recover.c, issue 10). */
void recover_retry(struct req *r);  /* POST /api/v0/jobs/<id>/retry */
void recover_start(struct req *r);  /* POST /api/v0/webhooks/<name>/<id>/recover */
void recover_get(struct req *r);    /* GET /api/v0/webhooks/<name>/<id>/recover/<rid> */
void recover_replay(struct req *r); /* POST /api/v0/events/<id>/replay */
/* Resumes the recoveries PostgreSQL calls running (start-up, reconnect): any broker may. */
void recover_resume(struct broker *b);
void status_get(struct req *r); /* GET /api/v0/webhooks/<name>/<id>/status */
void stats_get(struct req *r);  /* GET /api/v0/stats */

/* API keys (broker/keys.c, issue 13, decision 45): admin only, except whoami (any key). */
void keys_create(struct req *r); /* POST /api/v0/keys */
void keys_list(struct req *r);   /* GET /api/v0/keys */
void keys_revoke(struct req *r); /* DELETE /api/v0/keys/<id> */
void keys_whoami(struct req *r); /* GET /api/v0/whoami */

void openapi_get(struct req *r); /* GET /api/v0/openapi.json (no API key) */

/* Metrics (broker/sample.c, docs/metrics.md). */
void sample_get(struct req *r); /* GET /metrics (no API key): the last sample, never a query */
/* The periodic tick's sub-period: samples the queue (Redis) and database gauges, one round at a
 * time, every METRICS_SAMPLE_INTERVAL. */
void sample_tick(struct broker *b, int64_t now_mono_ms);
/* Names the process and its partitions to common/metrics.c (before anything counts). */
void sample_start(struct broker *b);
void sample_free(void); /* after the loop */
/* The web console's built-in files (broker/console.c, decision 38; no API key). */
void console_index(struct req *r);     /* GET / */
void console_app_js(struct req *r);    /* GET /console/app.js */
void console_style_css(struct req *r); /* GET /console/style.css */

#endif
