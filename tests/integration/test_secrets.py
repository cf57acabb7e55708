"""Standard Webhooks secrets: caller-supplied secrets at registration (strictly validated),
secret rotation with a grace period, and secrets encrypted at rest (SECRETS_KEY, key rotation,
migration of plain rows, clearing of deleted and expired secrets), against a real broker,
workers, Redis, PostgreSQL and HTTP receivers. Signatures are checked with Python's
hmac/hashlib/base64 (harness.sign_v1) and the stored ciphertexts are opened with the
cryptography package's AES-GCM: implementations independent of the C code."""

import base64
import datetime
import hashlib
import json
import os
import subprocess
import threading
import time
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from harness import (API_KEY, SANITIZER_MARKERS, SECRETS_KEY, Broker, RedisServer, Worker,
                     assert_error, base_env, binary, free_port, run_reconciler, sign_v1,
                     sql_quote, unique_name, wait_drained, wait_until)

HOOKS = "/api/v0/webhooks"
GRACE_DEFAULT = 86400
GRACE_MAX = 604800


def new_secret(nbytes=32):
    """A fresh secret made here: "whsec_" + base64 of random bytes."""
    return "whsec_" + base64.b64encode(os.urandom(nbytes)).decode()


def rotate_path(event, sub_id):
    return f"{HOOKS}/{event}/{sub_id}/rotate-secret"


def parse_time(text):
    """RFC 3339 UTC with milliseconds -> unix seconds (float)."""
    dt = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp()


def signatures(req):
    """The webhook-signature header split into its space-separated entries."""
    header = req.headers.get("webhook-signature")
    assert header, f"no webhook-signature header: {req.headers}"
    sigs = header.split(" ")
    assert all(s.startswith("v1,") and len(s) == 47 for s in sigs), header
    return sigs


def expected(secret, req):
    """The v1 signature secret gives this request (Python's own HMAC-SHA256 and base64)."""
    return sign_v1(secret, req.headers["webhook-id"], int(req.headers["webhook-timestamp"]),
                   req.body)


def deliver_one(api, db, rc, recv, event, payload):
    """Triggers event (one subscriber: recv) and returns the request recv got for it."""
    body = json.dumps(payload).encode()
    eid = api.trigger(event, body)["eventId"]
    [job] = db.wait_jobs(eid, "delivered", count=1)
    wait_drained(rc, [job["id"]])
    reqs = [q for q in recv.requests if q.headers.get("webhook-id") == eid]
    assert len(reqs) == 1, recv.requests
    assert reqs[0].body == body
    return reqs[0]


def key_id(key_hex):
    """The id the C code gives a key: hex of the first 4 bytes of SHA-256("wh-secretbox\\0" key)."""
    return hashlib.sha256(b"wh-secretbox\0" + bytes.fromhex(key_hex)).digest()[:4].hex()


def open_sealed(text, sub_id, key_hex=SECRETS_KEY):
    """The plain secret of a stored "enc:v1:<key id>:<base64(nonce | ciphertext | tag)>" value,
    opened with AES-256-GCM here (the additional data is the "enc:v1:<key id>:" header then the
    subscription id). Asserts the form and that key_hex's id is the one named."""
    assert text.startswith("enc:v1:") and text[15] == ":", f"not encrypted: {text[:24]}..."
    assert text[7:15] == key_id(key_hex), f"sealed under key {text[7:15]}, not {key_id(key_hex)}"
    blob = base64.b64decode(text[16:], validate=True)
    aad = text[:16].encode() + sub_id.encode()
    return AESGCM(bytes.fromhex(key_hex)).decrypt(blob[:12], blob[12:], aad).decode()


def db_raw(db, sub_id):
    """The stored (secret, previous_secret, previous_secret_expires_at) columns as they are."""
    [row] = db.sql("SELECT secret, previous_secret, previous_secret_expires_at "
                   f"FROM subscriptions WHERE id = {sql_quote(sub_id)}")
    return row


def db_secrets(db, sub_id, key=SECRETS_KEY):
    """(secret, previous_secret, previous_secret_expires_at as unix seconds or None), both
    secrets decrypted here from their stored form (which must be sealed under key)."""
    [row] = db.sql("SELECT secret, previous_secret, extract(epoch FROM previous_secret_expires_at) "
                   f"FROM subscriptions WHERE id = {sql_quote(sub_id)}")
    return (open_sealed(row[0], sub_id, key) if row[0] is not None else None,
            open_sealed(row[1], sub_id, key) if row[1] is not None else None,
            float(row[2]) if row[2] is not None else None)


def wait_past(t, margin=0.05):
    """Waits until the wall clock (the one the worker compares expiries with) is past t."""
    wait_until(lambda: time.time() > t + margin, max(0.0, t - time.time()) + 5,
               f"the clock to pass {t}")


def get_sub(api, sub):
    st, _, one = api.get(f"{HOOKS}/{sub['eventName']}/{sub['id']}")
    assert st == 200, one
    return one


# --- registration with a caller-supplied secret ------------------------------------------------


@pytest.mark.parametrize("nbytes", [24, 32, 64])
def test_supplied_secret_is_used_to_sign(api, db, rc, receiver, start_worker, broker, nbytes):
    recv = receiver()
    event = unique_name("sec.given")
    secret = new_secret(nbytes)
    st, _, sub = api.post(HOOKS, {"eventName": event, "webhookUrl": recv.url(), "secret": secret})
    assert st == 201, sub
    assert sub["secret"] == secret
    assert "previousSecretExpiresAt" not in sub, sub
    assert db_secrets(db, sub["id"]) == (secret, None, None)
    st, _, one = api.get(f"{HOOKS}/{event}/{sub['id']}")
    assert st == 200 and one == sub, one

    w = start_worker()
    q = deliver_one(api, db, rc, recv, event, {"n": nbytes})
    assert signatures(q) == [expected(secret, q)]
    assert not any(secret[6:] in line for line in broker.log_text().splitlines()), \
        "the secret appears in the broker's log"
    assert secret[6:] not in w.log_text()


# Each class of invalid secret, with the words the 400 message must contain.
SECRET_BYTES = base64.b64encode(bytes(range(1, 34))).decode()  # 33 bytes: no padding
PAD25 = base64.b64encode(bytes(range(1, 26))).decode()  # 25 bytes: ends "==" after 2 chars
assert PAD25.endswith("==") and not SECRET_BYTES.endswith("=")

BAD_SECRETS = {
    "empty": ("", "empty"),
    "prefix_only": ("whsec_", "too short"),
    "no_prefix": (SECRET_BYTES, "must start with"),
    "prefix_upper": ("WHSEC_" + SECRET_BYTES, "must start with"),
    "prefix_other": ("whsk_" + SECRET_BYTES, "must start with"),
    "bytes_23": ("whsec_" + base64.b64encode(b"\x01" * 23).decode(), "too short"),
    "bytes_65": ("whsec_" + base64.b64encode(b"\x01" * 65).decode(), "too long"),
    "bytes_200": ("whsec_" + base64.b64encode(b"\x01" * 200).decode(), "too long"),
    "padding_missing": ("whsec_" + PAD25.rstrip("="), "base64"),
    "padding_short": ("whsec_" + PAD25[:-1], "base64"),
    "padding_extra": ("whsec_" + PAD25 + "==", "base64"),
    "padding_inside": ("whsec_" + SECRET_BYTES[:8] + "=" + SECRET_BYTES[9:], "base64"),
    "non_canonical_bits": ("whsec_" + PAD25[:-3] + chr(ord(PAD25[-3]) + 1) + "==", "base64"),
    "leading_space": ("whsec_ " + SECRET_BYTES, "base64"),
    "trailing_space": ("whsec_" + SECRET_BYTES + " ", "base64"),
    "trailing_newline": ("whsec_" + SECRET_BYTES + "\n", "base64"),
    "inner_newline": ("whsec_" + SECRET_BYTES[:20] + "\n" + SECRET_BYTES[20:], "base64"),
    "url_safe_alphabet": ("whsec_" + base64.urlsafe_b64encode(b"\xfb\xff" * 12).decode(), "base64"),
    "junk": ("whsec_" + SECRET_BYTES[:-1] + "!", "base64"),
    "non_ascii": ("whsec_" + SECRET_BYTES[:-1] + "é", "base64"),
}
# Sanity: the canonical-bits case decodes in a lax decoder, the url-safe case has - or _.
assert base64.b64decode(BAD_SECRETS["non_canonical_bits"][0][6:]) == bytes(range(1, 26))
assert set("-_") & set(BAD_SECRETS["url_safe_alphabet"][0])

NON_STRING_SECRETS = {"number": 12345, "null": None, "true": True, "list": [new_secret()],
                      "object": {"secret": new_secret()}}


@pytest.fixture
def nothing_written(db, rc):
    """Asserts at the end of the test that no subscription row or index entry changed."""

    def snapshot():
        return (db.sql("SELECT id, secret, previous_secret, updated_at FROM subscriptions "
                       "ORDER BY id"), sorted(rc.call("KEYS", "wh:event:*")))

    before = snapshot()
    yield
    assert snapshot() == before, "a refused request wrote something"


@pytest.mark.parametrize("case", sorted(BAD_SECRETS))
def test_register_refuses_invalid_secret(api, broker, nothing_written, case):
    secret, why = BAD_SECRETS[case]
    body = {"eventName": unique_name("sec.bad"), "webhookUrl": "http://127.0.0.1:9/x",
            "secret": secret}
    err = assert_error(api.post(HOOKS, body), 400, "invalid_field")
    assert why in err["message"], err
    assert "secret" in err["message"], err
    tail = secret[6:].strip()
    if len(tail) >= 8:
        assert tail not in err["message"], "the secret is echoed in the error"
        assert tail not in broker.log_text(), "the secret is in the broker's log"


@pytest.mark.parametrize("case", sorted(NON_STRING_SECRETS))
def test_register_refuses_non_string_secret(api, nothing_written, case):
    body = {"eventName": unique_name("sec.type"), "webhookUrl": "http://127.0.0.1:9/x",
            "secret": NON_STRING_SECRETS[case]}
    err = assert_error(api.post(HOOKS, body), 400, "invalid_field")
    assert "secret must be a string" in err["message"], err


def test_invalid_secret_on_reregistration_changes_nothing(api, db, rc):
    event = unique_name("sec.rereg.bad")
    url = "http://127.0.0.1:9/rereg-bad"
    sub = api.register(event, url, {"X-A": "1"})
    before = db.sql(f"SELECT secret, headers::text, updated_at FROM subscriptions "
                    f"WHERE id = {sql_quote(sub['id'])}")
    for secret in ("whsec_" + PAD25.rstrip("="), "nope", 7):
        body = {"eventName": event, "webhookUrl": url, "headers": {"X-B": "2"}, "secret": secret}
        assert_error(api.post(HOOKS, body), 400, "invalid_field")
    assert db.sql(f"SELECT secret, headers::text, updated_at FROM subscriptions "
                  f"WHERE id = {sql_quote(sub['id'])}") == before
    st, _, one = api.get(f"{HOOKS}/{event}/{sub['id']}")
    assert st == 200 and one["secret"] == sub["secret"] and one["headers"] == {"X-A": "1"}


def test_reregistration_with_secret_replaces_it_at_once(api, db, rc, receiver, start_worker):
    """A secret sent again with the same event + URL replaces the current one with no grace
    (and ends a rotation's grace period); without one the secret is kept."""
    recv = receiver()
    event = unique_name("sec.rereg")
    first = api.register(event, recv.url())
    st, _, rotated = api.post(rotate_path(event, first["id"]), {"gracePeriodSeconds": 3600})
    assert st == 200 and rotated["previousSecretExpiresAt"] is not None, rotated

    replacement = new_secret()
    st, _, again = api.post(HOOKS, {"eventName": event, "webhookUrl": recv.url(),
                                    "secret": replacement})
    assert st == 200, again
    assert again["id"] == first["id"] and again["secret"] == replacement
    assert "previousSecretExpiresAt" not in again, again
    assert db_secrets(db, first["id"]) == (replacement, None, None)

    # Without a secret: kept. The same secret again: nothing changes either.
    kept = api.register(event, recv.url(), expect=200)
    assert kept["secret"] == replacement
    st, _, same = api.post(HOOKS, {"eventName": event, "webhookUrl": recv.url(),
                                   "secret": replacement})
    assert st == 200 and same["secret"] == replacement

    start_worker()
    q = deliver_one(api, db, rc, recv, event, {"after": "re-registration"})
    assert signatures(q) == [expected(replacement, q)]
    for old in (first["secret"], rotated["secret"]):
        assert expected(old, q) not in signatures(q)


def test_same_secret_again_keeps_a_rotation_going(api, db):
    event = unique_name("sec.same")
    url = "http://127.0.0.1:9/same"
    sub = api.register(event, url)
    st, _, rotated = api.post(rotate_path(event, sub["id"]), b"")
    assert st == 200
    st, _, again = api.post(HOOKS, {"eventName": event, "webhookUrl": url,
                                    "secret": rotated["secret"]})
    assert st == 200 and again["secret"] == rotated["secret"]
    assert again["previousSecretExpiresAt"] == rotated["previousSecretExpiresAt"]
    assert db_secrets(db, sub["id"])[:2] == (rotated["secret"], sub["secret"])


# --- rotation -------------------------------------------------------------------------------


def test_rotate_signs_with_new_and_old_during_grace(api, db, rc, receiver, start_worker):
    recv = receiver()
    event = unique_name("sec.rotate")
    sub = api.register(event, recv.url(), {"X-K": "v"})
    old = sub["secret"]
    w = start_worker()
    q = deliver_one(api, db, rc, recv, event, {"before": "rotation"})
    assert signatures(q) == [expected(old, q)]

    t0 = time.time()
    st, _, rot = api.post(rotate_path(event, sub["id"]))  # no body at all
    assert st == 200, rot
    assert set(rot) == {"id", "eventName", "eventNames", "webhookUrl", "secret", "headers", "status",
                        "createdAt", "updatedAt", "previousSecretExpiresAt", "description",
                        "rateLimit", "retryPolicy", "timeoutSeconds", "payload", "payloadFields",
                        "ordered", "filter", "batching", "tenant"}, rot
    assert rot["id"] == sub["id"] and rot["headers"] == {"X-K": "v"}
    new = rot["secret"]
    assert new != old and new.startswith("whsec_")
    assert len(base64.b64decode(new[6:], validate=True)) == 32
    expires = parse_time(rot["previousSecretExpiresAt"])
    assert abs(expires - (t0 + GRACE_DEFAULT)) < 60, rot
    assert db_secrets(db, sub["id"])[:2] == (new, old)

    # GET and the listings show when the old secret stops, never the old secret itself.
    st, _, one = api.get(f"{HOOKS}/{event}/{sub['id']}")
    assert st == 200 and one == rot, one
    st, _, by_event = api.get(f"{HOOKS}/{event}")
    [item] = by_event["webhooks"]
    assert item["previousSecretExpiresAt"] == rot["previousSecretExpiresAt"]
    st, _, page = api.get(f"{HOOKS}?page_size=500")
    [item] = [x for x in page["webhooks"] if x["id"] == sub["id"]]
    assert item["previousSecretExpiresAt"] == rot["previousSecretExpiresAt"]
    for body in (one, by_event, page, rot):
        assert old[6:] not in json.dumps(body), "the previous secret was returned"

    # The worker may sign from its cached copy (old secret only) until SUBSCRIPTION_CACHE_TTL
    # passes: deliver until a delivery carries both signatures.
    seen = []

    def both_sign():
        q = deliver_one(api, db, rc, recv, event, {"after": "rotation", "n": len(seen)})
        seen.append(q)
        sigs = signatures(q)
        assert sigs in ([expected(old, q)], [expected(new, q), expected(old, q)]), sigs
        return len(sigs) == 2

    wait_until(both_sign, float(w.config["SUBSCRIPTION_CACHE_TTL"]) + 10,
               "a delivery signed with the new and the old secret")
    q = seen[-1]
    sigs = signatures(q)
    assert sigs[0] == expected(new, q), "the first signature is not the new secret's"
    assert sigs[1] == expected(old, q), "the second signature is not the old secret's"


def test_rotate_with_supplied_secret_and_short_grace(api, db, rc, receiver, start_worker):
    """After a short grace period, plus the worker's cache TTL, only the new secret signs."""
    recv = receiver()
    event = unique_name("sec.short")
    sub = api.register(event, recv.url())
    old = sub["secret"]
    w = start_worker(SUBSCRIPTION_CACHE_TTL="0.5")
    supplied = new_secret(48)
    st, _, rot = api.post(rotate_path(event, sub["id"]),
                          {"secret": supplied, "gracePeriodSeconds": 3})
    assert st == 200, rot
    assert rot["secret"] == supplied
    expires = parse_time(rot["previousSecretExpiresAt"])
    assert 0 < expires - time.time() <= 3.5, rot

    q = deliver_one(api, db, rc, recv, event, {"in": "grace"})
    assert int(q.headers["webhook-timestamp"]) + 1 <= expires, "took too long to deliver"
    assert signatures(q) == [expected(supplied, q), expected(old, q)]

    # The grace period is over when the API stops showing it (checked by PostgreSQL's clock).
    wait_until(lambda: "previousSecretExpiresAt" not in get_sub(api, sub), 10,
               "the previous secret's grace period to end")
    wait_past(expires)  # the worker's clock too
    assert w.alive()
    q = deliver_one(api, db, rc, recv, event, {"after": "grace"})
    assert signatures(q) == [expected(supplied, q)]
    assert expected(old, q) not in signatures(q)


def test_expired_previous_secret_never_signs_from_the_cache(api, db, rc, receiver, start_worker):
    """The worker compares the expiry when it signs, not when it cached the subscription: with a
    60 s cache, a previous secret whose grace ended is dropped at once. To prove the cached copy
    is the one used, the database is then told the old secret still has an hour to go: a worker
    that re-read the row would sign with both."""
    recv = receiver()
    event = unique_name("sec.cached")
    sub = api.register(event, recv.url())
    old = sub["secret"]
    w = start_worker(SUBSCRIPTION_CACHE_TTL="60")  # nothing cached yet: no delivery so far
    st, _, rot = api.post(rotate_path(event, sub["id"]), {"gracePeriodSeconds": 3})
    assert st == 200, rot
    new = rot["secret"]
    expires = parse_time(rot["previousSecretExpiresAt"])

    q = deliver_one(api, db, rc, recv, event, {"in": "grace"})  # caches the subscription
    assert int(q.headers["webhook-timestamp"]) + 1 <= expires, "took too long to deliver"
    assert signatures(q) == [expected(new, q), expected(old, q)]

    db.sql("UPDATE subscriptions SET previous_secret_expires_at = now() + interval '1 hour' "
           f"WHERE id = {sql_quote(sub['id'])}")
    wait_past(expires)
    q = deliver_one(api, db, rc, recv, event, {"after": "grace"})
    assert signatures(q) == [expected(new, q)], "an expired previous secret signed"
    assert w.alive()


def test_rotate_twice_drops_the_oldest(api, db, rc, receiver, start_worker):
    recv = receiver()
    event = unique_name("sec.twice")
    s1 = new_secret()
    sub = api.post(HOOKS, {"eventName": event, "webhookUrl": recv.url(), "secret": s1})[2]
    assert sub["secret"] == s1
    s2 = new_secret(24)
    st, _, r1 = api.post(rotate_path(event, sub["id"]), {"secret": s2})
    assert st == 200 and r1["secret"] == s2
    st, _, r2 = api.post(rotate_path(event, sub["id"]), {})
    assert st == 200
    s3 = r2["secret"]
    assert len({s1, s2, s3}) == 3
    assert db_secrets(db, sub["id"])[:2] == (s3, s2)
    assert parse_time(r2["previousSecretExpiresAt"]) >= parse_time(r1["previousSecretExpiresAt"])

    start_worker()
    q = deliver_one(api, db, rc, recv, event, {"rotated": 2})
    sigs = signatures(q)
    assert sigs == [expected(s3, q), expected(s2, q)]
    assert expected(s1, q) not in sigs, "the oldest secret still signs"


def test_rotate_without_grace(api, db, rc, receiver, start_worker):
    recv = receiver()
    event = unique_name("sec.nograce")
    sub = api.register(event, recv.url())
    st, _, rot = api.post(rotate_path(event, sub["id"]), {"gracePeriodSeconds": 0})
    assert st == 200, rot
    assert "previousSecretExpiresAt" in rot and rot["previousSecretExpiresAt"] is None, rot
    assert db_secrets(db, sub["id"]) == (rot["secret"], None, None)
    st, _, one = api.get(f"{HOOKS}/{event}/{sub['id']}")
    assert "previousSecretExpiresAt" not in one and one["secret"] == rot["secret"], one

    start_worker()
    q = deliver_one(api, db, rc, recv, event, {"grace": 0})
    assert signatures(q) == [expected(rot["secret"], q)]
    assert expected(sub["secret"], q) not in signatures(q)


def test_rotate_grace_limits_accepted(api, db):
    event = unique_name("sec.limits")
    sub = api.register(event, "http://127.0.0.1:9/limits")
    t0 = time.time()
    st, _, rot = api.post(rotate_path(event, sub["id"]), {"gracePeriodSeconds": GRACE_MAX})
    assert st == 200, rot
    assert abs(parse_time(rot["previousSecretExpiresAt"]) - (t0 + GRACE_MAX)) < 60, rot
    st, _, rot = api.post(rotate_path(event, sub["id"]), b"{}")
    assert st == 200
    assert abs(parse_time(rot["previousSecretExpiresAt"]) - (t0 + GRACE_DEFAULT)) < 60, rot
    # Content-Type parameters are fine; no Content-Type at all is fine without a body.
    st, _, rot = api.post(rotate_path(event, sub["id"]), b'{"gracePeriodSeconds": 1}',
                          headers={"Content-Type": "application/json; charset=utf-8"})
    assert st == 200, rot
    st, _, rot = api.post(rotate_path(event, sub["id"]), None, headers={"Content-Type": None})
    assert st == 200, rot


BAD_ROTATE_BODIES = {
    "grace_over_max": ({"gracePeriodSeconds": GRACE_MAX + 1}, "invalid_field", "gracePeriodSeconds"),
    "grace_negative": ({"gracePeriodSeconds": -1}, "invalid_field", "gracePeriodSeconds"),
    "grace_fraction": ({"gracePeriodSeconds": 1.5}, "invalid_field", "gracePeriodSeconds"),
    "grace_huge": ({"gracePeriodSeconds": 1e300}, "invalid_field", "gracePeriodSeconds"),
    "grace_string": ({"gracePeriodSeconds": "60"}, "invalid_field", "gracePeriodSeconds"),
    "grace_null": ({"gracePeriodSeconds": None}, "invalid_field", "gracePeriodSeconds"),
    "grace_bool": ({"gracePeriodSeconds": True}, "invalid_field", "gracePeriodSeconds"),
    "secret_short": ({"secret": BAD_SECRETS["bytes_23"][0]}, "invalid_field", "too short"),
    "secret_long": ({"secret": BAD_SECRETS["bytes_65"][0]}, "invalid_field", "too long"),
    "secret_prefix": ({"secret": SECRET_BYTES}, "invalid_field", "must start with"),
    "secret_padding": ({"secret": BAD_SECRETS["padding_missing"][0]}, "invalid_field", "base64"),
    "secret_bits": ({"secret": BAD_SECRETS["non_canonical_bits"][0]}, "invalid_field", "base64"),
    "secret_space": ({"secret": BAD_SECRETS["trailing_space"][0]}, "invalid_field", "base64"),
    "secret_empty": ({"secret": ""}, "invalid_field", "empty"),
    "secret_number": ({"secret": 5}, "invalid_field", "must be a string"),
    "secret_null": ({"secret": None}, "invalid_field", "must be a string"),
    "unknown_field": ({"grace": 60}, "invalid_field", "unknown field"),
    "unknown_field_previous": ({"previousSecret": new_secret()}, "invalid_field", "unknown field"),
    "body_array": ([], ("invalid_json", "invalid_field"), None),
    "body_string": ('"x"', ("invalid_json", "invalid_field"), None),
    "body_number": ("60", ("invalid_json", "invalid_field"), None),
    "syntax": ('{"gracePeriodSeconds":', "invalid_json", None),
    "trailing_garbage": ('{} x', "invalid_json", None),
    "duplicate_keys": ('{"gracePeriodSeconds":1,"gracePeriodSeconds":2}', "invalid_json", None),
    "whitespace_only": (" ", "invalid_json", None),
}


@pytest.fixture(scope="module")
def target(broker):
    """One subscription the refused rotations are aimed at."""
    event = unique_name("sec.target")
    return broker.api.register(event, "http://127.0.0.1:9/target")


@pytest.mark.parametrize("case", sorted(BAD_ROTATE_BODIES))
def test_rotate_refuses_bad_bodies(api, target, nothing_written, case):
    body, codes, words = BAD_ROTATE_BODIES[case]
    if isinstance(body, str):
        body = body.encode()
    err = assert_error(api.post(rotate_path(target["eventName"], target["id"]), body), 400, codes)
    if words:
        assert words in err["message"], err


def test_rotate_refuses_other_content_types(api, target, nothing_written):
    assert_error(api.post(rotate_path(target["eventName"], target["id"]), b"{}",
                          headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type")
    assert_error(api.post(rotate_path(target["eventName"], target["id"]), b"{}",
                          headers={"Content-Type": None}), 415, "unsupported_media_type")


def test_rotate_unknown_wrong_event_or_deleted_is_404(api, db, target, nothing_written):
    event, sub_id = target["eventName"], target["id"]
    for path in (rotate_path(event, str(uuid.uuid4())),
                 rotate_path(unique_name("sec.wrong"), sub_id),
                 rotate_path(event, "not-a-uuid")):
        rotate = api.post(path, {"gracePeriodSeconds": 5})
        get = api.get(path.rsplit("/", 1)[0])
        assert_error(rotate, 404, "not_found")
        assert_error(get, 404, "not_found")  # the same answer as GET of the subscription


def test_rotate_deleted_subscription_is_404(api, db):
    event = unique_name("sec.deleted")
    sub = api.register(event, "http://127.0.0.1:9/deleted")
    st, _, _ = api.delete(f"{HOOKS}/{event}/{sub['id']}")
    assert st == 200
    assert_error(api.post(rotate_path(event, sub["id"])), 404, "not_found")
    assert db_raw(db, sub["id"]) == (None, None, None)


@pytest.mark.parametrize("auth", [None, "Bearer nope-nope-nope-nope", f"Basic {API_KEY}"])
def test_rotate_needs_an_api_key(api, target, nothing_written, auth):
    status, headers, data = api.post(rotate_path(target["eventName"], target["id"]), {},
                                     headers={"Authorization": auth})
    assert status == 401, data
    assert data["error"]["code"] == "unauthorized"
    assert headers.get("WWW-Authenticate") == "Bearer"


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT", "PATCH"])
def test_rotate_wrong_method(api, target, nothing_written, method):
    resp = api.request(method, rotate_path(target["eventName"], target["id"]),
                       b"{}" if method in ("PUT", "PATCH") else None)
    assert_error(resp, 405, "method_not_allowed")
    assert resp[1].get("allow") == "POST", resp[1]


@pytest.mark.parametrize("suffix", ["rotate", "rotate-secret/x", "Rotate-Secret", "rotate-secre"])
def test_rotate_similar_paths_are_404(api, target, nothing_written, suffix):
    path = f"{HOOKS}/{target['eventName']}/{target['id']}/{suffix}"
    assert_error(api.post(path, {}), 404, "not_found")


def test_rotate_leaves_the_event_index_alone(api, rc):
    event = unique_name("sec.index")
    url = "http://127.0.0.1:9/index"
    sub = api.register(event, url)
    before = rc.hgetall(f"wh:event:{event}")
    st, _, _ = api.post(rotate_path(event, sub["id"]), {})
    assert st == 200
    assert rc.hgetall(f"wh:event:{event}") == before
    assert json.loads(before[url]) == {"id": sub["id"], "status": "active"}


# --- secrets at rest ----------------------------------------------------------------------------

KEY_B = "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf"
KEY_C = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"


def test_secrets_are_stored_encrypted_never_in_plain(api, db, rc, receiver, start_worker,
                                                     broker):
    """Generated, supplied and rotated secrets: the columns hold AES-GCM ciphertext under
    SECRETS_KEY (opened here with Python's own AES-GCM to the secret the API returned), a fresh
    nonce each time, and no secret appears in the table or in any log."""
    recv = receiver()
    event = unique_name("sec.rest")
    generated = api.register(event, recv.url())
    supplied = new_secret()
    st, _, given = api.post(HOOKS, {"eventName": unique_name("sec.rest"),
                                    "webhookUrl": recv.url("/given"), "secret": supplied})
    assert st == 201 and given["secret"] == supplied
    st, _, rot = api.post(rotate_path(event, generated["id"]), {"gracePeriodSeconds": 600})
    assert st == 200, rot

    assert db_secrets(db, generated["id"])[:2] == (rot["secret"], generated["secret"])
    assert db_secrets(db, given["id"]) == (supplied, None, None)
    assert get_sub(api, generated)["secret"] == rot["secret"]
    assert get_sub(api, given)["secret"] == supplied
    everything = json.dumps(db.sql("SELECT * FROM subscriptions"))
    for secret in (generated["secret"], rot["secret"], supplied):
        assert secret[6:] not in everything, "a secret is stored in plain"
    assert db.count("subscriptions", "secret LIKE '%whsec_%' OR previous_secret LIKE '%whsec_%'") == 0
    # The same secret sealed twice differs (random nonce).
    st, _, again = api.post(HOOKS, {"eventName": unique_name("sec.rest"),
                                    "webhookUrl": recv.url("/again"), "secret": supplied})
    assert st == 201
    assert db_raw(db, again["id"])[0] != db_raw(db, given["id"])[0]
    assert db_secrets(db, again["id"])[0] == supplied

    w = start_worker()
    q = deliver_one(api, db, rc, recv, event, {"at": "rest"})
    assert signatures(q) == [expected(rot["secret"], q), expected(generated["secret"], q)]
    for secret in (generated["secret"], rot["secret"], supplied):
        assert secret[6:] not in broker.log_text(), "a secret is in the broker's log"
        assert secret[6:] not in w.log_text(), "a secret is in the worker's log"


def test_ciphertext_copied_to_another_row_does_not_open(api, db, broker):
    """The subscription id is authenticated with the ciphertext: a value moved to another row
    is refused, not used."""
    a = api.register(unique_name("sec.move"), "http://127.0.0.1:9/a")
    b = api.register(unique_name("sec.move"), "http://127.0.0.1:9/b")
    db.sql(f"UPDATE subscriptions SET secret = (SELECT secret FROM subscriptions WHERE id = "
           f"{sql_quote(a['id'])}) WHERE id = {sql_quote(b['id'])}")
    err = assert_error(api.get(f"{HOOKS}/{b['eventName']}/{b['id']}"), 500, "internal")
    assert "SECRETS_KEY" in err["message"] and a["secret"][6:] not in json.dumps(err)
    assert "fails authentication" in broker.log_text()
    assert get_sub(api, a)["secret"] == a["secret"]


def test_plain_rows_still_sign_and_are_encrypted_at_start(api, db, rc, receiver, start_worker,
                                                          start_broker):
    """Rows written before encryption (plain "whsec_..." values, put there with SQL): the worker
    signs with them; a broker starting encrypts them (compare-and-set, in batches) and the
    deliveries still verify with the original secrets."""
    recv = receiver()
    event = unique_name("sec.plain")
    sub = api.register(event, recv.url())
    current, previous = new_secret(), new_secret(24)
    db.sql(f"UPDATE subscriptions SET secret = {sql_quote(current)}, previous_secret = "
           f"{sql_quote(previous)}, previous_secret_expires_at = now() + interval '1 hour' "
           f"WHERE id = {sql_quote(sub['id'])}")
    # A batch's worth of other plain rows (deleted ones have no secret and are left alone).
    db.sql("INSERT INTO subscriptions (id, event_name, url, secret) SELECT gen_random_uuid(), "
           "'sec.plain.bulk', 'http://127.0.0.1:9/' || i, 'whsec_' || "
           "encode(sha256(i::text::bytea), 'base64') FROM generate_series(1, 250) i")
    assert db.count("subscriptions", "secret LIKE 'whsec_%'") >= 251

    start_worker()
    q = deliver_one(api, db, rc, recv, event, {"before": "migration"})
    assert signatures(q) == [expected(current, q), expected(previous, q)]
    assert get_sub(api, sub)["secret"] == current  # the API reads plain rows too

    b2 = start_broker()
    wait_until(lambda: db.count("subscriptions", "secret LIKE 'whsec_%' "
                                "OR previous_secret LIKE 'whsec_%'") == 0, 20,
               "every plain secret to be encrypted")
    report = wait_until(lambda: [l for l in b2.log_text().splitlines()
                                 if "stored secrets encrypted under key" in l], 10,
                        "the broker's re-encryption report")
    assert f"encrypted under key {key_id(SECRETS_KEY)};" in report[0], report
    assert db_secrets(db, sub["id"])[:2] == (current, previous)
    [bulk] = db.sql("SELECT id, secret FROM subscriptions WHERE event_name = 'sec.plain.bulk' "
                    "AND url = 'http://127.0.0.1:9/7'")
    assert open_sealed(bulk[1], bulk[0]) == \
        "whsec_" + base64.b64encode(hashlib.sha256(b"7").digest()).decode()
    q = deliver_one(api, db, rc, recv, event, {"after": "migration"})
    assert signatures(q) == [expected(current, q), expected(previous, q)]
    assert current[6:] not in b2.log_text() and previous[6:] not in b2.log_text()


def concurrently(n, fn):
    """Runs fn(i) for i in range(n) on n threads started together; returns the results."""
    results, barrier = [None] * n, threading.Barrier(n)

    def run(i):
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_rotations_and_registrations_keep_one_consistent_secret(api, db):
    """Secrets are compared in plain in the broker, then written with a compare-and-set on the
    ciphertext read: racing requests each either win (and their answer is what is stored) or
    are told to repeat (503); the row ends with the last winner's secret, readable."""
    event = unique_name("sec.race")
    url = "http://127.0.0.1:9/race"
    sub = api.register(event, url)
    secrets = [new_secret() for _ in range(8)]
    answers = concurrently(8, lambda i: api.post(rotate_path(event, sub["id"]),
                                                 {"secret": secrets[i], "gracePeriodSeconds": 600}))
    assert all(st in (200, 503) for st, _, _ in answers), answers
    won = [body["secret"] for st, _, body in answers if st == 200]
    assert won, answers
    current, previous, _ = db_secrets(db, sub["id"])
    assert current in won and previous in won + [sub["secret"]] and current != previous
    assert get_sub(api, sub)["secret"] == current

    # The same for registrations of one event + URL with different secrets: one row.
    event2 = unique_name("sec.race")
    answers = concurrently(8, lambda i: api.post(HOOKS, {"eventName": event2, "webhookUrl": url,
                                                         "secret": secrets[i]}))
    assert all(st in (200, 201, 503) for st, _, _ in answers), answers
    assert [st for st, _, _ in answers].count(201) == 1, answers
    [row] = db.sql(f"SELECT id FROM subscriptions WHERE event_name = {sql_quote(event2)}")
    stored = db_secrets(db, row[0])[0]
    assert stored in [body["secret"] for st, _, body in answers if st in (200, 201)]
    assert all(body["id"] == row[0] for st, _, body in answers if st in (200, 201))


@pytest.fixture
def own_system(binaries, pg, tmp_path):
    """A Redis and a database of the test's own (keys change here, which the module's broker
    must not see), and factories for brokers and workers on them; all stopped at the end."""
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    db = pg.create_database("wh_secrets_" + uuid.uuid4().hex[:8])
    procs = []

    def start(cls, name, **env):
        p = cls(tmp_path, redis, db, {k: str(v) for k, v in env.items()}, name=name)
        procs.append(p)
        return p.start()

    class System:
        pass

    s = System()
    s.redis, s.db = redis, db
    s.broker = lambda name, **env: start(Broker, name, **env)
    s.worker = lambda name, **env: start(Worker, name, **env)
    try:
        yield s
    finally:
        for p in procs:
            if p.alive():
                p.stop()
        redis.stop()


def deliver_own(api, db, recv, event, payload):
    """deliver_one without the module's Redis: waits for the job row and the receiver."""
    body = json.dumps(payload).encode()
    eid = api.trigger(event, body)["eventId"]
    db.wait_jobs(eid, "delivered", count=1)
    wait_until(lambda: [q for q in recv.requests if q.headers.get("webhook-id") == eid], 10,
               "the receiver to get the delivery")
    [q] = [q for q in recv.requests if q.headers.get("webhook-id") == eid]
    return q


def test_key_rotation(own_system, receiver):
    """Rows sealed under key A: a worker with SECRETS_KEY=B and SECRETS_KEY_PREVIOUS=A still
    signs with them; a broker with the same pair re-encrypts them under B at start-up, after
    which a worker that knows only B signs; new writes use B."""
    sys_, recv = own_system, receiver()
    key_a = SECRETS_KEY
    broker_a = sys_.broker("broker-a")
    event = unique_name("sec.keys")
    sub = broker_a.api.register(event, recv.url())
    st, _, rot = broker_a.api.post(rotate_path(event, sub["id"]), {"gracePeriodSeconds": 600})
    assert st == 200
    assert db_secrets(sys_.db, sub["id"], key_a)[:2] == (rot["secret"], sub["secret"])
    both = lambda q: [expected(rot["secret"], q), expected(sub["secret"], q)]  # noqa: E731

    w1 = sys_.worker("worker-b-and-a", SECRETS_KEY=KEY_B, SECRETS_KEY_PREVIOUS=f"{KEY_C}, {key_a}")
    q = deliver_own(broker_a.api, sys_.db, recv, event, {"key": "A read by B,A"})
    assert signatures(q) == both(q)
    w1.stop()
    broker_a.stop()

    broker_b = sys_.broker("broker-b", SECRETS_KEY=KEY_B, SECRETS_KEY_PREVIOUS=key_a)
    wait_until(lambda: sys_.db.count("subscriptions", f"secret LIKE 'enc:v1:{key_id(KEY_B)}:%' "
                                     f"AND previous_secret LIKE 'enc:v1:{key_id(KEY_B)}:%'") == 1,
               20, "the rows to be re-encrypted under key B")
    assert db_secrets(sys_.db, sub["id"], KEY_B)[:2] == (rot["secret"], sub["secret"])
    assert get_sub(broker_b.api, sub)["secret"] == rot["secret"]

    sys_.worker("worker-b", SECRETS_KEY=KEY_B)
    q = deliver_own(broker_b.api, sys_.db, recv, event, {"key": "B"})
    assert signatures(q) == both(q)

    # New writes use B.
    st, _, rot2 = broker_b.api.post(rotate_path(event, sub["id"]), {"gracePeriodSeconds": 0})
    assert st == 200
    assert db_raw(sys_.db, sub["id"])[0].startswith(f"enc:v1:{key_id(KEY_B)}:")
    assert db_secrets(sys_.db, sub["id"], KEY_B)[0] == rot2["secret"]


def test_worker_with_the_wrong_key_retries_instead_of_dropping(api, db, rc, receiver,
                                                               start_worker):
    """A worker whose keys do not open a secret records a failed attempt naming the cause and
    retries on schedule; a worker with the right key then delivers the job, correctly signed."""
    recv = receiver()
    event = unique_name("sec.wrongkey")
    sub = api.register(event, recv.url())
    schedule = ",".join(["0.5"] * 20)
    bad = start_worker(SECRETS_KEY=KEY_B, RETRY_SCHEDULE=schedule)
    body = b'{"key":"wrong"}'
    eid = api.trigger(event, body)["eventId"]
    [job] = wait_until(lambda: [j for j in db.jobs(eid) if j["status"] == "retrying"
                                and "cannot be decrypted" in (j["last_error"] or "")], 15,
                       "the job to fail with the decryption error")
    assert recv.count() == 0
    assert "fails authentication" in bad.log_text() or "key id" in bad.log_text()
    bad.stop()
    start_worker(RETRY_SCHEDULE=schedule)
    [job] = db.wait_jobs(eid, "delivered", count=1)
    wait_drained(rc, [job["id"]])
    [q] = [q for q in recv.requests if q.headers.get("webhook-id") == eid]
    assert q.body == body and signatures(q) == [expected(sub["secret"], q)]
    assert any(a[2] and "cannot be decrypted" in a[2] for a in db.attempts(job["id"]))


def run_binary(name, **env):
    """Runs one of our daemons with env; returns (exit code, output). For start-up refusals."""
    full = base_env({"REDIS_URL": "redis://127.0.0.1:9", "BROKER_LISTEN": f"127.0.0.1:{free_port()}",
                     "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
                     "WEBHOOK_API_KEYS": API_KEY, **env})
    out = subprocess.run([str(binary(name))], env=full, capture_output=True, timeout=30)
    text = (out.stdout + out.stderr).decode(errors="replace")
    for marker in SANITIZER_MARKERS:
        assert marker not in text, text
    return out.returncode, text


BAD_KEYS = {
    "missing": ({"SECRETS_KEY": None}, "SECRETS_KEY is not set"),
    "empty": ({"SECRETS_KEY": ""}, "SECRETS_KEY is not set"),
    "short_hex": ({"SECRETS_KEY": SECRETS_KEY[:-2]}, "SECRETS_KEY: a key must be 32 bytes"),
    "not_hex": ({"SECRETS_KEY": "z" * 64}, "SECRETS_KEY: a key must be 32 bytes"),
    "passphrase": ({"SECRETS_KEY": "correct horse battery staple"}, "64 hex digits"),
    "bad_previous": ({"SECRETS_KEY_PREVIOUS": f"{KEY_B},{KEY_C[:40]}"}, "SECRETS_KEY_PREVIOUS:"),
    "previous_repeats_current": ({"SECRETS_KEY_PREVIOUS": SECRETS_KEY}, "twice"),
}


@pytest.mark.parametrize("name", ["webhook-broker", "webhook-worker"])
@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_daemons_refuse_to_start_without_a_valid_key(binaries, name, case):
    env, words = BAD_KEYS[case]
    rc_, text = run_binary(name, **env)
    assert rc_ == 2, text
    assert words in text, text
    for v in env.values():
        if v and len(v) >= 16:
            assert v[:16] not in text, "the key is echoed"


def test_base64_key_is_accepted(binaries, redis, db, broker, tmp_path):
    """The same 32 bytes in base64 are the same key: the broker reads what hex wrote."""
    b = Broker(tmp_path, redis, db,
               {"SECRETS_KEY": base64.b64encode(bytes.fromhex(SECRETS_KEY)).decode()},
               name="broker-b64")
    b.start()
    try:
        sub = broker.api.register(unique_name("sec.b64"), "http://127.0.0.1:9/b64")
        assert get_sub(b.api, sub)["secret"] == sub["secret"]
        assert f"with key {key_id(SECRETS_KEY)}" in b.log_text()
    finally:
        b.stop()


# --- clearing secrets that no longer sign -------------------------------------------------------


def test_delete_clears_the_secrets(api, db):
    event = unique_name("sec.del")
    sub = api.register(event, "http://127.0.0.1:9/del")
    st, _, _ = api.post(rotate_path(event, sub["id"]), {"gracePeriodSeconds": 600})
    assert st == 200 and all(db_raw(db, sub["id"]))
    st, _, gone = api.delete(f"{HOOKS}/{event}/{sub['id']}")
    assert st == 200 and gone["status"] == "deleted", gone
    assert db_raw(db, sub["id"]) == (None, None, None)
    assert db.scalar(f"SELECT status FROM subscriptions WHERE id = {sql_quote(sub['id'])}") == \
        "deleted"
    # An active subscription cannot lose its secret.
    other = api.register(event, "http://127.0.0.1:9/del2")
    with pytest.raises(AssertionError, match="subscriptions_active_secret"):
        db.sql(f"UPDATE subscriptions SET secret = NULL WHERE id = {sql_quote(other['id'])}")


def test_reconciler_clears_expired_previous_secrets(api, db, redis):
    """Once a previous secret's grace period is over, the reconciler's purge removes it from
    the row; one still in its grace period stays."""
    event = unique_name("sec.purge")
    short = api.register(event, "http://127.0.0.1:9/short")
    long_ = api.register(event, "http://127.0.0.1:9/long")
    st, _, rot = api.post(rotate_path(event, short["id"]), {"gracePeriodSeconds": 1})
    assert st == 200
    st, _, _ = api.post(rotate_path(event, long_["id"]), {"gracePeriodSeconds": 600})
    assert st == 200
    wait_until(lambda: "previousSecretExpiresAt" not in get_sub(api, short), 10,
               "the short grace period to end")
    assert db_raw(db, short["id"])[1] is not None  # still stored until the purge
    _, text = run_reconciler(redis, db, RECONCILE_GRACE=0, SECRETS_KEY=None)
    assert "cleared" in text and "previous secrets whose grace period is over" in text, text
    assert db_raw(db, short["id"])[1:] == (None, None)
    assert db_secrets(db, short["id"])[0] == rot["secret"]
    assert db_raw(db, long_["id"])[1] is not None
    assert db_secrets(db, long_["id"])[1] == long_["secret"]


# --- custom headers with an empty value ---------------------------------------------------------


def test_empty_header_values_are_sent(api, db, rc, receiver, start_worker):
    """libcurl drops "Name:" with nothing after it; the worker uses its "Name;" form, so an
    empty (or blank) value registered is delivered as an empty header."""
    recv = receiver()
    event = unique_name("sec.hdr")
    headers = {"X-Empty": "", "X-Blank": "  ", "X-Full": "v"}
    sub = api.register(event, recv.url(), headers)
    assert sub["headers"] == headers
    start_worker()
    q = deliver_one(api, db, rc, recv, event, {"headers": "empty"})
    assert "x-empty" in q.headers and q.headers["x-empty"] == "", q.headers
    assert "x-blank" in q.headers and q.headers["x-blank"] == "", q.headers
    assert q.headers["x-full"] == "v"
    assert signatures(q) == [expected(sub["secret"], q)]
