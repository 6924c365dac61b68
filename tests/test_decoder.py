"""The decoder's bookkeeping on a scripted model (tests/support/fakes.py): ends, cancellation, failures, stages."""

from __future__ import annotations

import math

import pytest
from support.fakes import BOS, EOS, NUMBERS, VOCAB, FakeChatRunner

from gemmacli.errors import ContextLengthError, InvalidParamError
from gemmacli.types import GenParams

GREEDY = GenParams(temperature=0, max_tokens=6)
UNIFORM = -math.log(len(VOCAB))  # the fake's prompt positions predict every token alike


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


def test_echo_leads_the_first_delta_with_the_prompt_and_its_logprobs(runner):
    params = GenParams(temperature=0, max_tokens=2, logprobs=1, echo=True)
    first, *rest = runner.stream_text("one two three", params)  # ids: <bos> " 3" " 3" " 5"
    assert first.text == "one two three 3" and first.token_ids == (NUMBERS + 3,) and text(rest) == " 4"
    prompt, generated = first.logprobs[:4], first.logprobs[4:]
    assert [e.token_id for e in prompt] == [BOS, NUMBERS + 3, NUMBERS + 3, NUMBERS + 5]
    assert prompt[0].logprob is None and prompt[0].top == ()  # nothing predicts the first token
    assert all(e.logprob == pytest.approx(UNIFORM) and len(e.top) == 1 for e in prompt[1:])
    assert [e.token_id for e in generated] == [NUMBERS + 3] and generated[0].logprob == pytest.approx(0, abs=1e-3)
    assert rest[-1].usage.prompt_tokens == 4 and rest[-1].usage.completion_tokens == 2


def test_echo_without_logprobs_and_of_token_ids_echoes_their_text(runner):
    prompt = runner.encode_ids([BOS, NUMBERS + 1, NUMBERS + 7])
    deltas = list(runner.generate(prompt, GenParams(max_tokens=1, echo=True)))
    assert text(deltas) == " 1 7 2" and all(d.logprobs == () for d in deltas)  # <bos> is left out of the text


def test_echo_with_max_tokens_0_is_the_prompt_alone(runner):
    (only,) = runner.stream_text("one two", GenParams(max_tokens=0, logprobs=0, echo=True))
    assert only.text == "one two" and only.finish_reason == "length" and only.token_ids == ()
    assert [e.logprob for e in only.logprobs] == [None, pytest.approx(UNIFORM), pytest.approx(UNIFORM)]
    assert (only.usage.prompt_tokens, only.usage.completion_tokens) == (3, 0)
    with pytest.raises(InvalidParamError) as err:
        runner.decoder.insert(runner.encode_text("one two"), GenParams(max_tokens=0))
    assert err.value.param == "max_tokens" and not len(runner.decoder)


def test_echo_keeps_the_end_of_sequence_entry(runner):
    """One entry per generated token, as vLLM gives and lm-eval's parser expects, even when that token ends it."""
    (echoed,) = runner.stream_text("bye", GenParams(max_tokens=3, logprobs=0, echo=True))
    assert echoed.text == "bye" and echoed.finish_reason == "stop"
    assert [e.token_id for e in echoed.logprobs] == [BOS, NUMBERS + 3, EOS]
    (plain,) = runner.stream_text("bye", GenParams(max_tokens=3, logprobs=0))
    assert plain.logprobs == ()


def test_every_choice_of_a_fork_echoes_its_prompt(runner):
    decoder, params = runner.decoder, GenParams(temperature=0, max_tokens=1, logprobs=2, echo=True)
    seqs = decoder.fork(runner.encode_text("one two"), params, 2) + decoder.fork(runner.encode_text("three"), params, 1)
    firsts = {}
    for seq, deltas in run(decoder):
        firsts.setdefault(seq, deltas[0])
    assert [firsts[seq].text for seq in seqs] == ["one two 2", "one two 2", "three 1"]
    assert [len(firsts[seq].logprobs) for seq in seqs] == [4, 4, 3]
