"""The appending KV cache holds exactly what transformers' concatenating cache holds, without copying per step."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from gemmacli.runners.kv_cache import ROOM, AppendingLayer, AppendingSlidingLayer, append


def _states(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 1, count, 8, generator=g), torch.randn(2, 1, count, 8, generator=g)


def _feed(layer, counts):
    """Prefill then decode steps; every step's returned (keys, values) and the stored ones after it."""
    out = []
    for i, count in enumerate(counts):
        keys, values = layer.update(*_states(count, seed=i))
        out.append((keys.clone(), values.clone(), layer.keys.clone(), layer.values.clone()))
    return out


def test_full_layer_returns_and_stores_what_concatenation_does():
    counts = [5] + [1] * (2 * ROOM + 3)  # a prefill, then past two reallocations
    for ours, theirs in zip(_feed(AppendingLayer(), counts), _feed(DynamicLayer(), counts), strict=True):
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_sliding_layer_matches_past_its_window():
    counts = [6] + [1] * 40  # window 8: the cache fills after two steps, then slides for the rest
    ours = _feed(AppendingSlidingLayer(sliding_window=8), counts)
    theirs = _feed(DynamicSlidingWindowLayer(sliding_window=8), counts)
    for a_step, b_step in zip(ours, theirs, strict=True):
        for a, b in zip(a_step, b_step, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_steps_write_into_the_same_buffer_until_it_is_full():
    keys, new = torch.randn(2, 1, 4, 8), torch.randn(2, 1, 1, 8)
    stored, buffer = append(keys, new, None)
    first = buffer
    for _ in range(ROOM):
        stored, buffer = append(stored, new, buffer)
    assert buffer is first and stored.shape[-2] == 5 + ROOM
    stored, buffer = append(stored, new, buffer)  # full: a fresh buffer with fresh room
    assert buffer is not first and buffer.shape[-2] == 5 + ROOM + 1 + ROOM


def test_a_replaced_tensor_is_copied_into_a_new_buffer():
    stored, buffer = append(torch.randn(2, 1, 4, 8), torch.randn(2, 1, 1, 8), None)
    kept = stored[torch.tensor([1])]  # a sequence left the batch: the batch code selects rows
    grown, new_buffer = append(kept, torch.ones(1, 1, 1, 8), buffer)
    assert new_buffer is not buffer and grown.shape == (1, 1, 6, 8)
    torch.testing.assert_close(grown[:, :, :5], kept)
    assert stored.shape == (2, 1, 5, 8)  # the old view is untouched
