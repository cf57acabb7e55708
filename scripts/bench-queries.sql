-- `make bench-queries` data: :jobs jobs (default 10 million) for 1,000 subscriptions of 100
-- event names (10 per name; each event goes to the 10 subscriptions of its name), created over
-- the last 30 days, with a realistic mix of statuses and attempts for the failed jobs and for
-- one delivered job in ten. Run by scripts/bench-queries.sh with psql -v jobs=N on a database
-- the broker has migrated. The indexes of the three hot tables (whatever the migrations made)
-- are dropped during the load and built again afterwards, which is several times faster than
-- maintaining them row by row.
\set ON_ERROR_STOP 1
SET maintenance_work_mem = '1GB';
SET max_parallel_maintenance_workers = 2;
SET synchronous_commit = off;

CREATE TEMP TABLE bench_index_defs AS
    SELECT i.indexname, i.indexdef FROM pg_indexes i
    JOIN pg_class c ON c.relname = i.indexname
    JOIN pg_index x ON x.indexrelid = c.oid
    WHERE i.schemaname = 'public' AND i.tablename IN ('jobs', 'events', 'attempts')
      AND NOT x.indisprimary;
DO $$ DECLARE r record; BEGIN
    FOR r IN SELECT indexname FROM bench_index_defs LOOP
        EXECUTE format('DROP INDEX %I', r.indexname);
    END LOOP;
END $$;
ALTER TABLE jobs DROP CONSTRAINT jobs_pkey;
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE attempts DROP CONSTRAINT attempts_pkey;

-- Subscription i (0..999) has event name bench.ev.<i % 100>.
INSERT INTO subscriptions (id, event_name, url, secret, status, created_at, updated_at)
SELECT md5('sub' || i)::uuid, 'bench.ev.' || (i % 100), 'http://127.0.0.1:9/s/' || i, 'x',
       'active', now() - interval '31 days', now() - interval '31 days'
FROM generate_series(0, 999) AS i;

-- Event k (0 .. jobs/10 - 1) has name bench.ev.<k % 100>, created at an even pace over 30 days;
-- ids are UUIDv7-shaped (the creation time in ms, version 7, then the number: unique, cheap).
CREATE TEMP TABLE bench_t AS SELECT now() - interval '30 days' AS t0, interval '30 days' AS span;
INSERT INTO events (id, event_name, payload, created_at)
SELECT (lpad(to_hex((extract(epoch FROM c) * 1000)::bigint), 12, '0') || '7'
        || lpad(to_hex(k % 4096), 3, '0') || '8' || lpad(to_hex(k), 15, '0'))::uuid,
       'bench.ev.' || (k % 100), convert_to('{"k":' || k || '}', 'UTF8'), c
FROM (SELECT k, t0 + span * (k::float8 / (:jobs / 10)) AS c
      FROM bench_t, generate_series(0, :jobs / 10 - 1) AS k) e;

-- Job g belongs to event g / 10 and to subscription (k % 100) + 100 * (g % 10). Status by a
-- hash of g (Fibonacci hashing): 96.5 % delivered, 2 % dead, 0.5 % each cancelled, retrying, queued.
CREATE TEMP TABLE bench_subs AS
    SELECT array_agg(md5('sub' || i)::uuid ORDER BY i) AS ids FROM generate_series(0, 999) AS i;
INSERT INTO jobs (id, event_id, subscription_id, url, partition, status, attempts,
                  next_attempt_at, last_status_code, last_error, created_at, updated_at,
                  delivered_at)
SELECT (ms || '7' || lpad(to_hex(g % 4096), 3, '0') || '9' || lpad(to_hex(g), 15, '0'))::uuid,
       (ms || '7' || lpad(to_hex(k % 4096), 3, '0') || '8' || lpad(to_hex(k), 15, '0'))::uuid,
       bench_subs.ids[s + 1], 'http://127.0.0.1:9/s/' || s, (g % 4)::int, st,
       CASE st WHEN 'delivered' THEN 1 WHEN 'dead' THEN 5 WHEN 'retrying' THEN 2 ELSE 0 END,
       CASE st WHEN 'retrying' THEN c + interval '1 hour' END,
       CASE st WHEN 'delivered' THEN 200 WHEN 'dead' THEN 500 WHEN 'retrying' THEN 503 END,
       CASE st WHEN 'dead' THEN 'HTTP 500' WHEN 'retrying' THEN 'HTTP 503'
               WHEN 'cancelled' THEN 'subscription deleted' END,
       c, c + interval '2 seconds', CASE st WHEN 'delivered' THEN c + interval '1 second' END
FROM bench_subs, (SELECT g, k, c, (k % 100) + 100 * (g % 10) AS s,
             lpad(to_hex((extract(epoch FROM c) * 1000)::bigint), 12, '0') AS ms,
             CASE WHEN h < 965 THEN 'delivered' WHEN h < 985 THEN 'dead'
                  WHEN h < 990 THEN 'cancelled' WHEN h < 995 THEN 'retrying'
                  ELSE 'queued' END AS st
      FROM bench_t, generate_series(0::bigint, :jobs - 1) AS g,
           LATERAL (SELECT g / 10 AS k,
                           t0 + span * ((g / 10)::float8 / (:jobs / 10)) AS c,
                           (g * 2654435761 % 4294967296) * 1000 / 4294967296 AS h) x) j;

-- Attempts: every attempt of the dead and retrying jobs, the one of every tenth delivered job.
INSERT INTO attempts (job_id, attempt, started_at, duration_ms, status_code, error,
                      response_excerpt)
SELECT j.id, n, j.created_at + (n - 1) * interval '10 seconds', 20 + n,
       coalesce(j.last_status_code, 200),
       CASE WHEN j.status = 'delivered' THEN NULL ELSE j.last_error END,
       CASE WHEN j.status = 'delivered' THEN 'ok' ELSE 'upstream error' END
FROM jobs j, generate_series(1, j.attempts) AS n
WHERE (j.status IN ('dead', 'retrying')
       OR (j.status = 'delivered' AND get_byte(uuid_send(j.id), 15) % 10 = 0))
  -- only the jobs loaded here (make bench-big loads into a log that already has jobs)
  AND j.subscription_id IN (SELECT id FROM subscriptions WHERE event_name LIKE 'bench.ev.%');

ALTER TABLE jobs ADD PRIMARY KEY (id);
ALTER TABLE events ADD PRIMARY KEY (id);
ALTER TABLE attempts ADD PRIMARY KEY (job_id, attempt);
DO $$ DECLARE r record; BEGIN
    FOR r IN SELECT indexdef FROM bench_index_defs LOOP
        EXECUTE r.indexdef;
    END LOOP;
END $$;
-- Status and stats (decision 29): the rollups and the lifecycle log as the reconciler's merges
-- keep them in a steady state: per event name, one row per day beyond 2 days, per hour within,
-- per writer for the current hour; per subscription, one row per hour within 2 days, per
-- writer and 5 minutes within the last 2 hours; 50 lifecycle entries per subscription.
INSERT INTO stats_hourly (hour, event_name, backend, triggers, jobs, delivered, dead,
                          failed_attempts)
SELECT (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') - d * interval '1 day',
       'bench.ev.' || e, 0, 2400, 24000, 23760, 240, 480
FROM generate_series(2, 30) d, generate_series(0, 99) e
ON CONFLICT DO NOTHING;
INSERT INTO stats_hourly (hour, event_name, backend, triggers, jobs, delivered, dead,
                          failed_attempts)
SELECT date_trunc('hour', now()) - h * interval '1 hour', 'bench.ev.' || e, 0, 100, 1000, 990,
       10, 20
FROM generate_series(1, 47) h, generate_series(0, 99) e
ON CONFLICT DO NOTHING;
INSERT INTO stats_hourly (hour, event_name, backend, triggers, jobs, delivered, dead,
                          failed_attempts)
SELECT date_trunc('hour', now()), 'bench.ev.' || e, b, 10, 100, 99, 1, 2
FROM generate_series(0, 99) e, generate_series(1, 8) b;
INSERT INTO subscription_stats (subscription_id, bucket, backend, delivered, failed_attempts,
                                dead, last_success_at, last_failure_at)
SELECT md5('sub' || i)::uuid, date_trunc('hour', now()) - h * interval '1 hour', 0, 120, 12, 0,
       date_trunc('hour', now()) - h * interval '1 hour' + interval '59 minutes',
       date_trunc('hour', now()) - h * interval '1 hour' + interval '58 minutes'
FROM generate_series(0, 999) i, generate_series(2, 47) h;
INSERT INTO subscription_stats (subscription_id, bucket, backend, delivered, failed_attempts,
                                dead, last_success_at, last_failure_at)
SELECT md5('sub' || i)::uuid,
       date_bin('5 minutes', now(), timestamptz '2000-01-01 00:00Z') - m * interval '5 minutes',
       b, 10, 1, 0, now() - m * interval '5 minutes',
       now() - m * interval '5 minutes' - interval '1 minute'
FROM generate_series(0, 999) i, generate_series(0, 23) m, generate_series(1, 4) b;
INSERT INTO subscription_activity (subscription_id, at, kind, detail)
SELECT md5('sub' || i)::uuid, now() - n * interval '1 hour',
       (ARRAY['circuit_opened', 'circuit_closed', 'updated'])[1 + n % 3], 'bench'
FROM generate_series(0, 999) i, generate_series(1, 50) n;
VACUUM ANALYZE stats_hourly;
VACUUM ANALYZE subscription_stats;
VACUUM ANALYZE subscription_activity;
VACUUM ANALYZE subscriptions;
VACUUM ANALYZE events;
VACUUM ANALYZE jobs;
VACUUM ANALYZE attempts;
