"""EmbedRunner on the real all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest

from gemmacli.errors import InvalidParamError

pytestmark = pytest.mark.slow
SENTENCES = ["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell sharply today."]


def test_similar_sentences_are_closer_than_unrelated_ones(embed_runner):
    vectors = embed_runner.embed(SENTENCES).vectors
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.3
    assert sims[0, 1] > sims[1, 2] + 0.3


def test_vectors_have_unit_norm_and_the_model_dimension(embed_runner):
    result = embed_runner.embed(SENTENCES)
    assert result.vectors.shape == (3, 384) and result.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)


def test_vectors_match_sentence_transformers_directly(embed_runner):
    reference = embed_runner.model.encode(SENTENCES, normalize_embeddings=True)
    np.testing.assert_allclose(embed_runner.embed(SENTENCES).vectors, reference, atol=1e-5)


def test_dimensions_truncates_and_renormalises(embed_runner):
    full = embed_runner.embed(SENTENCES).vectors
    cut = embed_runner.embed(SENTENCES, dimensions=64).vectors
    assert cut.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    expected = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expected, atol=1e-5)


def test_token_counts_are_real(embed_runner):
    result = embed_runner.embed(["hello", "hello world, this is longer"])
    assert result.token_counts[0] == len(embed_runner.tokenizer("hello")["input_ids"])
    assert result.token_counts[1] > result.token_counts[0]
    assert result.total_tokens == sum(result.token_counts)


def test_long_input_is_counted_in_full_and_embedded_from_its_window(embed_runner):
    window = embed_runner.max_tokens
    long, head = embed_runner.embed(["word " * 1000, "word " * (window - 2)]).vectors  # [CLS] + words + [SEP]
    assert embed_runner.count_tokens(["word " * 1000]) == (1002,)
    np.testing.assert_allclose(long, head, atol=1e-5)


@pytest.mark.parametrize("dimensions", [0, 385])
def test_bad_dimensions_are_refused(embed_runner, dimensions):
    with pytest.raises(InvalidParamError) as err:
        embed_runner.embed(SENTENCES, dimensions=dimensions)
    assert err.value.param == "dimensions"


def test_empty_input_is_refused(embed_runner):
    with pytest.raises(InvalidParamError):
        embed_runner.embed([])
