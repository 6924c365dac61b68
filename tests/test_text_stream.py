"""Incremental detokenizing, stop strings and sampling, without a model."""

from __future__ import annotations

import pytest
import torch

from gemmacli.errors import InvalidParamError
from gemmacli.runners.sampling import Sampler, SamplingConfig
from gemmacli.runners.stages import LogitBias, Penalties
from gemmacli.runners.text_stream import StopMatcher
from gemmacli.types import GLOBAL_GEN_DEFAULTS, GenParams


def feed_all(matcher: StopMatcher, pieces: list[str]) -> str:
    out = []
    for piece in pieces:
        out.append(matcher.feed(piece))
        if matcher.stopped:
            return "".join(out)
    return "".join(out) + matcher.flush()


@pytest.mark.parametrize(
    "pieces,stops,expected,stopped",
    [
        (["Hello", " wor", "ld"], ["world"], "Hello ", True),
        (["a", "b", "c"], ["x"], "abc", False),
        (["ab", "c"], ["bc"], "a", True),
        (["Fri", "day, Sat", "urday"], ["Sat"], "Friday, ", True),
        (["wo", "rk"], ["world"], "work", False),  # a held prefix that never completes is released
        (["abc"], [], "abc", False),
        (["xyz", "STOP", "more"], ["STOP", "yz"], "x", True),  # the earliest stop wins
    ],
)
def test_stop_matcher(pieces, stops, expected, stopped):
    matcher = StopMatcher(stops)
    assert feed_all(matcher, pieces) == expected
    assert matcher.stopped is stopped


def test_stop_matcher_holds_back_only_a_possible_prefix():
    matcher = StopMatcher(["</end>"])
    assert matcher.feed("text </e") == "text "
    assert matcher.feed("xtra") == "</extra"


def config(**kw) -> SamplingConfig:
    return SamplingConfig.from_params(GenParams(**kw).with_defaults(GLOBAL_GEN_DEFAULTS))


LOGITS = torch.tensor([1.0, 3.0, 2.0, 0.5, -1.0])
CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "kw",
    [
        {"temperature": 0.0},
        {"top_k": 1},
        {"top_p": 0.01},
        {"min_p": 1.0},
        {"temperature": 1e-300},
        {"temperature": 1e-6, "top_p": 0.5},
        {"top_p": 5e-324, "min_p": 0.49},
    ],  # tiny values found by fuzzing
)
def test_settings_that_leave_one_candidate_pick_the_argmax(kw):
    sampler = Sampler(config(seed=0, **kw), CPU)
    assert {sampler(LOGITS) for _ in range(20)} == {1}


def test_top_k_keeps_only_the_k_likeliest():
    sampler = Sampler(config(top_k=2, seed=0, temperature=5.0), CPU)
    assert {sampler(LOGITS) for _ in range(200)} == {1, 2}


def test_seed_makes_sampling_repeatable():
    draws = [Sampler(config(seed=3), CPU)(LOGITS) for _ in range(5)]
    assert len(set(draws)) == 1


def test_frequency_penalty_lowers_tokens_already_generated():
    penalties = Penalties(config(frequency_penalty=2.0), torch.tensor([0]), 5, CPU)
    assert int(penalties(LOGITS).argmax()) == 1
    penalties.accept(1)
    assert int(penalties(LOGITS).argmax()) == 2  # 3.0 - 2.0 = 1.0 < 2.0


def test_repetition_penalty_covers_the_prompt():
    penalties = Penalties(config(repetition_penalty=2.0), torch.tensor([1]), 5, CPU)
    assert int(penalties(LOGITS).argmax()) == 2  # 3.0 / 2 = 1.5 < 2.0


def test_penalties_are_a_stage_only_when_asked_for():
    assert Penalties.build(config(), torch.tensor([1]), 5, CPU) is None
    assert Penalties.build(config(presence_penalty=0.5), torch.tensor([1]), 5, CPU) is not None


def test_logit_bias_adds_to_the_chosen_tokens_only():
    bias = LogitBias.build(((0, 5.0), (1, -100.0)), 5, CPU)
    assert bias(LOGITS).tolist() == [6.0, -97.0, 2.0, 0.5, -1.0]
    assert LogitBias.build((), 5, CPU) is None
    with pytest.raises(InvalidParamError) as err:
        LogitBias.build(((5, 1.0),), 5, CPU)
    assert err.value.param == "logit_bias"


@pytest.mark.parametrize(
    "kw,param",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"min_p": 2.0}, "min_p"),
        ({"presence_penalty": 3.0}, "presence_penalty"),
    ],
)
def test_bad_sampling_values_name_the_parameter(kw, param):
    with pytest.raises(InvalidParamError) as err:
        config(**kw)
    assert err.value.param == param


def test_request_overrides_model_which_overrides_global():
    model = GenParams(temperature=1.0, top_k=64)
    merged = GenParams(temperature=0.2).with_defaults(model, GLOBAL_GEN_DEFAULTS)
    assert (merged.temperature, merged.top_k, merged.top_p, merged.max_tokens) == (0.2, 64, 1.0, 512)
