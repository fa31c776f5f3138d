"""The webhook benchmark, end to end on a small load: both real servers, real Redis."""

import os

import pytest
import redis

from ivr.bench import WEBHOOKS, run_webhooks

from .conftest import REDIS_HOST, REDIS_PORT

REDIS_URL = os.environ.get("IVR_BENCH_REDIS_URL", f"redis://{REDIS_HOST}:{REDIS_PORT}/7")


@pytest.fixture
def redis_url():
    """A Redis database of the benchmark's own (emptied first), else a private embedded Redis."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.flushdb()
    except (redis.RedisError, OSError):
        yield None
        return
    finally:
        client.close()
    yield REDIS_URL


def test_benchmark_runs_end_to_end(redis_url):
    result = run_webhooks(concurrency=5, calls=20, workers=2, threads=2, redis_url=redis_url,
                          state_calls=10, paced_calls=10, pause_ms=10, quiet=True)

    assert result["settings"]["concurrency"] == 5
    for name in ("ivr", "bare"):
        for run in (result["servers"][name], result["servers"][name]["paced"]):
            assert run["error_count"] == 0, run["error_examples"]
            assert run["calls"] == (20 if run is result["servers"][name] else 10)
            assert run["calls_per_s"] > 0
            for webhook in WEBHOOKS:
                stats = run["webhooks"][webhook]
                assert stats["n"] == run["calls"] * (2 if webhook == "/voice/queue/wait" else 1)
                assert 0 < stats["p50_ms"] <= stats["p99_ms"] < 15_000
    assert result["ratio"] > 0 and 0 < result["cpu_ratio"] < 5
    assert result["servers"]["ivr"]["log_drain_s"] >= 0  # its slices ended with the log in SQL
    state = result["state"]
    assert state["calls"] == 10 and state["errors"] == 0
    assert 100 < state["avg_bytes"] <= state["max_bytes"] < 64_000
    drain = result["log_drain"]
    assert drain["drained"] and drain["dead"] == 0
    assert drain["calls_recorded"] == drain["calls_started"]
    assert set(result["targets"]) == {"p99_ms", "throughput_ratio", "state_bytes"}
    if redis_url:  # the benchmark cleans up after itself
        assert redis.Redis.from_url(redis_url).dbsize() == 0
