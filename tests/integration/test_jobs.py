"""Job search (GET /api/v0/jobs: filters, newest first, cursor paging) and one job with its
attempt log (GET /api/v0/jobs/<id>) against a real broker and PostgreSQL. Most data is written
with SQL (known statuses and times); the answers are compared with the same filters applied
in Python to every job of the module's database (no worker runs while they are compared)."""

import base64
import itertools
import threading
import time
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone

from harness import UUID_RE, TIME_RE, assert_error, sql_quote, unique_name

JOBS = "/api/v0/jobs"
STATUSES = ("queued", "retrying", "delivered", "dead", "cancelled")


def uuid7(ms):
    """A UUIDv7-shaped id for a time in ms (random rest), as the broker makes them."""
    r = uuid.uuid4().int & ((1 << 80) - 1)
    v = (ms << 80) | r
    v = (v & ~(0xF << 76)) | (0x7 << 76)
    v = (v & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=v))


def iso(dt):
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def insert_sub(db, name, status="active"):
    sid = str(uuid.uuid4())
    db.sql(f"INSERT INTO subscriptions (id, event_name, url, secret, status) VALUES "
           f"({sql_quote(sid)}, {sql_quote(name)}, 'http://127.0.0.1:9/{sid}', "
           f"{'NULL' if status == 'deleted' else repr('x')}, {sql_quote(status)})")
    return sid


def insert_jobs(db, rows):
    """rows: (event name, subscription id, status, created_at datetime); one event per job.
    Returns the job ids in order."""
    ids, ev_values, job_values = [], [], []
    for name, sub, status, created in rows:
        ms = int(created.timestamp() * 1000)
        eid, jid = uuid7(ms), uuid7(ms)
        ids.append(jid)
        ts = sql_quote(created.isoformat())
        ev_values.append(f"({sql_quote(eid)}, {sql_quote(name)}, '\\x7b7d', {ts})")
        code = {"delivered": "200", "dead": "500", "retrying": "503"}.get(status, "NULL")
        err = {"dead": "'HTTP 500'", "retrying": "'HTTP 503'",
               "cancelled": "'subscription deleted'"}.get(status, "NULL")
        job_values.append(
            f"({sql_quote(jid)}, {sql_quote(eid)}, {sql_quote(sub)}, 'http://127.0.0.1:9/x', "
            f"{sql_quote(status)}, {1 if code != 'NULL' else 0}, {code}, {err}, {ts}, {ts}, "
            f"{ts + '::timestamptz + interval ' + repr('1 second') if status == 'delivered' else 'NULL'})")
    for i in range(0, len(rows), 500):
        db.sql("INSERT INTO events (id, event_name, payload, created_at) VALUES "
               + ", ".join(ev_values[i:i + 500]))
        db.sql("INSERT INTO jobs (id, event_id, subscription_id, url, status, attempts, "
               "last_status_code, last_error, created_at, updated_at, delivered_at) VALUES "
               + ", ".join(job_values[i:i + 500]))
    return ids


def all_jobs(db):
    """Every job as a dict (id, eventName, subscriptionId, status, created (µs since 1970))."""
    rows = db.sql("SELECT j.id, e.event_name, j.subscription_id, j.status, "
                  "(extract(epoch FROM j.created_at) * 1000000)::bigint "
                  "FROM jobs j LEFT JOIN events e ON e.id = j.event_id")
    return [{"id": r[0], "eventName": r[1], "subscriptionId": r[2], "status": r[3],
             "created": int(r[4])} for r in rows]


def id_ms(job_id):
    """A job's time for the API: its UUIDv7 id's millisecond."""
    return uuid.UUID(job_id).int >> 80


def expected(jobs, status=None, event=None, sub=None, since=None, until=None):
    """The ids the API must return, in its order (id desc). A job's time is its id's
    millisecond: made at or after since (to the µs), before until."""
    def us(dt):
        return int(round(dt.timestamp() * 1_000_000))
    out = [j for j in jobs
           if (status is None or j["status"] == status)
           and (event is None or j["eventName"] == event)
           and (sub is None or j["subscriptionId"] == sub)
           and (since is None or id_ms(j["id"]) * 1000 >= us(since))
           and (until is None or id_ms(j["id"]) * 1000 < us(until))]
    out.sort(key=lambda j: uuid.UUID(j["id"]).int, reverse=True)
    return [j["id"] for j in out]


def page_all(api, params, limit, max_pages=1000, on_page=None):
    """Follows next from the first page; returns every job object in order."""
    seen, cursor = [], None
    for _ in range(max_pages):
        q = dict(params, limit=str(limit))
        if cursor:
            q["cursor"] = cursor
        st, _, data = api.get(JOBS + "?" + urllib.parse.urlencode(q))
        assert st == 200, (q, data)
        assert set(data) == {"jobs", "next"}, data
        assert len(data["jobs"]) <= limit
        seen.extend(data["jobs"])
        if on_page:
            on_page(data)
        cursor = data["next"]
        if cursor is None:
            return seen
        assert len(data["jobs"]) == limit, "a page before the last one is short"
    raise AssertionError("too many pages")


def test_filters_and_combinations(api, db):
    """Every filter alone and every combination (status x event x subscription x window),
    paged with limit 7, equals the same filter applied in Python to all jobs."""
    a, b = unique_name("jobs.a"), unique_name("jobs.b")
    sa1, sa2, sb = insert_sub(db, a), insert_sub(db, a), insert_sub(db, b)
    sa_deleted = insert_sub(db, a, status="deleted")
    t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
    rows = []
    for i in range(150):
        sub = (sa1, sa2, sb, sa_deleted)[i % 4]
        name = b if sub == sb else a
        # jobs 2k and 2k + 1 share their millisecond (the id's random bits order them), and
        # every tenth is a few microseconds into it
        created = t0 + timedelta(minutes=i // 2, microseconds=7 if i % 10 == 0 else 0)
        rows.append((name, sub, STATUSES[(i * 7) % 5], created))
    insert_jobs(db, rows)
    jobs = all_jobs(db)

    since, until = t0 + timedelta(minutes=20), t0 + timedelta(minutes=100, microseconds=246)
    # bounds inside a millisecond: since = a job's ms + 1 µs leaves it out, until = a job's
    # ms + 1 µs takes it in
    since_mid, until_mid = (t0 + timedelta(minutes=30, microseconds=1),
                            t0 + timedelta(minutes=60, microseconds=1))
    windows = [(None, None), (since, None), (None, until), (since, until),
               (since_mid, until_mid)]
    unknown_sub = str(uuid.uuid4())
    checked = 0
    for status, event, sub, (s, u) in itertools.product(
            (None,) + STATUSES, (None, a, b, "jobs.nobody"), (None, sa1, sb, sa_deleted, unknown_sub),
            windows):
        params = {}
        if status:
            params["status"] = status
        if event:
            params["event"] = event
        if sub:
            params["subscription"] = sub
        if s:
            params["since"] = iso(s)
        if u:
            params["until"] = iso(u)
        want = expected(jobs, status, event, sub, s, u)
        if not event and not sub:
            # filters that reach other tests' jobs too: compared on the first page only
            st, _, data = api.get(JOBS + "?" + urllib.parse.urlencode(dict(params, limit="7")))
            assert st == 200, data
            got = [j["id"] for j in data["jobs"]]
            assert got == want[:7], params
            assert (data["next"] is not None) == (len(want) > 7), params
        else:
            got = [j["id"] for j in page_all(api, params, 7)]
            assert got == want, f"{params}: {len(got)} jobs, expected {len(want)}"
        checked += 1
    assert checked == 6 * 4 * 5 * 5
    # the filters really select: each of these returns some jobs and not all of them
    assert 0 < len(expected(jobs, "dead", a, sa1)) < len(expected(jobs, None, a))


def test_job_fields_and_event_link(api, db):
    name = unique_name("jobs.fields")
    sub = insert_sub(db, name)
    created = datetime(2026, 4, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    [jid] = insert_jobs(db, [(name, sub, "dead", created)])
    st, _, data = api.get(f"{JOBS}?subscription={sub}")
    assert st == 200 and data["next"] is None, data
    [job] = data["jobs"]
    assert set(job) == {"id", "eventId", "event", "eventName", "subscriptionId", "url",
                        "status", "attempts", "lastStatusCode", "lastError", "nextAttemptAt",
                        "createdAt", "updatedAt", "deliveredAt"}, job
    assert job["id"] == jid and job["subscriptionId"] == sub and job["eventName"] == name
    assert job["status"] == "dead" and job["attempts"] == 1 and job["lastStatusCode"] == 500
    assert job["lastError"] == "HTTP 500" and job["deliveredAt"] is None
    assert job["createdAt"] == "2026-04-02T03:04:05.678Z" and TIME_RE.match(job["updatedAt"])
    assert UUID_RE.match(job["eventId"]) and job["event"] == f"/api/v0/events/{job['eventId']}"
    st, _, ev = api.get(job["event"])
    assert st == 200 and ev["id"] == job["eventId"] and ev["eventName"] == name, ev


def test_paging_1000_jobs_while_new_ones_arrive(api, db, broker):
    """1,000 jobs paged 37 at a time, while another thread triggers events whose jobs land
    before the first page: each of the 1,000 comes exactly once, in order, no gaps."""
    name = unique_name("jobs.paging")
    hook = api.register(name, "http://127.0.0.1:9/paging")  # no worker: the jobs stay queued
    t0 = datetime.now(timezone.utc) - timedelta(hours=1)
    rows = [(name, hook["id"], STATUSES[i % 5], t0 + timedelta(milliseconds=i // 2))
            for i in range(1000)]
    ids = insert_jobs(db, rows)
    stop = threading.Event()
    triggered = []

    def trigger():
        while not stop.is_set() and len(triggered) < 2000:
            triggered.append(api.trigger(name)["eventId"])

    th = threading.Thread(target=trigger, daemon=True)
    pages = []
    th.start()
    try:
        def on_page(data):
            pages.append(len(data["jobs"]))
            time.sleep(0.01)  # let new jobs arrive between pages
        seen = page_all(api, {"subscription": hook["id"]}, 37, on_page=on_page)
    finally:
        stop.set()
        th.join(30)
    assert not th.is_alive()
    assert len(triggered) > 10, "the trigger thread created too few jobs to mean anything"
    got = [j["id"] for j in seen]
    assert len(got) == len(set(got)), "a job came twice"
    keys = [uuid.UUID(j["id"]).int for j in seen]
    assert keys == sorted(keys, reverse=True), "not newest first (by id)"
    old = [i for i in got if i in set(ids)]
    assert sorted(old) == sorted(ids), f"{len(set(ids) - set(old))} of the 1,000 are missing"
    # the 1,000 are contiguous at the end: nothing new landed between them
    assert got[-1000:] == old
    assert len(pages) >= 1000 // 37


def test_one_job_with_attempt_log(api, db, start_worker, receiver):
    """A real delivery that fails once then succeeds: both attempts in the log, in order."""
    rcv = receiver(statuses=[500, 200])
    name = unique_name("jobs.attempts")
    api.register(name, rcv.url())
    ev = api.trigger(name, {"n": 1})["eventId"]
    start_worker()
    [row] = db.wait_jobs(ev, "delivered")
    st, _, job = api.get(f"{JOBS}/{row['id']}")
    assert st == 200, job
    assert job["id"] == row["id"] and job["eventId"] == ev and job["eventName"] == name
    assert job["status"] == "delivered" and job["attempts"] == 2 and job["lastStatusCode"] == 200
    assert TIME_RE.match(job["deliveredAt"]), job
    log = job["attemptLog"]
    assert [a["attempt"] for a in log] == [1, 2], log
    assert [a["statusCode"] for a in log] == [500, 200], log
    for a in log:
        assert set(a) == {"attempt", "startedAt", "durationMs", "statusCode", "error",
                          "responseExcerpt"}, a
        assert TIME_RE.match(a["startedAt"]) and isinstance(a["durationMs"], int)
    # the same id in upper case is the same job
    st, _, again = api.get(f"{JOBS}/{row['id'].upper()}")
    assert st == 200 and again["id"] == row["id"]


def test_job_without_attempts(api, db):
    name = unique_name("jobs.none")
    sub = insert_sub(db, name)
    [jid] = insert_jobs(db, [(name, sub, "queued", datetime(2026, 5, 1, tzinfo=timezone.utc))])
    st, _, job = api.get(f"{JOBS}/{jid}")
    assert st == 200 and job["status"] == "queued" and job["attemptLog"] == [], job


def test_unknown_job_is_404(api):
    assert_error(api.get(f"{JOBS}/{uuid.uuid4()}"), 404, "not_found")


def forged_cursor():
    raw = bytes([1]) + uuid.uuid4().bytes  # the right length, the retired version 1
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_bad_input_is_400_naming_the_field(api, db):
    name = unique_name("jobs.bad")
    sub = insert_sub(db, name)
    insert_jobs(db, [(name, sub, "dead", datetime(2026, 6, 1, tzinfo=timezone.utc))] * 3)
    st, _, first = api.get(f"{JOBS}?subscription={sub}&limit=1")
    assert st == 200 and first["next"], first
    good = first["next"]
    before = db.sql("SELECT count(*), max(updated_at) FROM jobs")
    cases = [
        ("status=lost", "status"), ("status=DEAD", "status"), ("status=", "status"),
        ("event=a%2Fb", "event"), ("event=", "event"), ("event=" + "x" * 129, "event"),
        ("subscription=42", "subscription"), ("subscription=" + str(uuid.uuid4())[:-1], "subscription"),
        ("subscription=", "subscription"),
        ("limit=0", "limit"), ("limit=501", "limit"), ("limit=abc", "limit"), ("limit=-1", "limit"),
        ("limit=+5", "limit"), ("limit=1.5", "limit"), ("limit=", "limit"),
        ("since=yesterday", "since"), ("since=2026-02-30T00:00:00Z", "since"),
        ("since=2026-01-01T00:00:00", "since"), ("since=2026-01-01", "since"),
        ("since=2026-01-01T24:00:00Z", "since"), ("since=2026-01-01T00:00:00.1234567Z", "since"),
        ("until=2026-13-01T00:00:00Z", "until"), ("until=2026-01-01T00:00:60Z", "until"),
        ("since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", "until"),
        ("since=2026-01-01T01:00:00%2B02:00&until=2025-12-31T22:00:00Z", "until"),
        ("cursor=abc", "cursor"), ("cursor=", "cursor"), ("cursor=" + good[:-1], "cursor"),
        ("cursor=" + good + "A", "cursor"), ("cursor=" + good[:5] + "%2B" + good[6:], "cursor"),
        ("cursor=" + good[:5] + "/" + good[6:], "cursor"),
        ("cursor=" + forged_cursor(), "cursor"), ("cursor=" + good[:-1] + "!", "cursor"),
        ("colour=red", "colour"), ("status=dead&status=queued", "status"),
        ("status=dead%00x", "NUL"), ("event=book%00", "NUL"),
    ]
    for query, field in cases:
        err = assert_error(api.get(f"{JOBS}?{query}"), 400, "invalid_field")
        assert field in err["message"], (query, err)
    # a time zone offset is honoured: 02:00+02:00 is 00:00Z
    st, _, data = api.get(f"{JOBS}?subscription={sub}&since=2026-06-01T02:00:00%2B02:00"
                          f"&until=2026-06-01T00:00:00.000001Z")
    assert st == 200 and len(data["jobs"]) == 3, data
    st, _, data = api.get(f"{JOBS}?subscription={sub}&until=2026-06-01T00:00:00Z")
    assert st == 200 and data["jobs"] == [], data
    for bad in ("42", "not-a-uuid", str(uuid.uuid4()) + "0", str(uuid.uuid4())[:-1] + "g"):
        err = assert_error(api.get(f"{JOBS}/{bad}"), 400, "invalid_field")
        assert "job id" in err["message"], err
    assert db.sql("SELECT count(*), max(updated_at) FROM jobs") == before, "a GET wrote"


def test_limit_and_default(api, db):
    name = unique_name("jobs.limit")
    sub = insert_sub(db, name)
    t0 = datetime(2026, 7, 1, tzinfo=timezone.utc)
    insert_jobs(db, [(name, sub, "delivered", t0 + timedelta(seconds=i)) for i in range(120)])
    st, _, data = api.get(f"{JOBS}?subscription={sub}")
    assert st == 200 and len(data["jobs"]) == 50 and data["next"], data
    st, _, data = api.get(f"{JOBS}?subscription={sub}&limit=500")
    assert st == 200 and len(data["jobs"]) == 120 and data["next"] is None
    st, _, data = api.get(f"{JOBS}?subscription={sub}&limit=120")
    assert st == 200 and len(data["jobs"]) == 120 and data["next"] is None, \
        "an exactly full last page has no next"
