"""Packed CPU linears give F.linear's results at every row count and are what loading a chat model installs."""

from __future__ import annotations

import pytest
import torch

from gemmacli.runners.cpu_linear import PackedLinear, pack_linears, packable


@pytest.mark.parametrize("rows", [1, 2, 8, 13, 32, 300])
@pytest.mark.parametrize("bias", [False, True])
def test_same_results_as_linear_at_every_row_count(rows, bias):
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 5000, bias=bias)
    x = torch.randn(2, rows, 64)
    got = PackedLinear(linear)(x)
    assert got.shape == (2, rows, 5000) and got.is_contiguous()
    torch.testing.assert_close(got, linear(x), rtol=1e-4, atol=1e-4)


def test_bfloat16_stays_bfloat16():
    linear = torch.nn.Linear(32, 48, bias=False).to(torch.bfloat16)
    x = torch.randn(3, 32, dtype=torch.bfloat16)
    got = PackedLinear(linear)(x)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), linear(x).float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("bias", [False, True])
def test_widened_bfloat16_gives_bfloat16_arithmetic(bias):
    """bf16 operands, float32 products and sums, a bf16 result: what a bf16 product computes, at fp32 speed."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 1000, bias=bias).to(torch.bfloat16)
    x = torch.randn(8, 256).to(torch.bfloat16)
    got = PackedLinear(linear, widen=True)(x)
    exact = torch.nn.functional.linear(x.double(), linear.weight.double(), None if not bias else linear.bias.double())
    assert got.dtype == torch.bfloat16 and PackedLinear(linear, widen=True).packed.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact.to(torch.bfloat16).double(), rtol=2**-7, atol=1e-6)


def test_loading_packs_every_linear_and_keeps_the_embeddings(chat_runner):
    model = chat_runner.model
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    assert isinstance(model.get_output_embeddings(), PackedLinear)
    assert model.get_input_embeddings().weight.device.type == "cpu"


def test_only_plain_cpu_float_linears_are_swapped():
    class Int8Linear(torch.nn.Linear):  # what bitsandbytes' layers look like: a subclass with its own forward
        pass

    hooked = torch.nn.Linear(4, 4)
    hooked._hf_hook = object()  # accelerate places this one: leave it to accelerate
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), Int8Linear(4, 4), hooked, torch.nn.Linear(4, 4).half())
    assert [packable(m) for m in model] == [True, False, False, False]
    assert pack_linears(model) == 1 and isinstance(model[0], PackedLinear)
    assert isinstance(model[1], Int8Linear) and type(model[3]) is torch.nn.Linear
