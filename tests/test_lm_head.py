"""The CPU output projection gives F.linear's logits, shares the tied weights, and is what loading installs."""

from __future__ import annotations

import pytest
import torch

from gemmacli.runners.lm_head import ROWS, TallLinear, use_tall_lm_head


@pytest.mark.parametrize("rows", [1, 2, 8, 32, 64, 65, 300])
def test_same_logits_as_linear_at_every_row_count(rows):
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 5000, bias=False)
    x = torch.randn(2, rows, 64) if rows % 2 == 0 else torch.randn(rows, 1, 64)
    expected = linear(x)
    got = TallLinear(linear)(x)
    assert got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_transposed_product_is_used_only_where_it_pays():
    assert 1 not in ROWS and 8 in ROWS and 32 in ROWS and 4096 not in ROWS


def test_loading_installs_it_on_cpu_and_keeps_the_weights_tied(chat_runner):
    head = chat_runner.model.get_output_embeddings()
    assert isinstance(head, TallLinear)
    assert head.weight is chat_runner.model.get_input_embeddings().weight


def test_models_with_a_biased_head_are_left_alone():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(4, 8)

        def get_output_embeddings(self):
            return self.head

    model = Model()
    assert not use_tall_lm_head(model) and isinstance(model.head, torch.nn.Linear)
