"""The webhook benchmark, end to end on a small load: both real servers, real Redis."""

import asyncio

import pytest

from bench.webhooks import WEBHOOKS, Client, run_webhooks


def test_benchmark_runs_end_to_end():
    # redis_url=None: the benchmark starts a Redis of its own, as it does for users without one
    result = run_webhooks(concurrency=5, calls=20, workers=2, threads=2, redis_url=None,
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


def _serve_then_drop(answers_per_connection: int, partial: bool = False):
    """A real TCP server that answers `answers_per_connection` requests on each connection,
    then drops the connection when the next request arrives (what a server closing an idle
    kept-alive connection looks like to the client when the two cross); with `partial`, it
    first sends half an answer. Returns (start coroutine, requests seen per connection)."""
    seen: list[int] = []
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(0)
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            seen[-1] += 1
            if seen[-1] > answers_per_connection:
                if partial:
                    writer.write(b"HTTP/1.1 200 OK\r\n")
                    await writer.drain()
                break
            writer.write(answer)
            await writer.drain()
        writer.close()

    return (lambda: asyncio.start_server(handle, "127.0.0.1", 0)), seen


REQUEST = b"POST /voice HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"


def test_client_resends_a_request_a_stale_kept_alive_connection_dropped():
    start, seen = _serve_then_drop(answers_per_connection=1)

    async def go():
        server = await start()
        client = Client("127.0.0.1", server.sockets[0].getsockname()[1])
        try:
            return [await client.send(REQUEST) for _ in range(3)], (client.reconnects, client.resends)
        finally:
            client.close()
            server.close()

    answers, reconnects = asyncio.run(go())
    assert [(status, body) for _, status, body in answers] == [(200, b"ok")] * 3
    assert seen == [2, 2, 1]  # each dropped request was answered on the next connection
    assert reconnects == (2, 2)


def test_client_does_not_resend_on_a_new_connection_or_after_part_of_an_answer():
    async def go(answers_per_connection: int, partial: bool, sends: int):
        start, _ = _serve_then_drop(answers_per_connection, partial)
        server = await start()
        client = Client("127.0.0.1", server.sockets[0].getsockname()[1])
        try:
            for _ in range(sends):
                await client.send(REQUEST)
        finally:
            client.close()
            server.close()

    with pytest.raises(ConnectionError):  # a new connection: the server is refusing the request
        asyncio.run(go(0, False, 1))
    with pytest.raises(ConnectionError):  # the server began answering: it saw the request
        asyncio.run(go(1, True, 2))
