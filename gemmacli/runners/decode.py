"""The decode loop: one prefill, then one forward pass per new token, over a KV cache.

Written out instead of calling `model.generate` so that every step is visible to the caller:
tokens stream as they are made, and a cancelled request stops at the next step.
Prompts in a batch are left-padded; positions come from the attention mask so padding is invisible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from gemmacli.runners.sampling import Sampler


@torch.inference_mode()
def decode(
    model,
    input_ids: torch.Tensor,  # (B, T), left-padded
    attention_mask: torch.Tensor,  # (B, T), 0 on padding
    samplers: Sequence[Sampler],
    max_new_tokens: int,
    eos_ids: set[int],
    extra_inputs: dict | None = None,  # pixel_values, token_type_ids... for the prefill only
    cancelled: Callable[[], bool] = lambda: False,
) -> Iterator[list[int | None]]:
    """Yield one list per step: the new token of each sequence, or None once that sequence has ended."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,  # the 262k-vocabulary projection only where we sample
        **(extra_inputs or {}),
    )
    next_position = positions[:, -1:] + 1  # (B, 1)
    done = [False] * len(samplers)
    for step_index in range(max_new_tokens):
        if cancelled():
            return
        logits = out.logits[:, -1, :].float()  # (B, V)
        step: list[int | None] = []
        for i, sampler in enumerate(samplers):
            if done[i]:
                step.append(None)
                continue
            token = sampler(logits[i])
            sampler.observe(token)
            done[i] = token in eos_ids
            step.append(token)
        yield step
        if all(done) or step_index == max_new_tokens - 1:  # no forward pass whose logits nobody reads
            return
        tokens = torch.tensor([[t if t is not None else 0] for t in step], device=input_ids.device)  # (B, 1)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(step), 1))], dim=-1)
        out = model(
            input_ids=tokens,
            attention_mask=attention_mask,
            position_ids=next_position,
            past_key_values=cache,
            use_cache=True,
        )
        next_position = next_position + 1
