"""Callers looked up in an HTTP caller directory (a CRM) on loopback (tests/order_api.py): found,
not found, kept in Redis for the directory's cache time, and unknown whenever the CRM fails."""

from __future__ import annotations

import logging
import threading

import pytest
import redis

from ivr.config import AllowedHosts
from ivr.flows.loader import load_flow_text
from ivr.runtime.circuit import Circuit
from ivr.runtime.crm import CrmLookup
from tests.order_api import OrderApi

FLOW = """
id: crm
directory:
  url: "{{{{ secrets.CRM_URL }}}}/v1/callers?phone={{{{ phone }}}}"
  headers: {{Authorization: "Bearer {{{{ secrets.CRM_TOKEN }}}}"}}
  timeout: {timeout}
  cache: {cache}
  record: data
nodes:
  hello:
    hangup: "Hello {{{{ caller.first_name }}}}."
"""
ADA = "+14155550100"


@pytest.fixture
def api(monkeypatch):
    server = OrderApi().start()
    monkeypatch.setenv("CRM_URL", server.url)
    monkeypatch.setenv("CRM_TOKEN", "crm-s3cret")
    yield server
    server.stop()


def crm(api, redis_url, timeout: float = 2, cache: int = 300, **kwargs):
    flow = load_flow_text(FLOW.format(timeout=timeout, cache=cache), "crm.yaml")
    client = redis.Redis.from_url(redis_url)
    return flow, CrmLookup(client, AllowedHosts.parse(api.host), **kwargs), client


def test_a_caller_found_in_the_crm_has_every_field_it_gives(api, redis_url):
    flow, lookup, _ = crm(api, redis_url)
    caller = lookup.lookup(flow, ADA)
    assert caller["known"] is True and caller["full_name"] == "Ada Lovelace" and caller["phone"] == ADA
    assert caller["customer_id"] == "C-1001" and caller["tier"] == "gold"
    assert caller["open_tickets"] == "2" and caller["vip"] == "true"  # as text, like a CSV column
    seen = api.requests[-1]
    assert seen.path == "/v1/callers?phone=%2B14155550100"
    assert seen.headers["Authorization"] == "Bearer crm-s3cret"


def test_found_and_not_found_are_kept_for_the_cache_time(api, redis_url):
    flow, lookup, client = crm(api, redis_url, cache=120)
    assert lookup.lookup(flow, ADA)["first_name"] == "Ada"
    assert lookup.lookup(flow, "+12025550199") is None
    assert len(api.requests) == 2
    assert lookup.lookup(flow, ADA)["first_name"] == "Ada"
    assert lookup.lookup(flow, "+12025550199") is None
    assert len(api.requests) == 2  # both from Redis, shared by every web process
    assert 0 < client.ttl(f"ivr:crm:crm:{ADA}") <= 120
    flow, no_cache, _ = crm(api, redis_url, cache=0)
    no_cache.lookup(flow, "+12025550198")
    no_cache.lookup(flow, "+12025550198")
    assert len(api.requests) == 4


@pytest.mark.parametrize("trouble", ["fail_with", "bad_json", "hold", "refused", "not_allowed"])
def test_whatever_goes_wrong_the_caller_is_unknown_and_it_is_not_kept(api, redis_url, trouble, caplog):
    flow, lookup, client = crm(api, redis_url, timeout=0.5)
    if trouble == "fail_with":
        api.fail_with = 503
    elif trouble == "bad_json":
        api.bad_json = True
    elif trouble == "hold":
        api.hold = threading.Event()
    elif trouble == "refused":
        api.stop()
    else:
        lookup.hosts = AllowedHosts.parse("crm.example.com")
    with caplog.at_level(logging.WARNING):
        assert lookup.lookup(flow, ADA) is None
    assert client.get(f"ivr:crm:crm:{ADA}") is None  # asked again next time
    assert "the caller is treated as unknown" in caplog.text and "crm-s3cret" not in caplog.text


def test_a_crm_that_keeps_failing_is_not_asked_for_a_while(api, redis_url):
    circuit = Circuit(redis.Redis.from_url(redis_url), failures=2, open_s=60)
    flow, lookup, _ = crm(api, redis_url, circuit=circuit)
    api.fail_with = 500
    for _ in range(3):
        assert lookup.lookup(flow, ADA) is None
    assert len(api.requests) == 2
