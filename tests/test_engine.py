"""The engine on its own: one thread, interleaved jobs, admission control, cancellation, errors."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gemmacli.server.engine import Engine, EngineStopped, Overloaded
from gemmacli.types import Delta, GenParams


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


class CountSeq:
    """Counts to `n`, one number per decoder step."""

    def __init__(self, n: int, cancelled):
        self.n = n
        self.sent = 0
        self.cancelled = cancelled
        self.error = None
        self.finish_reason = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.error is not None


class FakeDecoder:
    """The decoder protocol (insert, step, cancel, len) over counting sequences."""

    def __init__(self, fail_at: int | None = None):
        self.seqs = []
        self.sizes = []
        self.fail_at = fail_at

    def __len__(self):
        return len(self.seqs)

    def fork(self, prompt, params, n, cancelled):
        return [self.insert(prompt, params, cancelled) for _ in range(n)]

    def insert(self, prompt, params, cancelled):
        if prompt < 0:
            raise ValueError("a bad prompt")
        self.seqs.append(CountSeq(prompt, cancelled))
        return self.seqs[-1]

    def cancel(self, seq):
        seq.finish_reason = "cancelled"

    def advance(self):
        return iter(self.step())

    def step(self):
        self.sizes.append(len(self.seqs))
        out = []
        for seq in self.seqs:
            if seq.done or seq.cancelled():
                seq.finish_reason = seq.finish_reason or "cancelled"
                out.append((seq, [Delta("", (), "cancelled")]))
                continue
            seq.sent += 1
            if seq.sent == self.fail_at:
                seq.error = RuntimeError("sequence broke")
                out.append((seq, []))
                continue
            seq.finish_reason = "length" if seq.sent >= seq.n else None
            out.append((seq, [Delta(str(seq.sent), (seq.sent,), seq.finish_reason)]))
        self.seqs = [seq for seq in self.seqs if not seq.done]
        return out


async def texts(engine, decoder, prompts) -> list[list[str]]:
    """Each choice's texts, in order."""
    out = [[] for _ in prompts]
    async for index, delta in engine.generate(decoder, lambda: prompts, GenParams()):
        out[index].append(delta.text)
    return out


def test_generations_in_one_decoder_share_its_steps(engine):
    decoder = FakeDecoder()

    async def main():
        return await asyncio.gather(texts(engine, decoder, [3]), texts(engine, decoder, [5, 2]))

    assert run(main()) == [[["1", "2", "3"]], [["1", "2", "3", "4", "5"], ["1", "2"]]]
    assert max(decoder.sizes) == 3 and engine.running == 0 and not len(decoder)
    assert not engine._decoders and not engine._owners  # nothing of the decoder (or its model) held any more


def test_a_failed_sequence_fails_its_job_and_the_others_go_on(engine):
    decoder = FakeDecoder(fail_at=2)

    async def main():
        with pytest.raises(RuntimeError, match="sequence broke"):
            await texts(engine, decoder, [5, 5])
        return await engine.call(lambda: "still serving")

    assert run(main()) == "still serving" and not len(decoder)


def test_a_prompt_that_cannot_be_inserted_takes_the_others_out(engine):
    decoder = FakeDecoder()

    async def main():
        with pytest.raises(ValueError, match="a bad prompt"):
            await texts(engine, decoder, [5, -1])
        return await texts(engine, decoder, [2])

    assert run(main()) == [["1", "2"]]


def test_leaving_a_generation_early_cancels_its_sequences(engine):
    decoder = FakeDecoder()

    async def main():
        async for _, delta in engine.generate(decoder, lambda: [1000], GenParams()):
            if delta.text == "3":
                break
        await asyncio.sleep(0.2)

    run(main())
    assert engine.running == 0 and not len(decoder) and max(decoder.sizes) == 1
