"""Incremental detokenizing, stop strings and sampling, without a model."""

from __future__ import annotations

import pytest
import torch

from gemmacli.errors import InvalidParamError
from gemmacli.runners.sampling import Sampler, SamplingConfig
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


@pytest.mark.parametrize(
    "kw",
    [{"temperature": 0.0}, {"top_k": 1}, {"top_p": 0.01}, {"min_p": 1.0}, {"temperature": 1e-300},
     {"temperature": 1e-6, "top_p": 0.5}, {"top_p": 5e-324, "min_p": 0.49}],  # tiny values found by fuzzing
)  # fmt: skip
def test_settings_that_leave_one_candidate_pick_the_argmax(kw):
    sampler = Sampler(config(seed=0, **kw), torch.tensor([0]), 5, torch.device("cpu"))
    assert {sampler(LOGITS) for _ in range(20)} == {1}


def test_top_k_keeps_only_the_k_likeliest():
    sampler = Sampler(config(top_k=2, seed=0, temperature=5.0), torch.tensor([0]), 5, torch.device("cpu"))
    assert {sampler(LOGITS) for _ in range(200)} == {1, 2}


def test_seed_makes_sampling_repeatable():
    draws = [[Sampler(config(seed=3), torch.tensor([0]), 5, torch.device("cpu"))(LOGITS) for _ in range(1)]
             for _ in range(5)]  # fmt: skip
    assert len({tuple(d) for d in draws}) == 1


def test_frequency_penalty_lowers_tokens_already_generated():
    sampler = Sampler(config(temperature=0.0, frequency_penalty=2.0), torch.tensor([0]), 5, torch.device("cpu"))
    assert sampler(LOGITS) == 1
    sampler.observe(1)
    assert sampler(LOGITS) == 2  # 3.0 - 2.0 = 1.0 < 2.0


def test_repetition_penalty_covers_the_prompt():
    sampler = Sampler(config(temperature=0.0, repetition_penalty=2.0), torch.tensor([1]), 5, torch.device("cpu"))
    assert sampler(LOGITS) == 2  # 3.0 / 2 = 1.5 < 2.0


@pytest.mark.parametrize("kw,param", [({"temperature": -0.1}, "temperature"), ({"min_p": 2.0}, "min_p"),
                                      ({"presence_penalty": 3.0}, "presence_penalty")])  # fmt: skip
def test_bad_sampling_values_name_the_parameter(kw, param):
    with pytest.raises(InvalidParamError) as err:
        config(**kw)
    assert err.value.param == param


def test_request_overrides_model_which_overrides_global():
    model = GenParams(temperature=1.0, top_k=64)
    merged = GenParams(temperature=0.2).with_defaults(model, GLOBAL_GEN_DEFAULTS)
    assert (merged.temperature, merged.top_k, merged.top_p, merged.max_tokens) == (0.2, 64, 1.0, 512)
