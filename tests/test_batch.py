"""Iteration-level batching: a greedy sequence decodes the same inside a changing batch as alone.

In float32 on the real Gemma 3 270M, whose layers alternate sliding-window (512) and full attention,
with prompts of different lengths (one longer than the window) joining and leaving mid-flight.
"""

from __future__ import annotations

import pytest
import torch

from gemmacli.device import Placement
from gemmacli.runners.batch import DecodeBatch, Member
from gemmacli.runners.sampling import Sampler, SamplingConfig
from gemmacli.types import GLOBAL_GEN_DEFAULTS, GenParams

pytestmark = pytest.mark.slow
GREEDY = SamplingConfig.from_params(GenParams(temperature=0.0).with_defaults(GLOBAL_GEN_DEFAULTS))
PROMPTS = [
    "Monday, Tuesday, Wednesday,",
    "The capital of France is",
    "One, two, three, four, five,",
    " ".join(["The old lighthouse keeper climbed the stairs again."] * 60) + " At the top he saw",  # > 512 tokens
    "Water boils at a temperature of",
]
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def fp32_runner(gemma_dir):
    from gemmacli.runners.chat import ChatRunner

    return ChatRunner.load(gemma_dir, Placement("cpu", "float32"), name="gemma-3-270m")


def alone(runner, prompt: str) -> list[int]:
    ids = runner.tokenizer(prompt, return_tensors="pt")
    out = runner.model.generate(**ids, max_new_tokens=NEW_TOKENS, do_sample=False)
    return out[0, ids["input_ids"].shape[1] :].tolist()


def member(runner, ids: torch.Tensor) -> Member:
    vocab = runner.model.config.get_text_config().vocab_size
    # No EOS: every sequence runs its full length, so the comparison covers every step.
    return Member(Sampler(GREEDY, ids[0], vocab, torch.device("cpu")), NEW_TOKENS, eos_ids=set())


def test_sequences_joining_and_leaving_decode_as_if_alone(fp32_runner):
    runner = fp32_runner
    expected = [alone(runner, p) for p in PROMPTS]
    assert len(runner.tokenizer(PROMPTS[3])["input_ids"]) > 512  # the sliding window is really crossed

    batch, members = DecodeBatch(runner.model), []
    join_at = {0: [0], 3: [1, 2], 5: [3], 9: [4]}  # step -> prompts that join before it
    for step in range(40):
        for i in join_at.get(step, []):
            ids = runner.tokenizer(PROMPTS[i], return_tensors="pt")["input_ids"]
            members.append(member(runner, ids))
            batch.prefill(members[-1], ids)
        batch.step()
        if not batch and step > max(join_at):
            break
    assert [m.tokens for m in members] == expected


def test_a_cancelled_member_leaves_at_the_next_step(fp32_runner):
    runner = fp32_runner
    batch, flag = DecodeBatch(runner.model), {"stop": False}
    first, second = (runner.tokenizer(p, return_tensors="pt")["input_ids"] for p in PROMPTS[:2])
    a, b = member(runner, first), member(runner, second)
    b.cancelled = lambda: flag["stop"]
    batch.prefill(a, first)
    batch.prefill(b, second)
    batch.step()
    flag["stop"] = True
    produced = batch.step()
    assert [m for m, _ in produced] == [a] and len(batch) == 1 and len(b.tokens) == 2
    while batch:
        batch.step()
    assert a.tokens == alone(runner, PROMPTS[0])


# Prompts whose greedy choices win by several bf16 steps (measured): where the top two logits tie within
# one bf16 ulp, batch and alone may legitimately pick differently.
BF16_PROMPTS = [
    "One, two, three, four, five,",
    " ".join(["Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday."] * 40) + " Monday,",  # 563 tokens
]


def test_bf16_batch_matches_alone_over_the_first_32_tokens(gemma_dir):
    """bf16 rounds differently in a batch's matmuls than alone, so only the start of each output must agree."""
    from gemmacli.runners.chat import ChatRunner

    runner = ChatRunner.load(gemma_dir, Placement("cpu", "bfloat16"), name="gemma-3-270m")
    tokens, expected = 32, []
    for prompt in BF16_PROMPTS:
        ids = runner.tokenizer(prompt, return_tensors="pt")
        out = runner.model.generate(**ids, max_new_tokens=tokens, do_sample=False, output_scores=True,
                                    return_dict_in_generate=True)  # fmt: skip
        margins = [float(top[0] - top[1]) for top in (s[0].float().topk(2).values for s in out.scores)]
        assert min(margins) > 0.25, "the reference itself is a near-tie: pick another prompt"
        expected.append(out.sequences[0, ids["input_ids"].shape[1] :].tolist())
    batch, members = DecodeBatch(runner.model), []
    for i, prompt in enumerate(BF16_PROMPTS):
        ids = runner.tokenizer(prompt, return_tensors="pt")["input_ids"]
        vocab = runner.model.config.get_text_config().vocab_size
        members.append(Member(Sampler(GREEDY, ids[0], vocab, torch.device("cpu")), tokens, eos_ids=set()))
        batch.prefill(members[-1], ids)
        if i == 0:
            batch.step()  # the others join a batch already under way
    while batch:
        batch.step()
    assert [m.tokens for m in members] == expected
