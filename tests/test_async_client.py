"""The asynchronous Client: ``await Client(asynchronous=True)``, awaiting futures,
gather/compute/scatter/wait/as_completed in a coroutine, ``client.sync``, and web
servers that keep serving while the tasks they wait for run."""

from __future__ import annotations

import asyncio
import threading

import pytest

from shmdask import delayed
from shmdask.distributed import Client, as_completed, wait


def inc(x):
    return x + 1


def fail(x):
    raise ValueError(f"bad value {x}")


def threaded_client(**kwargs):
    return Client(processes=False, n_workers=1, threads_per_worker=2, asynchronous=True,
                  set_as_default=False, **kwargs)


def test_await_client_submit_gather_compute_scatter():
    async def main():
        client = await threaded_client()
        try:
            assert client.asynchronous
            assert await client.submit(inc, 1) == 2
            f = client.submit(inc, 10)
            assert await f == 11
            assert await f.result() == 11  # result() is awaitable in a coroutine
            futures = client.map(inc, range(5))
            assert await client.gather(futures) == [1, 2, 3, 4, 5]
            assert await client.compute(delayed(inc)(41)) == 42
            assert await client.compute(delayed(inc)(1), sync=True) == 2
            [x] = await client.scatter([100])
            assert await client.submit(inc, x) == 101
            done, not_done = await wait(futures)
            assert len(done) == 5 and not not_done
            assert await client.nthreads() == {"thread-0": 2}
            bad = client.submit(fail, 3)
            with pytest.raises(ValueError, match="bad value 3"):
                await bad
            assert isinstance(await bad.exception(), ValueError)
            assert await bad.traceback() is not None
        finally:
            await client.close()
        assert client.closed

    asyncio.run(main())


def test_async_with_and_async_for_over_as_completed():
    async def main():
        async with threaded_client() as client:
            futures = client.map(inc, range(6))
            seen = [await f async for f in as_completed(futures)]
            assert sorted(seen) == [1, 2, 3, 4, 5, 6]
            pairs = [pair async for pair in as_completed(futures, with_results=True)]
            assert sorted(r for _, r in pairs) == [1, 2, 3, 4, 5, 6]
        assert client.closed

    asyncio.run(main())


def test_async_client_on_worker_processes():
    async def main():
        async with Client(n_workers=1, asynchronous=True, set_as_default=False) as client:
            assert await client.submit(inc, 1) == 2
            assert "processes=1" in repr(client)

    asyncio.run(main())


def test_an_unawaited_async_client_says_so():
    async def main():
        client = Client(processes=False, n_workers=1, asynchronous=True, set_as_default=False)
        with pytest.raises(RuntimeError, match="await"):
            client.submit(inc, 1)
        assert "not started" in repr(client)
        await client  # starts now
        assert await client.submit(inc, 1) == 2
        await client.close()

    asyncio.run(main())


def test_sync_runs_coroutines_for_a_blocking_client():
    with Client(processes=False, n_workers=1, set_as_default=False) as client:
        async def double_inc(x):
            y = await client.submit(inc, x)
            return await client.submit(inc, y)

        assert client.sync(double_inc, 1) == 3
        assert client.sync(inc, 1) == 2  # a plain function: just called
        with pytest.raises(asyncio.TimeoutError):
            client.sync(asyncio.sleep, 10, callback_timeout=0.01)


def test_sync_gives_the_awaitable_to_an_asynchronous_client():
    async def main():
        async with threaded_client() as client:
            async def plus_one(x):
                return x + 1

            awaitable = client.sync(plus_one, 1)
            assert asyncio.iscoroutine(awaitable) or isinstance(awaitable, asyncio.Future)
            assert await awaitable == 2

    asyncio.run(main())


def test_awaiting_a_future_never_blocks_the_event_loop():
    """The task waits for a gate that only the event loop opens: if awaiting
    blocked the loop, this would never finish."""
    gate = threading.Event()

    async def main():
        async with threaded_client() as client:
            future = client.submit(gate.wait, 30, pure=False)

            async def open_gate_soon():
                for _ in range(3):
                    await asyncio.sleep(0)
                assert not future.done()  # still running: the loop is free meanwhile
                gate.set()

            opener = asyncio.create_task(open_gate_soon())
            assert await future is True
            await opener

    asyncio.run(main())


# -- servers awaiting futures in their handlers ---------------------------------------------


def test_asyncio_server_keeps_serving_while_a_handler_awaits_a_task():
    gate = threading.Event()

    async def main():
        async with threaded_client() as client:
            started = asyncio.Event()

            async def handle(reader, writer):
                line = (await reader.readline()).strip()
                if line == b"slow":
                    future = client.submit(gate.wait, 30, pure=False)
                    started.set()
                    answer = b"slow-%s" % str(await future).encode()
                else:
                    answer = b"fast-%d" % await client.submit(inc, int(line))
                writer.write(answer + b"\n")
                await writer.drain()
                writer.close()

            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]

            async def ask(text):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(text + b"\n")
                await writer.drain()
                answer = (await reader.readline()).strip()
                writer.close()
                return answer

            async with server:
                slow = asyncio.create_task(ask(b"slow"))
                await started.wait()
                # the slow request is waiting on its task: others are served
                assert await ask(b"41") == b"fast-42"
                assert await ask(b"1") == b"fast-2"
                assert not slow.done()
                gate.set()
                assert await slow == b"slow-True"

    asyncio.run(main())


def test_tornado_server_keeps_serving_while_a_handler_awaits_a_task():
    tornado_web = pytest.importorskip("tornado.web")
    from tornado.httpclient import AsyncHTTPClient
    from tornado.httpserver import HTTPServer
    from tornado.testing import bind_unused_port

    gate = threading.Event()

    async def main():
        async with threaded_client() as client:
            started = asyncio.Event()

            class Slow(tornado_web.RequestHandler):
                async def get(self):
                    future = client.submit(gate.wait, 30, pure=False)
                    started.set()
                    self.write(f"slow-{await future}")

            class Fast(tornado_web.RequestHandler):
                async def get(self, x):
                    self.write(f"fast-{await client.submit(inc, int(x))}")

            app = tornado_web.Application([(r"/slow", Slow), (r"/fast/(\d+)", Fast)])
            sock, port = bind_unused_port()
            server = HTTPServer(app)
            server.add_sockets([sock])
            http = AsyncHTTPClient()
            try:
                slow = asyncio.ensure_future(http.fetch(f"http://127.0.0.1:{port}/slow",
                                                        request_timeout=60))
                await started.wait()
                answer = await http.fetch(f"http://127.0.0.1:{port}/fast/41")
                assert answer.body == b"fast-42"
                assert not slow.done()
                gate.set()
                assert (await slow).body == b"slow-True"
            finally:
                server.stop()
                http.close()

    asyncio.run(main())
