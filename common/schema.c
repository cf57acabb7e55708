/* PostgreSQL schema: numbered migrations, applied at start-up under an advisory lock and
 * recorded in schema_migrations. */
#include "schema.h"

#include <stdlib.h>

#include "mem.h"

/* Append-only: never edit a migration that has shipped; add a new one. Statements run inside
 * a PL/pgSQL block, so each ends with ';'.
 *
 * The hot tables carry no foreign keys and only the indexes a query needs (docs/decisions.md):
 * the writers enforce the references (jobs are inserted joined with active subscriptions,
 * attempts joined with jobs) and retention deletes children explicitly. Ids are UUIDv7, so
 * "older than" is an id range on the primary key. */
static const char *const migrations[] = {
    /* 1: subscriptions, events, jobs, attempts */
    "CREATE TABLE subscriptions ("
    "  id uuid PRIMARY KEY,"
    "  event_name text NOT NULL,"
    "  url text NOT NULL,"
    "  secret text NOT NULL,"
    "  headers jsonb NOT NULL DEFAULT '{}',"
    "  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted')),"
    "  created_at timestamptz NOT NULL DEFAULT now(),"
    "  updated_at timestamptz NOT NULL DEFAULT now(),"
    "  deleted_at timestamptz);"
    "CREATE UNIQUE INDEX subscriptions_event_url ON subscriptions (event_name, url)"
    "  WHERE status = 'active';"
    "CREATE INDEX subscriptions_active_created ON subscriptions (created_at, id)"
    "  WHERE status = 'active';"
    "CREATE TABLE events ("
    "  id uuid PRIMARY KEY,"
    "  event_name text NOT NULL,"
    "  payload bytea NOT NULL,"
    "  idempotency_key text,"
    "  created_at timestamptz NOT NULL DEFAULT now());"
    "CREATE UNIQUE INDEX events_idempotency_key ON events (idempotency_key)"
    "  WHERE idempotency_key IS NOT NULL;"
    "CREATE TABLE jobs ("
    "  id uuid PRIMARY KEY,"
    "  event_id uuid NOT NULL,"
    "  subscription_id uuid NOT NULL,"
    "  url text NOT NULL,"
    "  partition int NOT NULL DEFAULT 0,"
    "  status text NOT NULL DEFAULT 'queued'"
    "    CHECK (status IN ('queued', 'retrying', 'delivered', 'dead', 'cancelled')),"
    "  attempts int NOT NULL DEFAULT 0,"
    "  next_attempt_at timestamptz,"
    "  last_status_code int,"
    "  last_error text,"
    "  created_at timestamptz NOT NULL DEFAULT now(),"
    "  updated_at timestamptz NOT NULL DEFAULT now(),"
    "  delivered_at timestamptz);"
    "CREATE INDEX jobs_event ON jobs (event_id);"
    "CREATE INDEX jobs_unfinished ON jobs (created_at, id) WHERE status IN ('queued', 'retrying');"
    "CREATE TABLE attempts ("
    "  job_id uuid NOT NULL,"
    "  attempt int NOT NULL,"
    "  started_at timestamptz NOT NULL,"
    "  duration_ms int NOT NULL,"
    "  status_code int,"
    "  error text,"
    "  response_excerpt text,"
    "  PRIMARY KEY (job_id, attempt));",
    /* 2: secret rotation. The secret a rotation replaced keeps signing (next to the new one)
     * until previous_secret_expires_at; both are NULL when there is none. */
    "ALTER TABLE subscriptions ADD COLUMN previous_secret text,"
    "  ADD COLUMN previous_secret_expires_at timestamptz;",
    /* 3: secrets at rest. The secret columns hold "enc:v1:<key id>:<base64>" (common/secretbox.h;
     * the broker encrypts values written before this at start-up). A deleted subscription keeps
     * no secret, and a previous secret whose grace is over is cleared (by the reconciler). */
    "ALTER TABLE subscriptions ALTER COLUMN secret DROP NOT NULL,"
    "  ADD CONSTRAINT subscriptions_active_secret CHECK (status <> 'active' OR secret IS NOT NULL);"
    "UPDATE subscriptions SET secret = NULL, previous_secret = NULL,"
    "  previous_secret_expires_at = NULL WHERE status = 'deleted';"
    "UPDATE subscriptions SET previous_secret = NULL, previous_secret_expires_at = NULL"
    "  WHERE previous_secret_expires_at <= now();"
    "CREATE INDEX subscriptions_previous_expiry ON subscriptions (previous_secret_expires_at)"
    "  WHERE previous_secret_expires_at IS NOT NULL;",
    /* 4: idempotent triggers. A keyed event keeps, beside its key (unique among the keyed rows:
     * the arbiter between brokers), when the key was first used, the SHA-256 of its payload
     * and the number of jobs it created, so that a repeat is compared and answered from the
     * row alone. All four are NULL on an event triggered without a key, and cleared together
     * once the key is SCHEMA_IDEMPOTENCY_TTL old (by the reconciler; a trigger also treats such
     * a key as free). No code wrote idempotency_key before this migration. */
    "ALTER TABLE events ADD COLUMN idempotency_at timestamptz,"
    "  ADD COLUMN idempotency_sha256 bytea,"
    "  ADD COLUMN idempotency_jobs int;"
    "UPDATE events SET idempotency_key = NULL WHERE idempotency_key IS NOT NULL;"
    "CREATE INDEX events_idempotency_at ON events (idempotency_at)"
    "  WHERE idempotency_key IS NOT NULL;",
    /* 5: the global delivery switch (PUT /api/v0/admin/delivery, docs/decisions.md 23): one row
     * that always exists; changed_at moves only when status changes. */
    "CREATE TABLE delivery_switch ("
    "  id boolean PRIMARY KEY DEFAULT true CHECK (id),"
    "  status text NOT NULL DEFAULT 'online' CHECK (status IN ('online', 'offline')),"
    "  message text,"
    "  changed_at timestamptz NOT NULL DEFAULT now());"
    "INSERT INTO delivery_switch DEFAULT VALUES;",
    /* 6: subscription controls (docs/decisions.md 24). status stays the lifecycle ('active':
     * exists, 'deleted'); the delivery state beside it is paused_at / disabled_at (the API's
     * "status": disabled when disabled_at is set, else paused when paused_at is set, else
     * active). Settings, as the API accepted them (canonical JSON, common/controls.h):
     * rate_limit, retry_policy, timeout_seconds; NULL = the global default. Health, written by
     * the workers' outcome commit: failures (consecutive failed attempts), failing_since (the
     * first failure of the streak; NULL after a success), circuit_open_until (the breaker is
     * open until then, then lets one probe through; NULL: closed), circuit_cooldown_s (the
     * cooldown that opened it last; NULL: closed), slow_until (a 429/503 Retry-After). A job is
     * created for a paused subscription (it waits), never for a disabled one. */
    "ALTER TABLE subscriptions ADD COLUMN description text,"
    "  ADD COLUMN paused_at timestamptz,"
    "  ADD COLUMN disabled_at timestamptz,"
    "  ADD COLUMN disabled_reason text,"
    "  ADD COLUMN rate_limit jsonb,"
    "  ADD COLUMN retry_policy jsonb,"
    "  ADD COLUMN timeout_seconds int CHECK (timeout_seconds BETWEEN 1 AND 30),"
    "  ADD COLUMN failures int NOT NULL DEFAULT 0,"
    "  ADD COLUMN failing_since timestamptz,"
    "  ADD COLUMN circuit_open_until timestamptz,"
    "  ADD COLUMN circuit_cooldown_s int,"
    "  ADD COLUMN slow_until timestamptz;",
    /* 7: operational events (docs/decisions.md 26). The workers' outcome commit creates the
     * broker.* events and their jobs inside its one statement, so it needs, in SQL, the ids
     * and the partition the processes compute in C: wh_uuidv7() as common/ids.c's id_new
     * (48-bit unix ms, version 7, variant 10, random bits; from gen_random_uuid) and
     * wh_partition() as id_partition (FNV-1a 32-bit over the id's text, mod n). */
    "CREATE FUNCTION wh_uuidv7() RETURNS uuid LANGUAGE sql VOLATILE AS $f$"
    "  SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING"
    "    substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)"
    "    FROM 3) FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid $f$;"
    "CREATE FUNCTION wh_partition(id uuid, n int) RETURNS int LANGUAGE plpgsql IMMUTABLE"
    "  STRICT AS $f$ DECLARE h bigint := 2166136261; t text := id::text; BEGIN"
    "  FOR i IN 1..length(t) LOOP"
    "    h := ((h # ascii(substr(t, i, 1))) * 16777619) & 4294967295;"
    "  END LOOP;"
    "  RETURN (h % n)::int; END $f$;",
    /* jobs: the indexes of GET /api/v0/jobs (docs/decisions.md 27). Every job is written to
     * the two full ones when inserted and again at each status change (a job's updates are not
     * HOT: jobs_unfinished's predicate reads status); jobs_failed only holds dead and cancelled
     * jobs. subscriptions_event_name serves the event filter (deleted subscriptions too: their
     * jobs remain). */
    "CREATE INDEX jobs_created ON jobs (created_at, id);"
    "CREATE INDEX jobs_subscription ON jobs (subscription_id, status, created_at, id);"
    "CREATE INDEX jobs_failed ON jobs (created_at, id) WHERE status IN ('dead', 'cancelled');"
    "CREATE INDEX subscriptions_event_name ON subscriptions (event_name);",
    /* recover (issue 10, docs/decisions.md 28): a bulk re-send of a subscription's dead jobs
     * created in [since, until), worked through in (created_at, id) order by the brokers in
     * chunks; the cursor is the last job looked at, so a broker that restarts resumes after
     * it. Only jobs dead before the recovery began (updated_at <= created_at) are taken: one
     * that dies again after being re-sent is not taken twice. One running recovery per
     * subscription and window (the unique index). The chunks and the count read a range of
     * jobs_subscription (subscription_id, status = 'dead', created_at, id), migration 8. */
    "CREATE TABLE recoveries ("
    "  id uuid PRIMARY KEY,"
    "  subscription_id uuid NOT NULL,"
    "  since timestamptz NOT NULL,"
    "  until timestamptz NOT NULL,"
    "  status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),"
    "  total int NOT NULL,"
    "  done int NOT NULL DEFAULT 0,"
    "  cursor_at timestamptz,"
    "  cursor_id uuid,"
    "  error text,"
    "  created_at timestamptz NOT NULL DEFAULT now(),"
    "  updated_at timestamptz NOT NULL DEFAULT now(),"
    "  finished_at timestamptz);"
    "CREATE UNIQUE INDEX recoveries_running ON recoveries (subscription_id, since, until)"
    "  WHERE status = 'running';",
    /* status: subscription activity and rollups (docs/decisions.md 29). subscription_activity
     * is the lifecycle log (created, updated, paused, resumed, enabled, deleted by the broker;
     * circuit_opened, circuit_reopened, circuit_closed, disabled by the workers' outcome
     * commit), written by the statement that makes the change. The rollups are counters
     * upserted once per batch, never per job: stats_hourly per (hour, event name) by the
     * broker's commit (triggers, jobs) and the outcome commit (delivered, dead, failed
     * attempts, and the operational events it creates); subscription_stats per (subscription,
     * 5-minute bucket) by the outcome commit (delivered, failed attempts, dead, the last
     * success and failure). Each writing connection has rows of its own (backend =
     * pg_backend_pid()), so no two transactions ever wait on a rollup row; readers sum. */
    "CREATE TABLE subscription_activity ("
    "  subscription_id uuid NOT NULL,"
    "  at timestamptz NOT NULL DEFAULT clock_timestamp(),"
    "  kind text NOT NULL,"
    "  detail text,"
    "  n bigint GENERATED ALWAYS AS IDENTITY);" /* orders rows of one statement */
    "CREATE INDEX subscription_activity_sub_at ON subscription_activity (subscription_id, at, n);"
    "CREATE TABLE stats_hourly ("
    "  hour timestamptz NOT NULL,"
    "  event_name text NOT NULL,"
    "  backend int NOT NULL,"
    "  triggers bigint NOT NULL DEFAULT 0,"
    "  jobs bigint NOT NULL DEFAULT 0,"
    "  delivered bigint NOT NULL DEFAULT 0,"
    "  dead bigint NOT NULL DEFAULT 0,"
    "  failed_attempts bigint NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (hour, event_name, backend));"
    "CREATE TABLE subscription_stats ("
    "  subscription_id uuid NOT NULL,"
    "  bucket timestamptz NOT NULL,"
    "  backend int NOT NULL,"
    "  delivered bigint NOT NULL DEFAULT 0,"
    "  failed_attempts bigint NOT NULL DEFAULT 0,"
    "  dead bigint NOT NULL DEFAULT 0,"
    "  last_success_at timestamptz,"
    "  last_failure_at timestamptz,"
    "  PRIMARY KEY (subscription_id, bucket, backend));"
    "CREATE INDEX subscription_stats_bucket ON subscription_stats (bucket);",
    /* jobs search keyed on the UUIDv7 ids (docs/decisions.md 27): a job's time for the API is
     * its id's millisecond (made when the broker accepted the trigger, or when a replay created
     * the job), so the primary key orders the search and jobs_created goes, and the other two
     * indexes end with the id instead of (created_at, id): one index entry less per insert and
     * per status change, and smaller ones. wh_uuid_at(t) is the smallest id of the first whole
     * millisecond at or after t (all bits after the time zero), a search's bound: "created at
     * or after t" is id >= wh_uuid_at(t), "before t" is id < wh_uuid_at(t), as common/ids.c's
     * id_at computes them in C. */
    "CREATE FUNCTION wh_uuid_at(t timestamptz) RETURNS uuid LANGUAGE sql IMMUTABLE STRICT AS $f$"
    "  SELECT (lpad(to_hex(ceil(extract(epoch FROM t) * 1000)::bigint), 12, '0')"
    "    || '00000000000000000000')::uuid $f$;"
    "DROP INDEX jobs_created;"
    "DROP INDEX jobs_subscription;"
    "DROP INDEX jobs_failed;"
    "CREATE INDEX jobs_subscription ON jobs (subscription_id, status, id);"
    "CREATE INDEX jobs_failed ON jobs (id) WHERE status IN ('dead', 'cancelled');",
    /* payload shape (issue 11, docs/decisions.md 31): how the delivered body is built from the
     * event's payload. payload_shape NULL is "raw" (the payload as triggered); payload_fields
     * is json, not jsonb, so the worker splices the broker's canonical compact text as stored
     * (jsonb would print it with spaces and its own key order). */
    "ALTER TABLE subscriptions ADD COLUMN payload_shape text"
    "  CHECK (payload_shape IN ('raw', 'envelope'));"
    "ALTER TABLE subscriptions ADD COLUMN payload_fields json"
    "  CHECK (json_typeof(payload_fields) = 'object');",
    /* payload filters (docs/decisions.md 30): the filter as given (common/filter.h validated
     * it), NULL for none; the event index carries its text. */
    "ALTER TABLE subscriptions ADD COLUMN filter jsonb;",
    /* ordered delivery (issue 11 part 5, docs/decisions.md 33): strict FIFO per subscription,
     * one attempt at a time; the worker's head rule reads jobs_subscription (migration 11). */
    "ALTER TABLE subscriptions ADD COLUMN ordered boolean NOT NULL DEFAULT false;",
    /* event names and patterns (issue 11 part 1, docs/decisions.md 39). event_names: the
     * subscription's names, exact or patterns ("<prefix>.*", "*"), sorted without duplicates
     * (common/evnames.h); event_name stays, the first name the subscription had, never changed
     * again. plain_until is NULL while the subscription has only ever had that one exact name
     * ("plain": every job of it is of that name); otherwise an upper bound of the ids of its
     * jobs made while it was plain (zero for one created otherwise), and each job made for it
     * since carries its event's name in jobs.event_name (NULL for a plain subscription's jobs),
     * which the job search's event filter reads through jobs_named, for the subscriptions
     * whose names_seen (every entry the subscription ever listed) match the name.
     * wh_name_keys(n) is common/evnames.c's evname_keys: the entries that match the event name
     * n. A URL gets each entry from one active subscription at most (the registration checks
     * it under its advisory locks): the unique index only makes (names, URL) the upsert's
     * key. */
    "ALTER TABLE subscriptions ADD COLUMN event_names text[],"
    "  ADD COLUMN names_seen text[],"
    "  ADD COLUMN plain_until uuid;"
    "UPDATE subscriptions SET event_names = ARRAY[event_name], names_seen = ARRAY[event_name];"
    /* a row written the old way (event_name only: scripts, tools, older brokers during a
     * rolling upgrade) is a plain subscription of that name */
    "CREATE FUNCTION wh_subscription_names() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN"
    "  IF NEW.event_names IS NULL THEN NEW.event_names := ARRAY[NEW.event_name]; END IF;"
    "  IF NEW.names_seen IS NULL THEN NEW.names_seen := NEW.event_names; END IF;"
    "  RETURN NEW; END $f$;"
    "CREATE TRIGGER subscriptions_names BEFORE INSERT ON subscriptions"
    "  FOR EACH ROW EXECUTE FUNCTION wh_subscription_names();"
    "ALTER TABLE subscriptions ALTER COLUMN event_names SET NOT NULL,"
    "  ADD CONSTRAINT subscriptions_event_names_count"
    "  CHECK (cardinality(event_names) BETWEEN 1 AND 100);"
    "CREATE FUNCTION wh_names_key(names text[]) RETURNS text LANGUAGE sql IMMUTABLE STRICT"
    "  AS $f$ SELECT md5(array_to_string(names, ',')) $f$;"
    "CREATE FUNCTION wh_name_keys(n text) RETURNS text[] LANGUAGE sql IMMUTABLE STRICT AS $f$"
    "  SELECT ARRAY[n] || ARRAY(SELECT left(n, d.i - 1) || '.*' FROM (SELECT i"
    "    FROM generate_series(1, length(n)) i WHERE substr(n, i, 1) = '.' ORDER BY i LIMIT 8) d"
    "    WHERE d.i > 1 ORDER BY d.i)"
    "  || CASE WHEN left(n, 7) = 'broker.' THEN '{}'::text[] ELSE '{*}'::text[] END $f$;"
    "DROP INDEX subscriptions_event_url;"
    "CREATE UNIQUE INDEX subscriptions_names_url ON subscriptions (wh_names_key(event_names), url)"
    "  WHERE status = 'active';"
    "CREATE INDEX subscriptions_event_names ON subscriptions USING gin (event_names);"
    "CREATE INDEX subscriptions_names_seen ON subscriptions USING gin (names_seen);"
    "ALTER TABLE jobs ADD COLUMN event_name text;"
    "CREATE INDEX jobs_named ON jobs (subscription_id, event_name, status, id)"
    "  WHERE event_name IS NOT NULL;",
    /* batching (issue 11 part 4, docs/decisions.md 40). subscriptions.batching is the setting
     * (NULL: off); a batch is recorded in batches before it is sent, and jobs.batch_id is the
     * one batch a job belongs to (set by a conditional UPDATE, so never two); each job's
     * attempt rows of a batch carry its id. No index on jobs.batch_id: every statement
     * reaches the jobs of a batch by their ids (the primary key). */
    "ALTER TABLE subscriptions ADD COLUMN batching jsonb;"
    "ALTER TABLE jobs ADD COLUMN batch_id uuid;"
    "ALTER TABLE attempts ADD COLUMN batch_id uuid;"
    "CREATE TABLE batches ("
    "  id uuid PRIMARY KEY,"
    "  subscription_id uuid NOT NULL,"
    "  status text NOT NULL DEFAULT 'sending'"
    "    CHECK (status IN ('sending', 'retrying', 'delivered', 'dead', 'cancelled')),"
    "  attempts int NOT NULL DEFAULT 0,"
    "  next_attempt_at timestamptz,"
    "  created_at timestamptz NOT NULL DEFAULT now(),"
    "  updated_at timestamptz NOT NULL DEFAULT now());",
    /* tenants and scoped API keys (issue 13, docs/decisions.md 44). subscriptions.tenant and
     * events.tenant: NULL for global ones (everything before tenants), fixed at creation. The
     * upsert key and the one-subscription-per-URL rule are per tenant, so one tenant's
     * registration can never learn that another tenant uses a URL. api_keys holds the keys
     * made by POST /api/v0/keys: only the SHA-256 of the whole key (never the key), its first
     * characters for recognising it, the roles and the tenant; a revoked key keeps its row
     * (revoked_at set; rows are never deleted, so a broker notices any change by the counts of
     * keys and of revoked keys). WEBHOOK_API_KEYS are not stored: they stay admin keys. */
    "ALTER TABLE subscriptions ADD COLUMN tenant text"
    "  CHECK (tenant ~ '^[A-Za-z0-9_-]{1,64}$');"
    "ALTER TABLE events ADD COLUMN tenant text;"
    "DROP INDEX subscriptions_names_url;"
    "CREATE UNIQUE INDEX subscriptions_names_url"
    "  ON subscriptions (coalesce(tenant, ''), wh_names_key(event_names), url)"
    "  WHERE status = 'active';"
    "CREATE INDEX subscriptions_tenant ON subscriptions (tenant, created_at, id)"
    "  WHERE tenant IS NOT NULL;"
    "CREATE TABLE api_keys ("
    "  id uuid PRIMARY KEY,"
    "  sha256 bytea NOT NULL UNIQUE CHECK (length(sha256) = 32),"
    "  prefix text NOT NULL,"
    "  name text,"
    "  roles text[] NOT NULL CHECK (cardinality(roles) BETWEEN 1 AND 3"
    "    AND roles <@ ARRAY['admin', 'producer', 'tenant']),"
    "  tenant text CHECK (tenant ~ '^[A-Za-z0-9_-]{1,64}$'),"
    "  created_at timestamptz NOT NULL DEFAULT now(),"
    "  revoked_at timestamptz);",
    /* deferred fan-out (issue 14, docs/decisions.md 54). An event with many jobs is committed
     * with its job list instead of its job rows, and answered; the rows are written by a
     * second statement (SCHEMA_FANOUT_SQL) that empties the list. fanout: SCHEMA_FANOUT_ENTRY
     * bytes per job, in id order: the job id (16 bytes), its subscription's id (16) and its
     * partition (2, big-endian). A listed job is committed as surely as a row: the reconciler
     * writes the rows of any list left behind, and the ordered head rule counts listed jobs.
     * The partial index holds only the events whose list is waiting. Stored uncompressed: it
     * is written once, read once and emptied, and a compressed value would have to be
     * decompressed from its start for every slice a reader takes. */
    "ALTER TABLE events ADD COLUMN fanout bytea;"
    "ALTER TABLE events ALTER COLUMN fanout SET STORAGE EXTERNAL;"
    "CREATE INDEX events_fanout ON events (id) WHERE fanout IS NOT NULL;",
};

#define NMIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

int schema_version(void)
{
    return NMIGRATIONS;
}

char *schema_setup_sql(void)
{
    struct buf b = {0};
    buf_adds(&b, "SET client_min_messages = warning;"
                 "BEGIN;"
                 "SELECT pg_advisory_xact_lock(7231001);"
                 "CREATE TABLE IF NOT EXISTS schema_migrations ("
                 "  version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());");
    for (int i = 0; i < NMIGRATIONS; i++)
        buf_printf(&b,
                   "DO $wh_migration$ BEGIN "
                   "IF NOT EXISTS (SELECT 1 FROM schema_migrations WHERE version = %d) THEN "
                   "%s "
                   "INSERT INTO schema_migrations (version) VALUES (%d); "
                   "END IF; END $wh_migration$;",
                   i + 1, migrations[i], i + 1);
    buf_adds(&b, "COMMIT;");
    return buf_steal(&b, NULL);
}

char *schema_daemon_setup_sql(void)
{
    char *setup = schema_setup_sql();
    char *all = xasprintf("%s SET enable_seqscan = off; SET jit = off; "
                          "SET statement_timeout = '%ds'; SET client_connection_check_interval = '5s';",
                          setup, SCHEMA_STATEMENT_TIMEOUT_S);
    free(setup);
    return all;
}
