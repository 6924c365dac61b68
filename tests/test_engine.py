"""The engine on its own: one thread, interleaved jobs, admission control, cancellation, errors."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gemmacli.server.engine import Engine, EngineStopped, Overloaded


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def engine():
    engine = Engine(max_running=2, max_queue=2)
    engine.start()
    yield engine
    engine.stop(timeout=5)


def counting(n: int, seen: list | None = None, delay: float = 0.0):
    """A job yielding 0..n-1, recording the thread it ran on and stopping when cancelled."""

    def work(cancelled):
        for i in range(n):
            if cancelled():
                return
            if seen is not None:
                seen.append(threading.current_thread().name)
            time.sleep(delay)
            yield i

    return work


def test_results_stream_in_order_on_the_inference_thread(engine):
    seen: list[str] = []

    async def main():
        return [x async for x in engine.stream(counting(5, seen))]

    assert run(main()) == [0, 1, 2, 3, 4]
    assert set(seen) == {"gemmacli-inference"}


def test_two_jobs_interleave_step_by_step(engine):
    order: list[str] = []

    def tagged(tag):
        def work(cancelled):
            for i in range(3):
                order.append(tag)
                yield i

        return work

    async def main():
        async def drain(tag):
            return [x async for x in engine.stream(tagged(tag))]

        return await asyncio.gather(drain("a"), drain("b"))

    assert run(main()) == [[0, 1, 2], [0, 1, 2]]
    assert order[:4] in (["a", "b", "a", "b"], ["b", "a", "b", "a"])


def test_exceptions_travel_to_the_caller_and_the_engine_survives(engine):
    def failing(cancelled):
        yield 1
        raise ValueError("boom")

    async def main():
        got = []
        with pytest.raises(ValueError, match="boom"):
            async for x in engine.stream(failing):
                got.append(x)
        return got, await engine.call(lambda: 42)

    assert run(main()) == ([1], 42)


def test_leaving_early_cancels_the_job_at_its_next_step(engine):
    produced: list[str] = []

    async def main():
        async for x in engine.stream(counting(1000, produced, delay=0.005)):
            if x == 2:
                break
        await asyncio.sleep(0.2)

    run(main())
    assert len(produced) < 10
    assert engine.running == 0 and engine.waiting == 0


def test_queue_overflow_is_refused_with_retry_after():
    engine = Engine(max_running=1, max_queue=1)
    engine.start()
    release = threading.Event()

    async def main():
        first = asyncio.ensure_future(engine.call(lambda: release.wait(5)))
        await asyncio.sleep(0.1)  # running now
        second = asyncio.ensure_future(engine.call(lambda: "queued"))
        await asyncio.sleep(0.05)  # waiting now
        with pytest.raises(Overloaded) as err:
            await engine.call(lambda: "refused")
        release.set()
        return await first, await second, err.value.retry_after

    try:
        assert run(main()) == (True, "queued", 1)
    finally:
        engine.stop(timeout=5)


def test_timeout_covers_the_whole_job(engine):
    async def main():
        with pytest.raises(TimeoutError):
            async for _ in engine.stream(counting(100, delay=0.05), timeout=0.2):
                pass

    run(main())


def test_a_stopped_engine_takes_no_work():
    engine = Engine()
    engine.start()
    engine.stop(timeout=5)
    with pytest.raises(EngineStopped):
        run(engine.call(lambda: 1))


def test_gauges_follow_running_and_waiting():
    changes: list[tuple[int, int]] = []
    engine = Engine(max_running=1, max_queue=4, on_change=lambda r, w: changes.append((r, w)))
    engine.start()
    try:
        run(engine.call(lambda: 1))
    finally:
        engine.stop(timeout=5)
    assert (1, 0) in changes and changes[-1] == (0, 0)


class CountItem:
    """Counts to `n`, one number per batch step."""

    def __init__(self, n: int):
        self.n, self.sent, self.finished = n, 0, False

    def advance(self) -> list[int]:
        self.sent += 1
        self.finished = self.sent >= self.n
        return [self.sent]


class FakeBatch:
    def __init__(self, fail_at: int | None = None):
        self.items, self.sizes, self.fail_at, self.resets = [], [], fail_at, 0

    def __len__(self):
        return len(self.items)

    def add(self, item):
        self.items.append(item)
        return []

    def step(self):
        self.sizes.append(len(self.items))
        if self.fail_at is not None and len(self.sizes) == self.fail_at:
            raise RuntimeError("batch broke")
        out = [(item, item.advance()) for item in self.items]
        self.items = [i for i in self.items if not i.finished]
        return out

    def reset(self):
        self.items, self.resets = [], self.resets + 1


def test_batched_jobs_of_one_key_share_steps(engine):
    from gemmacli.server.engine import Batched

    batch = FakeBatch()

    async def main():
        async def run_one(n):
            return [x async for x in engine.stream(lambda cancelled: Batched("model", CountItem(n), lambda: batch))]

        return await asyncio.gather(run_one(3), run_one(5))

    assert run(main()) == [[1, 2, 3], [1, 2, 3, 4, 5]]
    assert max(batch.sizes) == 2 and engine.running == 0


def test_a_failed_batch_step_fails_its_jobs_and_the_engine_goes_on(engine):
    from gemmacli.server.engine import Batched

    batch = FakeBatch(fail_at=2)

    async def main():
        with pytest.raises(RuntimeError, match="batch broke"):
            async for _ in engine.stream(lambda cancelled: Batched("m", CountItem(5), lambda: batch)):
                pass
        return await engine.call(lambda: "still serving")

    assert run(main()) == "still serving" and batch.resets == 1
