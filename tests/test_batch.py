"""Iteration-level batching: a greedy sequence decodes the same inside a changing batch as alone.

In float32 on the real Gemma 3 270M, whose layers alternate sliding-window (512) and full attention,
with prompts of different lengths (one longer than the window) joining and leaving mid-flight, through
the very decoder the CLI, the server and the benchmark drive.
"""

from __future__ import annotations

import pytest
import torch

from gemmacli.device import Placement
from gemmacli.types import GenParams

pytestmark = pytest.mark.slow
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

    runner = ChatRunner.load(gemma_dir, Placement("cpu", "float32"), name="gemma-3-270m")
    runner.decoder.eos_ids = frozenset()  # no EOS: every sequence runs its full length, every step compared
    return runner


def greedy(tokens: int) -> GenParams:
    return GenParams(temperature=0.0, max_tokens=tokens)


def alone(runner, prompt: str, tokens: int = NEW_TOKENS) -> list[int]:
    ids = runner.tokenizer(prompt, return_tensors="pt")
    out = runner.model.generate(**ids, max_new_tokens=tokens, do_sample=False)
    return out[0, ids["input_ids"].shape[1] :].tolist()


def test_sequences_joining_and_leaving_decode_as_if_alone(fp32_runner):
    runner, decoder = fp32_runner, fp32_runner.decoder
    expected = [alone(runner, p) for p in PROMPTS]
    assert len(runner.tokenizer(PROMPTS[3])["input_ids"]) > 512  # the sliding window is really crossed

    seqs, sizes = [], []
    join_at = {0: [0], 3: [1, 2], 5: [3], 9: [4]}  # step -> prompts that join before it
    for step in range(80):
        for i in join_at.get(step, []):
            seqs.append(decoder.insert(runner.encode_text(PROMPTS[i]), greedy(NEW_TOKENS)))
        decoder.step()
        sizes.append(len(decoder.running))
        if not len(decoder) and step > max(join_at):
            break
    assert [seq.tokens for seq in seqs] == expected
    assert max(sizes) >= 3  # several sequences really decoded together
    assert all(seq.finish_reason == "length" for seq in seqs)


def test_a_cancelled_sequence_leaves_at_the_next_step(fp32_runner):
    runner = fp32_runner
    decoder = fp32_runner.decoder
    flag = {"stop": False}
    a = decoder.insert(runner.encode_text(PROMPTS[0]), greedy(NEW_TOKENS))
    b = decoder.insert(runner.encode_text(PROMPTS[1]), greedy(NEW_TOKENS), cancelled=lambda: flag["stop"])
    decoder.step()  # both prefilled, then one decode step for both
    flag["stop"] = True
    stepped = decoder.step()
    cancelled, deltas = stepped[0]
    assert cancelled is b and [d.finish_reason for d in deltas] == ["cancelled"]
    assert [seq for seq, _ in stepped] == [b, a] and decoder.running == [a] and len(b.tokens) == 2
    while len(decoder):
        decoder.step()
    assert a.tokens == alone(runner, PROMPTS[0])


def test_cancel_ends_a_sequence_at_once(fp32_runner):
    runner, decoder = fp32_runner, fp32_runner.decoder
    a = decoder.insert(runner.encode_text(PROMPTS[0]), greedy(NEW_TOKENS))
    b = decoder.insert(runner.encode_text(PROMPTS[2]), greedy(NEW_TOKENS))
    decoder.step()
    decoder.cancel(a)
    assert a.done and decoder.running == [b] and len(decoder) == 2  # a's end is reported at the next step
    (first, deltas), *rest = decoder.step()
    assert first is a and deltas[-1].finish_reason == "cancelled" and [s for s, _ in rest] == [b]
    while len(decoder):
        decoder.step()
    assert b.tokens == alone(runner, PROMPTS[2])


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
    decoder = runner.decoder
    tokens = 32
    expected = []
    decoder.eos_ids = frozenset()
    for prompt in BF16_PROMPTS:
        ids = runner.tokenizer(prompt, return_tensors="pt")
        out = runner.model.generate(
            **ids, max_new_tokens=tokens, do_sample=False, output_scores=True, return_dict_in_generate=True
        )
        margins = [float(top[0] - top[1]) for top in (s[0].float().topk(2).values for s in out.scores)]
        assert min(margins) > 0.25, "the reference itself is a near-tie: pick another prompt"
        expected.append(out.sequences[0, ids["input_ids"].shape[1] :].tolist())
    seqs = []
    for i, prompt in enumerate(BF16_PROMPTS):
        seqs.append(decoder.insert(runner.encode_text(prompt), greedy(tokens)))
        if i == 0:
            decoder.step()  # the others join a decoder already under way
            decoder.step()
    while len(decoder):
        decoder.step()
    assert [seq.tokens for seq in seqs] == expected


def test_n_sequences_of_one_prompt_share_its_prefill_and_decode_as_alone(fp32_runner):
    runner, decoder = fp32_runner, fp32_runner.decoder
    under_way = decoder.insert(runner.encode_text(PROMPTS[0]), greedy(NEW_TOKENS))
    decoder.step()  # the n rows join a batch already under way
    forked = decoder.fork(runner.encode_text(PROMPTS[3]), greedy(NEW_TOKENS), 3)  # past the sliding window
    assert len(decoder.step()) == 3 + 1 + 3  # three first tokens from one prefill, then a step for all four rows
    while len(decoder):
        decoder.step()
    expected = alone(runner, PROMPTS[3])
    assert [seq.tokens for seq in forked] == [expected] * 3
    assert under_way.tokens == alone(runner, PROMPTS[0])


def test_logprobs_are_the_models_log_softmax_from_the_same_pass(fp32_runner):
    """Each recorded logprob is the log-softmax of the raw logits at its position (checked against one forward
    pass over prompt and output), and its top entries are that position's likeliest tokens."""
    runner = fp32_runner
    prompt = runner.encode_text(PROMPTS[1])
    params = GenParams(temperature=0.8, seed=3, top_k=40, frequency_penalty=0.5, max_tokens=6, logprobs=3)
    result = runner.complete_text(PROMPTS[1], params)
    ids = torch.cat([prompt.input_ids, torch.tensor([result.token_ids])], dim=1)  # (1, T + 6)
    with torch.inference_mode():
        expected = torch.log_softmax(runner.model(ids).logits[0, prompt.length - 1 : -1].float(), dim=-1)  # (6, V)
    assert [e.token_id for e in result.logprobs] == list(result.token_ids) and len(result.logprobs) == 6
    for row, entry in zip(expected, result.logprobs, strict=True):
        assert entry.logprob == pytest.approx(float(row[entry.token_id]), abs=1e-3)
        assert [t.token_id for t in entry.top] == row.topk(3).indices.tolist()
        assert entry.text == runner.tokenizer.decode([entry.token_id]) and entry.bytes == entry.text.encode()
