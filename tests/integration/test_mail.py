"""E-mail alerts (docs/decisions.md 26): mailto: subscriptions to the broker's operational
events, their registration rules, and their delivery through a real SMTP server (aiosmtpd on
a loopback port), failures and retries recorded as attempts."""

import pytest

from harness import SmtpSink, assert_error, unique_name, wait_until


@pytest.fixture
def smtp():
    sinks = []

    def make(refuse=0, refuse_to=None):
        s = SmtpSink(refuse=refuse, refuse_to=refuse_to)
        sinks.append(s)
        return s

    yield make
    for s in sinks:
        s.close()


def address():
    return f"{unique_name('ops').replace('.', '-')}@example.com"


def mail_jobs(db, sub_id):
    cols = ("id", "status", "attempts", "last_status_code", "last_error")
    return [dict(zip(cols, r)) for r in db.sql(
        f"SELECT {', '.join(cols)} FROM jobs WHERE subscription_id = '{sub_id}' ORDER BY id")]


def cause_disabled_event(api, receiver):
    """A subscription whose endpoint answers 410: a broker.endpoint.disabled event follows."""
    gone = receiver(statuses=410, name="gone")
    sub = api.register(unique_name("gone"), gone.url())
    api.trigger(sub["eventName"], {"n": 1})
    return sub


def test_mailto_registration_rules(api, db):
    n = db.count("subscriptions")
    err = assert_error(api.post("/api/v0/webhooks", {"eventName": "order.created",
                                                      "webhookUrl": "mailto:ops@example.com"}),
                       400, "invalid_field")
    assert "broker." in err["message"]
    for bad in ("mailto:", "mailto:ops", "mailto:@example.com", "mailto:ops@",
                "mailto:a@b@example.com", "mailto:ops@example.com,evil@example.com",
                "mailto:ops@example.com?subject=hi", "mailto:ops%40x@example.com",
                "mailto:<ops@example.com>", "mailto:o ps@example.com", "mailto:ops@exa_mple.com",
                "mailto:ops@example.com\r\nRCPT TO:<x@example.com>", "MAILTO:ops@example.com",
                "mailto:" + "a" * 250 + "@example.com"):
        assert_error(api.post("/api/v0/webhooks", {"eventName": "broker.endpoint.disabled",
                                                    "webhookUrl": bad}), 400, "invalid_field")
    assert db.count("subscriptions") == n, "a refused registration wrote a row"
    addr = address()
    sub = api.register("broker.endpoint.disabled", f"mailto:{addr}")
    assert sub["webhookUrl"] == f"mailto:{addr}" and sub["eventName"] == "broker.endpoint.disabled"


def test_mail_delivered(api, db, receiver, smtp, start_worker):
    sink = smtp()
    addr = address()
    sub = api.register("broker.endpoint.disabled", f"mailto:{addr}")
    start_worker(SMTP_URL=sink.url)
    gone = cause_disabled_event(api, receiver)

    def mine():
        return [m for m in sink.messages if m[1] == [addr]]

    mail_from, rcpts, msg = wait_until(mine, 15, "the e-mail")[0]
    assert mail_from == "webhooks@localhost"
    assert msg["Subject"].startswith("[webhooks] broker.endpoint.disabled")
    assert msg["From"] == "<webhooks@localhost>" and msg["To"] == f"<{addr}>"
    assert msg["Message-ID"].endswith("@localhost>") and msg["Date"]
    assert msg.get_content_type() == "text/plain"
    body = msg.get_payload(decode=True).decode()
    for line in ("type: broker.endpoint.disabled", f"subscriptionId: {gone['id']}",
                 f"eventName: {gone['eventName']}", "reason: the endpoint answered 410 Gone"):
        assert line in body, body
    jobs = wait_until(lambda: [j for j in mail_jobs(db, sub["id"]) if j["status"] == "delivered"],
                      10, "the mail job delivered")
    assert len(jobs) == 1
    assert db.attempts(jobs[0]["id"]) == [(1, None, None)]


def test_mail_refused_then_retried(api, db, receiver, smtp, start_worker):
    addr = address()
    sink = smtp(refuse=1, refuse_to=addr)
    sub = api.register("broker.endpoint.disabled", f"mailto:{addr}")
    start_worker(SMTP_URL=sink.url, RETRY_SCHEDULE="0.3,0.3")
    cause_disabled_event(api, receiver)
    jobs = wait_until(lambda: [j for j in mail_jobs(db, sub["id"]) if j["status"] == "delivered"],
                      15, "the mail job delivered after a retry")
    att = db.attempts(jobs[0]["id"])
    assert len(att) == 2, att
    assert att[0][1] is None and att[0][2].startswith("SMTP 451"), att
    assert att[1] == (2, None, None)
    assert len([m for m in sink.messages if m[1] == [addr]]) == 1


def test_mail_without_smtp_url_fails_clearly(api, db, receiver, start_worker):
    sub = api.register("broker.endpoint.disabled", f"mailto:{address()}")
    start_worker(RETRY_SCHEDULE="0.2,0.2")
    cause_disabled_event(api, receiver)
    jobs = wait_until(lambda: [j for j in mail_jobs(db, sub["id"]) if j["status"] == "dead"],
                      15, "the mail job dead")
    att = db.attempts(jobs[0]["id"])
    assert [a[0] for a in att] == [1, 2, 3]
    assert all(a[1] is None and a[2] == "SMTP_URL is not set" for a in att), att


def test_mail_server_down_is_an_attempt_error(api, db, receiver, start_worker):
    from harness import free_port
    sub = api.register("broker.endpoint.disabled", f"mailto:{address()}")
    start_worker(SMTP_URL=f"smtp://127.0.0.1:{free_port()}", RETRY_SCHEDULE="0.2")
    cause_disabled_event(api, receiver)
    jobs = wait_until(lambda: [j for j in mail_jobs(db, sub["id"]) if j["status"] == "dead"],
                      15, "the mail job dead")
    att = db.attempts(jobs[0]["id"])
    assert len(att) == 2 and all(a[1] is None and a[2].startswith("SMTP") for a in att), att
