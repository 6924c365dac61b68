"""A KV cache that appends in place: each layer's keys sit at the front of a buffer with room to grow.

transformers' DynamicCache concatenates every layer's keys and values at every decode step, copying
the whole cache each time (10 % of a batched decode step on CPU). Here a step writes its new
positions into the spare room and the layer's `keys` becomes a longer view of the same buffer. The
buffer is reallocated, with fresh room, only when it is full or when the tensor was replaced (a
sequence joined or left the batch), so the batch code keeps working on plain tensors.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

ROOM = 32  # spare positions per reallocation: one copy every 32 decode steps instead of every step


class AppendingLayer(DynamicLayer):
    """A full-attention layer (keeps every position)."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        self.keys, self.values = _append_states(self, key_states, value_states)
        return self.keys, self.values


class AppendingSlidingLayer(DynamicSlidingWindowLayer):
    """A sliding-window layer: attends over everything it holds plus the new positions, then keeps `window - 1`."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if self.record_past:  # speculative decoding's bookkeeping: not used here, keep transformers' behaviour
            return super().update(key_states, value_states, *args, **kwargs)
        keys, values = _append_states(self, key_states, value_states)
        self.cumulative_length += key_states.shape[-2]
        self.keys, self.values = keys[:, :, -self.sliding_window + 1 :, :], values[:, :, -self.sliding_window + 1 :, :]
        return keys, values


def appending_cache(config) -> DynamicCache:
    """A DynamicCache for `config` whose full and sliding layers append in place; other kinds stay as they are."""
    cache = DynamicCache(config=config)
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            cache.layers[i] = AppendingLayer()
        elif type(layer) is DynamicSlidingWindowLayer:
            cache.layers[i] = AppendingSlidingLayer(sliding_window=layer.sliding_window)
    return cache


def _append_states(layer: DynamicLayer, key_states: torch.Tensor, value_states: torch.Tensor):
    """The layer's keys and values followed by the new states; the layer keeps the buffers holding them."""
    if not layer.is_initialized:
        layer.lazy_initialization(key_states, value_states)
        layer.backing = (None, None)
    (keys, key_buffer), (values, value_buffer) = (
        append(layer.keys, key_states, layer.backing[0]),
        append(layer.values, value_states, layer.backing[1]),
    )
    layer.backing = (key_buffer, value_buffer)
    return keys, values


def append(stored: torch.Tensor, new: torch.Tensor, buffer: torch.Tensor | None):
    """`stored` followed by `new` along positions (dim -2), and the buffer that now holds both."""
    held = stored.shape[-2] if stored.dim() == 4 else 0  # a fresh layer stores an empty 1-d tensor
    count = new.shape[-2]
    offset = _offset_in(stored, buffer)
    if offset is None or offset + held + count > buffer.shape[-2]:
        buffer = new.new_empty((*new.shape[:2], held + count + ROOM, new.shape[-1]))
        if held:
            buffer[:, :, :held] = stored
        offset = 0
    buffer[:, :, offset + held : offset + held + count] = new
    return buffer[:, :, offset : offset + held + count], buffer


def _offset_in(stored: torch.Tensor, buffer: torch.Tensor | None) -> int | None:
    """Where `stored` starts inside `buffer`, in positions; None unless it is a same-shaped view of it."""
    if (
        buffer is None
        or stored.dim() != 4
        or stored.shape[:2] != buffer.shape[:2]
        or stored.stride() != buffer.stride()
    ):
        return None
    if (
        stored.shape[-1] != buffer.shape[-1]
        or stored.untyped_storage().data_ptr() != buffer.untyped_storage().data_ptr()
    ):
        return None
    row = buffer.stride(-2)
    delta = stored.storage_offset() - buffer.storage_offset()
    return delta // row if delta >= 0 and delta % row == 0 else None
