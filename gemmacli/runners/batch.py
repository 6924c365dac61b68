"""Iteration-level batching: sequences join a running batch after their prefill and leave when done.

The batch keeps one KV cache for all its sequences, left-padded to a common length. Positions come
from each sequence's own count, and the attention mask hides the padding, so a sequence decodes
exactly as it would alone. Joining pads the shorter cache on the left; leaving drops the rows and
then any leading columns that only padding still uses (the way TGI's Python server merged and
filtered batches). Sliding-window layers keep only their last `window - 1` positions; every padding
step below keeps them aligned with the full-attention layers' view of the same buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from gemmacli.runners.kv_cache import appending_cache
from gemmacli.runners.sampling import Sampler


@dataclass(eq=False)
class Member:
    """One sequence of the batch: how it samples, when it stops, and the token it feeds next."""

    sampler: Sampler
    max_new_tokens: int
    eos_ids: set[int]
    cancelled: Callable[[], bool] = lambda: False
    tokens: list[int] = field(default_factory=list)  # generated so far
    done: bool = False

    def accept(self, token: int) -> None:
        self.sampler.observe(token)
        self.tokens.append(token)
        self.done = token in self.eos_ids or len(self.tokens) >= self.max_new_tokens


class DecodeBatch:
    """Sequences decoding together. Not thread-safe: the inference thread alone drives it."""

    def __init__(self, model):
        self.model = model
        self.members: list[Member] = []
        self.cache = None  # one KV cache (appending_cache) over every member, left-padded
        self.mask: torch.Tensor | None = None  # (B, T): 1 on real positions, 0 on padding
        self.next_position: torch.Tensor | None = None  # (B, 1)

    def __len__(self) -> int:
        return len(self.members)

    @torch.inference_mode()
    def prefill(self, member: Member, input_ids: torch.Tensor, extra_inputs: dict | None = None) -> int:
        """Run a new sequence's prompt alone (input_ids (1, T)), sample its first token, and join the batch."""
        cache = appending_cache(self.model.config)
        length = input_ids.shape[1]
        out = self.model(
            input_ids=input_ids,
            position_ids=torch.arange(length, device=input_ids.device).unsqueeze(0),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,  # the 262k-vocabulary projection only where we sample
            **(extra_inputs or {}),
        )
        token = member.sampler(out.logits[0, -1].float())
        member.accept(token)
        if not member.done:
            mask = torch.ones((1, length), dtype=torch.long, device=input_ids.device)
            self._join(member, cache, mask, torch.tensor([[length]], device=input_ids.device))
        return token

    @torch.inference_mode()
    def step(self) -> list[tuple[Member, int]]:
        """One forward pass for every member; returns (member, new token) and drops members that ended."""
        self._leave([m for m in self.members if m.done or m.cancelled()])
        if not self.members:
            return []
        device = self.mask.device
        tokens = torch.tensor([[m.tokens[-1]] for m in self.members], device=device)  # (B, 1)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.members), 1))], dim=1)
        out = self.model(
            input_ids=tokens,
            attention_mask=self.mask,
            position_ids=self.next_position,
            past_key_values=self.cache,
            use_cache=True,
        )
        self.next_position = self.next_position + 1
        logits = out.logits[:, -1, :].float()  # (B, V)
        best = _argmax_rows(logits, self.members)
        produced = []
        for row, member in enumerate(self.members):
            token = best[row] if member.sampler.config.plain_greedy else member.sampler(logits[row])
            member.accept(token)
            produced.append((member, token))
        self._leave([m for m in self.members if m.done])
        return produced

    # -- joining and leaving

    def _join(self, member: Member, cache, mask: torch.Tensor, next_position: torch.Tensor) -> None:
        if not self.members:
            self.members, self.cache, self.mask, self.next_position = [member], cache, mask, next_position
            return
        length = max(self.mask.shape[1], mask.shape[1])
        _pad_cache(self.cache, length)
        _pad_cache(cache, length)
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([mine.keys, theirs.keys], dim=0)
            mine.values = torch.cat([mine.values, theirs.values], dim=0)
        self.mask = torch.cat([_pad_left(self.mask, length), _pad_left(mask, length)], dim=0)
        self.next_position = torch.cat([self.next_position, next_position], dim=0)
        self.members.append(member)

    def _leave(self, leaving: Sequence[Member]) -> None:
        if not leaving:
            return
        keep = [i for i, m in enumerate(self.members) if m not in leaving]
        self.members = [self.members[i] for i in keep]
        if not keep:
            self.cache = self.mask = self.next_position = None
            return
        index = torch.tensor(keep, device=self.mask.device)
        for layer in self.cache.layers:
            layer.batch_select_indices(index)
        self.mask, self.next_position = self.mask[index], self.next_position[index]
        unused = int((self.mask.sum(dim=0) == 0).long().cumprod(dim=0).sum())  # leading all-padding columns
        if unused:
            _trim_cache(self.cache, self.mask.shape[1] - unused)
            self.mask = self.mask[:, unused:]


def _argmax_rows(logits: torch.Tensor, members: Sequence[Member]) -> list[int]:
    """Every row's argmax in one call (a 262k-wide argmax per row costs twice as much) when any member is greedy."""
    if not any(m.sampler.config.plain_greedy for m in members):
        return []
    return logits.argmax(dim=-1).tolist()


def _pad_left(mask: torch.Tensor, length: int) -> torch.Tensor:
    return torch.nn.functional.pad(mask, (length - mask.shape[1], 0))


def _pad_cache(cache, length: int) -> None:
    """Left-pad every layer so the buffer covers `length` positions (sliding layers: their window of it)."""
    for layer in cache.layers:
        stored = layer.keys.shape[-2]
        target = min(length, layer.sliding_window - 1) if layer.is_sliding else length
        if target > stored:
            layer.keys = torch.nn.functional.pad(layer.keys, (0, 0, target - stored, 0))  # (B, H, T, D)
            layer.values = torch.nn.functional.pad(layer.values, (0, 0, target - stored, 0))
        if layer.is_sliding:
            layer.cumulative_length = length


def _trim_cache(cache, length: int) -> None:
    """Keep only the last `length` positions of the buffer (the columns dropped are padding for every row)."""
    for layer in cache.layers:
        target = min(length, layer.sliding_window - 1) if layer.is_sliding else length
        if layer.keys.shape[-2] > target:
            layer.keys = layer.keys[..., -target:, :]
            layer.values = layer.values[..., -target:, :]
        if layer.is_sliding:
            layer.cumulative_length = length
