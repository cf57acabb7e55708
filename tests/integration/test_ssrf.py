"""The SSRF guard: webhook URLs whose host is (or resolves to) a loopback, private, link-local,
CGNAT, multicast, reserved or unspecified address are refused at registration (400
url_not_allowed, nothing written) and again by the worker on the address it actually dials
(the job is dead after one attempt, nothing sent, the reason in the attempt log). The module's
default broker and workers run with WEBHOOK_ALLOW_PRIVATE_NETWORKS=1 like the rest of the suite;
the guarded processes here turn it off."""

import ipaddress
import socket

import pytest

from harness import (DEAD, assert_error, broker_refuses_to_start, unique_name, wait_drained,
                     wait_until)

INTERNAL = [
    "http://127.0.0.1:9/hook",
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://127.000.000.001/",
    "http://0.0.0.0/",
    "http://0/",
    "http://[::]/",
    "http://[::1]:8080/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fe80::1%25lo]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://100.64.0.1/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://192.0.2.1/",
    "http://198.18.0.1/",
    "http://[fc00::1]/",
    "http://[ff02::1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
    "http://localhost/",
    "http://localhost./",
    "http://LOCALHOST:8080/",
    "http://anything.localhost/",
    "https://127.0.0.1/",
]


@pytest.fixture(scope="module")
def guarded(module_broker):
    """A broker with the guard on."""
    return module_broker("guarded", WEBHOOK_ALLOW_PRIVATE_NETWORKS=0)


def refused(api, db, url, words=()):
    before = db.count("subscriptions")
    err = assert_error(api.post("/api/v0/webhooks", {"eventName": unique_name("ssrf"),
                                                     "webhookUrl": url}), 400, "url_not_allowed")
    for w in words:
        assert w in err["message"], err
    assert db.count("subscriptions") == before
    return err


@pytest.mark.parametrize("url", INTERNAL)
def test_registration_refuses_internal_targets(guarded, db, url):
    err = refused(guarded.api, db, url)
    assert "refus" in err["message"] or "local host" in err["message"], err


def test_refusal_names_the_address_and_its_class(guarded, db):
    refused(guarded.api, db, "http://169.254.169.254/", ["169.254.169.254", "link-local"])
    refused(guarded.api, db, "http://0x7f000001/", ["127.0.0.1", "loopback"])
    refused(guarded.api, db, "http://[::ffff:10.1.2.3]/", ["private", "10.1.2.3"])


def _resolves_only_to_non_public(name):
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return infos and all(not ipaddress.ip_address(i[4][0].split("%")[0]).is_global
                         for i in infos)


def test_names_are_resolved_and_every_address_checked(guarded, db):
    """A name (not a literal, not *.localhost) that the system resolver maps to a non-public
    address: this machine's own host name usually is one (/etc/hosts)."""
    name = socket.gethostname()
    if not _resolves_only_to_non_public(name):
        pytest.skip(f"{name} does not resolve to non-public addresses only here")
    refused(guarded.api, db, f"http://{name}:8080/hook", [name, "resolves to a refused address"])


def test_a_name_that_does_not_exist_is_refused(guarded, db):
    name = "no-such-host.invalid"
    try:
        socket.getaddrinfo(name, None)
        pytest.skip(f"{name} resolves here")
    except socket.gaierror as e:
        if e.errno not in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            pytest.skip(f"the resolver cannot say whether {name} exists here: {e}")
    refused(guarded.api, db, f"https://{name}/hook", ["does not resolve"])


@pytest.mark.parametrize("url", ["https://93.184.215.14/hook", "http://8.8.8.8:8080/x",
                                 "https://[2606:4700:4700::1111]/hook"])
def test_public_addresses_are_accepted(guarded, url):
    # Registration only: nothing is triggered, so nothing is ever sent off this machine.
    data = guarded.api.register(unique_name("public"), url)
    assert data["webhookUrl"] == url


def test_allow_listed_networks_are_accepted(start_broker, db):
    b = start_broker(WEBHOOK_ALLOW_PRIVATE_NETWORKS=0,
                     WEBHOOK_ALLOWED_CIDRS="127.0.0.1/32, 10.20.0.0/16")
    b.api.register(unique_name("cidr"), "http://127.0.0.1:9/hook")
    b.api.register(unique_name("cidr"), "http://10.20.3.4/hook")
    refused(b.api, db, "http://127.0.0.2/hook", ["127.0.0.2", "loopback"])
    refused(b.api, db, "http://10.21.0.1/hook", ["10.21.0.1", "private"])
    # localhost is also ::1, which the list does not cover: every address must pass
    refused(b.api, db, "http://localhost:9/hook", ["::1"])


def test_bad_allow_list_stops_the_broker(binaries, redis, db):
    broker_refuses_to_start(redis, db, "WEBHOOK_ALLOWED_CIDRS", WEBHOOK_ALLOWED_CIDRS="10.0.0.0/33")


def test_https_only_at_registration(start_broker, db):
    b = start_broker(WEBHOOK_HTTPS_ONLY=1)
    refused(b.api, db, "http://127.0.0.1:9/hook", ["https"])
    b.api.register(unique_name("tls"), "https://127.0.0.1:9/hook")


# --- at delivery: the worker checks the address it dials ---------------------------------------


def _dead_with(api, db, rc, eid, words):
    [job] = db.wait_jobs(eid, "dead", count=1)
    assert job["attempts"] == "1", job
    [(n, code, error)] = db.attempts(job["id"])
    assert n == 1 and code is None, (n, code, error)
    for w in words:
        assert w in error, error
    assert job["last_error"] == error
    wait_until(lambda: any(e.get("j") == job["id"] for e in rc.stream_jobs(DEAD)), 10,
               f"job {job['id']} in {DEAD}")
    wait_drained(rc, [job["id"]])
    return error


def test_worker_refuses_internal_address_without_retrying(api, db, rc, receiver, start_worker):
    r = receiver(200)
    event = unique_name("ssrfw")
    api.register(event, r.url())  # the module broker lets it in; the worker must not
    start_worker(WEBHOOK_ALLOW_PRIVATE_NETWORKS=0, RETRY_SCHEDULE="0.2,0.2,0.2")
    eid = api.trigger(event, b'{"n": 1}')["eventId"]
    _dead_with(api, db, rc, eid, ["SSRF guard", "127.0.0.1", "loopback"])
    [j] = api.event(eid)["jobs"]
    assert j["status"] == "dead" and "SSRF guard" in j["lastError"], j
    assert r.count() == 0, r.requests


def test_worker_dials_only_addresses_that_pass(api, db, rc, receiver, start_worker):
    """localhost is ::1 and 127.0.0.1; only 127.0.0.1 is allow-listed and the receiver listens
    there: the guard refuses ::1, libcurl goes on to 127.0.0.1, and the delivery succeeds."""
    r = receiver(200)
    event = unique_name("ssrfl")
    url = r.url().replace("127.0.0.1", "localhost")
    api.register(event, url)
    start_worker(WEBHOOK_ALLOW_PRIVATE_NETWORKS=0, WEBHOOK_ALLOWED_CIDRS="127.0.0.1/32")
    eid = api.trigger(event, b'{"n": 2}')["eventId"]
    [job] = db.wait_jobs(eid, "delivered", count=1)
    assert [a[:2] for a in db.attempts(job["id"])] == [(1, 200)]
    assert r.count() == 1


def test_worker_refuses_when_no_address_passes(api, db, rc, receiver, start_worker):
    r = receiver(200)
    event = unique_name("ssrfn")
    api.register(event, r.url().replace("127.0.0.1", "localhost"))
    start_worker(WEBHOOK_ALLOW_PRIVATE_NETWORKS=0, WEBHOOK_ALLOWED_CIDRS="127.0.0.2/32")
    eid = api.trigger(event, b'{"n": 3}')["eventId"]
    _dead_with(api, db, rc, eid, ["SSRF guard", "loopback"])
    assert r.count() == 0, r.requests


def test_worker_https_only(api, db, rc, receiver, start_worker):
    r = receiver(200)
    event = unique_name("ssrfs")
    api.register(event, r.url())
    start_worker(WEBHOOK_HTTPS_ONLY=1)
    eid = api.trigger(event, b'{"n": 4}')["eventId"]
    _dead_with(api, db, rc, eid, ["https", "WEBHOOK_HTTPS_ONLY"])
    assert r.count() == 0, r.requests


def test_worker_ignores_proxy_environment(api, db, rc, receiver, start_worker):
    """A proxy from the environment would make libcurl dial the proxy instead of the checked
    address; the worker sets CURLOPT_PROXY to "" so the variables have no effect."""
    proxy = receiver(200, name="proxy")
    r = receiver(200)
    event = unique_name("ssrfp")
    api.register(event, r.url())
    start_worker(http_proxy=proxy.url("/"), HTTP_PROXY=proxy.url("/"), ALL_PROXY=proxy.url("/"))
    eid = api.trigger(event, b'{"n": 5}')["eventId"]
    db.wait_jobs(eid, "delivered", count=1)
    assert r.count() == 1 and proxy.count() == 0
