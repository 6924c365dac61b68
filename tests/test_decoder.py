"""The decoder's bookkeeping on a scripted model (tests/support/fakes.py): ends, cancellation, failures, stages."""

from __future__ import annotations

import pytest
from support.fakes import NUMBERS, FakeChatRunner

from gemmacli.errors import ContextLengthError, InvalidParamError
from gemmacli.types import GenParams

GREEDY = GenParams(temperature=0, max_tokens=6)


@pytest.fixture
def runner():
    return FakeChatRunner(context_length=32)


def run(decoder) -> list:
    out = []
    while len(decoder):
        out += decoder.step()
    return out


def text(deltas) -> str:
    return "".join(d.text for d in deltas)


def test_text_held_for_a_stop_string_is_released_by_an_end_of_sequence(runner):
    runner.decoder.eos_ids = frozenset({NUMBERS + 6})  # " 6" ends the sequence
    deltas = list(runner.stream_text("one two three", GenParams(temperature=0, max_tokens=10, stop=(" 5 9",))))
    assert text(deltas) == " 3 4 5" and deltas[-1].finish_reason == "stop"  # " 5" was held, then released


def test_a_matched_stop_string_drops_the_rest(runner):
    deltas = list(runner.stream_text("one two three", GenParams(temperature=0, max_tokens=10, stop=(" 5",))))
    assert text(deltas) == " 3 4" and deltas[-1].finish_reason == "stop"


def test_insert_checks_before_anything_is_queued(runner):
    decoder = runner.decoder
    with pytest.raises(ContextLengthError):
        decoder.insert(runner.encode_text("one two"), GenParams(max_tokens=40))
    with pytest.raises(InvalidParamError) as err:
        decoder.insert(runner.encode_text("one two"), GenParams(top_k=-2))
    assert err.value.param == "top_k" and not len(decoder)


def test_a_default_max_tokens_is_clamped_to_the_room_left(runner):
    seq = runner.decoder.insert(runner.encode_text("one two"), GenParams(temperature=0))  # global default: 512
    assert seq.max_new_tokens == 32 - 3
    runner.decoder.cancel(seq)
    run(runner.decoder)


def test_each_sequence_ends_once_with_its_usage(runner):
    decoder = runner.decoder
    a = decoder.insert(runner.encode_text("one"), GREEDY)
    b = decoder.insert(runner.encode_text("bye"), GREEDY)
    steps = run(decoder)
    finals = [(seq, d.finish_reason) for seq, deltas in steps for d in deltas if d.finish_reason]
    assert finals == [(b, "stop"), (a, "length")]
    assert a.tokens == [NUMBERS + k for k in range(1, 7)] and a.finish_reason == "length"
    usage = next(d.usage for seq, deltas in steps for d in deltas if seq is a and d.usage)
    assert (usage.prompt_tokens, usage.completion_tokens) == (2, 6)


def test_cancel_ends_a_queued_or_running_sequence_at_once(runner):
    decoder = runner.decoder
    queued = decoder.insert(runner.encode_text("one"), GREEDY)
    decoder.cancel(queued)
    assert queued.done and decoder.idle and len(decoder) == 1  # its end is reported at the next step
    ((seq, deltas),) = decoder.step()
    assert seq is queued and [d.finish_reason for d in deltas] == ["cancelled"] and not len(decoder)
    running = decoder.insert(runner.encode_text("one"), GREEDY)
    decoder.step()
    decoder.cancel(running)
    decoder.cancel(running)  # twice is once
    assert [d.finish_reason for _, deltas in decoder.step() for d in deltas] == ["cancelled"]


def test_a_cancelled_check_is_polled_every_step(runner):
    decoder, flag = runner.decoder, [False]
    seq = decoder.insert(runner.encode_text("one"), GREEDY, cancelled=lambda: flag[0])
    decoder.step()
    flag[0] = True
    ((stepped, deltas),) = decoder.step()
    assert stepped is seq and deltas[-1].finish_reason == "cancelled" and len(seq.tokens) == 2  # prefill + a step


def test_a_failing_sequence_does_not_stop_the_others(runner):
    decoder = runner.decoder
    good = decoder.insert(runner.encode_text("one"), GREEDY)
    bad = decoder.insert(runner.encode_text("explode"), GREEDY)
    run(decoder)
    assert isinstance(bad.error, RuntimeError) and bad.done and len(bad.tokens) == 2
    assert good.finish_reason == "length" and len(good.tokens) == 6


def test_stream_refuses_a_decoder_that_others_use(runner):
    runner.decoder.insert(runner.encode_text("one"), GREEDY)
    with pytest.raises(Exception, match="busy"):
        runner.complete_text("two", GREEDY)


def test_closing_a_stream_early_takes_its_sequence_out(runner):
    stream = runner.stream_text("one", GenParams(temperature=0, max_tokens=20))
    next(stream)
    stream.close()
    assert not len(runner.decoder)
