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


class BatchCache:
    """The KV cache of every running sequence, one row each, left-padded to a common length.

    Positions come from each row's own count and the attention mask hides the padding, so a sequence
    decodes exactly as it would alone. Joining pads the shorter cache on the left; leaving drops rows,
    then any leading columns that only padding still uses (the way TGI's Python server merged and
    filtered batches). Sliding-window layers keep only their last `window - 1` positions; every padding
    step keeps them aligned with the full-attention layers' view of the same buffer.
    """

    def __init__(self):
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # (B, T): 1 on real positions, 0 on padding
        self.next_position: torch.Tensor | None = None  # (B, 1)

    def join(self, cache: DynamicCache, length: int, device: torch.device, copies: int = 1) -> None:
        """Add `copies` rows that all hold `cache`: a prompt of `length` positions, prefilled alone (once for
        the n sequences of one prompt)."""
        if copies > 1:
            for layer in _holding(cache):
                layer.keys = layer.keys.repeat(copies, 1, 1, 1)  # (n, H, T, D)
                layer.values = layer.values.repeat(copies, 1, 1, 1)
        mask = torch.ones((copies, length), dtype=torch.long, device=device)
        position = torch.full((copies, 1), length, device=device)
        if self.cache is None:
            self.cache = cache
            self.mask = mask
            self.next_position = position
            return
        width = max(self.mask.shape[1], length)
        _pad_cache(self.cache, width)
        _pad_cache(cache, width)
        for mine, theirs in zip(_holding(self.cache), _holding(cache), strict=True):
            mine.keys = torch.cat([mine.keys, theirs.keys], dim=0)
            mine.values = torch.cat([mine.values, theirs.values], dim=0)
        self.mask = torch.cat([_pad_left(self.mask, width), _pad_left(mask, width)], dim=0)
        self.next_position = torch.cat([self.next_position, position], dim=0)

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows`, in that order; none left empties the cache."""
        if not rows:
            self.clear()
            return
        index = torch.tensor(rows, device=self.mask.device)
        for layer in self.cache.layers:
            layer.batch_select_indices(index)
        self.mask, self.next_position = self.mask[index], self.next_position[index]
        unused = int((self.mask.sum(dim=0) == 0).long().cumprod(dim=0).sum())  # leading all-padding columns
        if unused:
            _trim_cache(self.cache, self.mask.shape[1] - unused)
            self.mask = self.mask[:, unused:]

    def advance(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask and positions of the next decode step, which writes one more position in every row."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        positions, self.next_position = self.next_position, self.next_position + 1
        return self.mask, positions

    def clear(self) -> None:
        self.cache = self.mask = self.next_position = None


def _pad_left(mask: torch.Tensor, length: int) -> torch.Tensor:
    return torch.nn.functional.pad(mask, (length - mask.shape[1], 0))


def _pad_cache(cache: DynamicCache, length: int) -> None:
    """Left-pad every layer so the buffer covers `length` positions (sliding layers: their window of it)."""
    for layer in _holding(cache):
        stored = layer.keys.shape[-2]
        target = min(length, layer.sliding_window - 1) if layer.is_sliding else length
        if target > stored:
            layer.keys = torch.nn.functional.pad(layer.keys, (0, 0, target - stored, 0))  # (B, H, T, D)
            layer.values = torch.nn.functional.pad(layer.values, (0, 0, target - stored, 0))
        if layer.is_sliding:
            layer.cumulative_length = length


def _trim_cache(cache: DynamicCache, length: int) -> None:
    """Keep only the last `length` positions of the buffer (the columns dropped are padding for every row)."""
    for layer in _holding(cache):
        target = min(length, layer.sliding_window - 1) if layer.is_sliding else length
        if layer.keys.shape[-2] > target:
            layer.keys = layer.keys[..., -target:, :]
            layer.values = layer.values[..., -target:, :]
        if layer.is_sliding:
            layer.cumulative_length = length


def _holding(cache: DynamicCache) -> list:
    """The layers that hold keys and values. A KV-sharing layer (Gemma 3n's and Gemma 4's last ones) has a
    DummyLayer that holds none: it reads the states its source layer computed in the same forward pass."""
    return [layer for layer in cache.layers if getattr(layer, "keys", None) is not None]
