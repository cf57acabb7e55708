/* Where webhookctl finds the broker and its API key: flags, the environment, ./.env, make
 * run's development key. */
#ifndef WH_CLI_CONFIG_H
#define WH_CLI_CONFIG_H

#include "cli.h"

/* Fills c->api_url and c->api_key (caller frees both with config_free). url and key are the
 * --api-url / --api-key values or NULL. Order, first set wins: the flag; WEBHOOK_API_URL /
 * WEBHOOK_API_KEY from the environment, then from ./.env; for the key, the first of
 * WEBHOOK_API_KEYS (environment, then .env), then .run/api-key (make run's development key);
 * for the URL, http://<BROKER_LISTEN> (environment, then .env), then http://127.0.0.1:8080. */
void config_resolve(struct cli *c, const char *url, const char *key);
void config_free(struct cli *c);

#endif
