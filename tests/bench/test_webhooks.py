"""The webhook benchmark: a short run end to end against both real servers, how it steps the
load, and its HTTP client's handling of kept-alive connections the server closed."""

import asyncio

import pytest

from bench.webhooks import Pool, run, step_up


def test_a_short_run_end_to_end():
    """Two small levels on `ivr serve` (its embedded Redis, as users start it) and the bare
    app: every answer right, every call in the step log, the footprint read. Whether a level
    passes depends on the machine's speed, so that is left to the real run."""
    result = run(workers=2, threads=2, start=8, limit=16, refine=0, gap_s=0.3, settle_s=0.5,
                 measure_s=2, say=lambda *_: None)

    ivr = result["ivr"]
    assert [level["calls"] for level in ivr["levels"]][0] == 8
    for kind in ("ivr", "bare"):
        for level in result[kind]["levels"]:
            assert level["errors"] == 0, level["error_examples"]
            assert level["webhooks"] > 0 and 0 < level["p50_ms"] <= level["p99_ms"]
    assert ivr["calls_started"] > 0 and ivr["calls_recorded"] == ivr["calls_started"]
    idle = result["footprint_idle"]
    assert idle["processes"] == 4  # gunicorn's master, two workers and the embedded Redis
    assert 0 < idle["pss_mib"] < idle["rss_mib"]  # the workers share the master's pages
    assert 100 < result["state"]["avg_bytes"] <= result["state"]["max_bytes"] <= 4096


def test_the_load_doubles_until_a_level_fails_then_narrows_down():
    async def search(capacity: int, **kwargs) -> tuple[tuple[int, int | None], list[int]]:
        tried: list[int] = []

        async def passes(calls: int) -> bool:
            tried.append(calls)
            return calls <= capacity

        return await step_up(passes, **kwargs), tried

    found, tried = asyncio.run(search(1300, start=250, limit=32_000, refine=2))
    assert tried == [250, 500, 1000, 2000, 1500, 1250] and found == (1250, 1500)
    found, tried = asyncio.run(search(10**6, start=250, limit=1000, refine=2))
    assert tried == [250, 500, 1000] and found == (1000, None)  # never past the limit
    found, tried = asyncio.run(search(100, start=250, limit=1000, refine=1))
    assert tried == [250, 100] and found == (100, 250)  # the first level failed: below it


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


def test_a_request_a_stale_kept_alive_connection_dropped_is_sent_again():
    start, seen = _serve_then_drop(answers_per_connection=1)

    async def go():
        server = await start()
        pool = Pool("127.0.0.1", server.sockets[0].getsockname()[1])
        try:
            return [await pool.post(REQUEST) for _ in range(3)], (pool.opened, pool.resent)
        finally:
            pool.close()
            server.close()

    answers, counts = asyncio.run(go())
    assert [(status, body) for _, status, body in answers] == [(200, b"ok")] * 3
    assert seen == [2, 2, 1]  # each dropped request was answered on the next connection
    assert counts == (3, 2)


def test_no_resend_on_a_new_connection_or_after_part_of_an_answer():
    async def go(answers_per_connection: int, partial: bool, sends: int):
        start, _ = _serve_then_drop(answers_per_connection, partial)
        server = await start()
        pool = Pool("127.0.0.1", server.sockets[0].getsockname()[1])
        try:
            for _ in range(sends):
                await pool.post(REQUEST)
        finally:
            pool.close()
            server.close()

    # a new connection: the server is refusing the request
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        asyncio.run(go(0, False, 1))
    # the server began answering: it saw the request
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        asyncio.run(go(1, True, 2))
