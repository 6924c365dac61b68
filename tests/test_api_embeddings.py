"""POST /v1/embeddings on the real all-MiniLM-L6-v2: the official openai client, raw HTTP, and every bad input."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from support.helpers import check_openai_error
from typer.testing import CliRunner

from gemmacli.cli import app
from gemmacli.errors import InvalidParamError
from gemmacli.server.schema.embeddings import EmbeddingRequest, EmbeddingResponse
from gemmacli.types import Embeddings

MODEL = "all-minilm-l6-v2"
TEXTS = ["A cat sits on the mat.", "Stock markets fell sharply today.", "Le chat dort sur le canapé."]


@pytest.fixture(scope="module")
def cli_output() -> dict:
    """What `gemmacli embed` prints for TEXTS: the reference the server must match."""
    result = CliRunner().invoke(app, ["embed", *TEXTS, "-m", MODEL, "-q"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def cli_vectors(cli_output) -> np.ndarray:
    return np.array([item["embedding"] for item in cli_output["data"]], dtype=np.float32)  # (3, 384)


def vectors(response) -> np.ndarray:
    assert [item.index for item in response.data] == list(range(len(response.data)))
    return np.array([item.embedding for item in response.data], dtype=np.float32)


def assert_error(response, status: int, param: str | None, code: str | None = None) -> dict:
    codes = {} if code is None else {"code": code}
    return check_openai_error(response, status, param=param, type="invalid_request_error", **codes)


# --------------------------------------------------------------------------- the wire types alone (no model)


class StubTokenizer:
    """Just what EmbeddingRequest.texts uses: a vocabulary size and decode."""

    def __len__(self) -> int:
        return 100

    def decode(self, ids, skip_special_tokens):
        assert skip_special_tokens
        return " ".join(f"t{i}" for i in ids)


@pytest.mark.parametrize(
    ("given", "texts"),
    [("one", ["one"]), (["a", "b"], ["a", "b"]), ([1, 2], ["t1 t2"]), ([[1], [2, 3]], ["t1", "t2 t3"])],
)
def test_every_input_shape_becomes_texts(given, texts):
    assert EmbeddingRequest(model=MODEL, input=given).texts(StubTokenizer()) == texts


def test_ids_outside_the_vocabulary_are_refused():
    with pytest.raises(InvalidParamError, match="token id 100") as caught:
        EmbeddingRequest(model=MODEL, input=[99, 100]).texts(StubTokenizer())
    assert caught.value.param == "input"


def test_the_response_builds_itself_in_both_encodings():
    vectors = np.array([[0.6, -0.8], [1.0, 0.0]], dtype=np.float32)
    result = Embeddings(vectors, token_counts=(3, 4))
    floats = EmbeddingResponse.build(MODEL, result, "float")
    assert [d.embedding for d in floats.data] == vectors.tolist() and floats.usage.total_tokens == 7
    encoded = EmbeddingResponse.build(MODEL, result, "base64").data[1].embedding
    assert np.frombuffer(base64.b64decode(encoded), dtype="<f4").tolist() == [1.0, 0.0]


# --------------------------------------------------------------------------- the official client


@pytest.mark.slow
def test_float_vectors_equal_the_cli_and_usage_counts_real_tokens(openai_client, cli_output, cli_vectors):
    response = openai_client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert response.object == "list" and response.model == MODEL
    assert all(item.object == "embedding" for item in response.data)
    np.testing.assert_allclose(vectors(response), cli_vectors, atol=1e-6)
    assert response.usage.prompt_tokens == response.usage.total_tokens == cli_output["usage"]["prompt_tokens"]


@pytest.mark.slow
def test_base64_is_the_clients_default_and_decodes_to_the_same_vectors(openai_client, cli_vectors, embed_runner):
    response = openai_client.embeddings.create(model=MODEL, input=TEXTS)  # sends encoding_format=base64
    np.testing.assert_allclose(vectors(response), cli_vectors, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors(response), axis=1), 1.0, atol=1e-5)
    assert response.usage.prompt_tokens == sum(embed_runner.count_tokens(TEXTS))


@pytest.mark.slow
def test_list_input_keeps_its_order_and_a_single_string_works(openai_client, cli_vectors):
    response = openai_client.embeddings.create(model=MODEL, input=TEXTS[::-1], encoding_format="float")
    np.testing.assert_allclose(vectors(response), cli_vectors[::-1], atol=1e-6)
    single = openai_client.embeddings.create(model=MODEL, input=TEXTS[1])
    np.testing.assert_allclose(vectors(single), cli_vectors[1:2], atol=1e-6)


@pytest.mark.slow
def test_token_ids_embed_like_the_text_they_encode(openai_client, embed_runner, cli_vectors):
    ids = [embed_runner.tokenizer(text)["input_ids"] for text in TEXTS[:2]]  # with [CLS] ... [SEP]
    many = openai_client.embeddings.create(model=MODEL, input=ids, encoding_format="float")
    np.testing.assert_allclose(vectors(many), cli_vectors[:2], atol=1e-5)
    bare = embed_runner.tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    one = openai_client.embeddings.create(model=MODEL, input=bare)
    np.testing.assert_allclose(vectors(one), cli_vectors[:1], atol=1e-5)
    assert one.usage.prompt_tokens == len(bare) + 2  # the model's own [CLS] and [SEP]


@pytest.mark.slow
def test_dimensions_cuts_and_renormalises(openai_client, cli_vectors):
    response = openai_client.embeddings.create(model=MODEL, input=TEXTS, dimensions=64)
    got = vectors(response)
    assert got.shape == (3, 64)
    expected = cli_vectors[:, :64] / np.linalg.norm(cli_vectors[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)


# --------------------------------------------------------------------------- raw HTTP


@pytest.mark.slow
def test_raw_base64_is_little_endian_float32(http, cli_vectors):
    body = {"model": MODEL, "input": TEXTS[0], "encoding_format": "base64", "user": "someone"}
    response = http.post("/v1/embeddings", json=body)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    data = response.json()
    assert sorted(data) == ["data", "model", "object", "usage"] and sorted(data["usage"]) == [
        "prompt_tokens",
        "total_tokens",
    ]
    raw = base64.b64decode(data["data"][0]["embedding"])
    assert len(raw) == 384 * 4
    np.testing.assert_allclose(np.frombuffer(raw, dtype="<f4"), cli_vectors[0], atol=1e-6)


@pytest.mark.slow
def test_metrics_count_requests_and_prompt_tokens(http, embed_runner):
    def prompt_tokens() -> float:
        text = http.get("/metrics").text
        line = next(
            (x for x in text.splitlines() if x.startswith(f'gemmacli_prompt_tokens_total{{model="{MODEL}"}}')), ""
        )
        return float(line.split()[-1]) if line else 0.0

    before = prompt_tokens()
    assert http.post("/v1/embeddings", json={"model": MODEL, "input": TEXTS}).status_code == 200
    assert prompt_tokens() - before == sum(embed_runner.count_tokens(TEXTS))
    assert f'gemmacli_model_requests_total{{endpoint="/v1/embeddings",model="{MODEL}"}}' in http.get("/metrics").text


# --------------------------------------------------------------------------- bad inputs


BAD_INPUTS = {
    "empty string": ({"input": ""}, 400, "input"),
    "empty list": ({"input": []}, 400, "input"),
    "empty string in a list": ({"input": ["ok", ""]}, 400, "input"),
    "empty token list": ({"input": [[1996], []]}, 400, "input"),
    "strings mixed with ids": ({"input": ["ok", 1996]}, 400, "input"),
    "ids mixed with id lists": ({"input": [1996, [1996]]}, 400, "input"),
    "token id beyond the vocabulary": ({"input": [1996, 10**9]}, 400, "input"),
    "negative token id": ({"input": [[-1]]}, 400, "input"),
    "too many inputs": ({"input": ["x"] * 2049}, 400, "input"),
    "dimensions 0": ({"input": "x", "dimensions": 0}, 400, "dimensions"),
    "dimensions above the model's": ({"input": "x", "dimensions": 385}, 400, "dimensions"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_a_400_naming_the_field(http, openai_client, case):
    fields, status, param = BAD_INPUTS[case]
    assert_error(http.post("/v1/embeddings", json={"model": MODEL, **fields}), status, param)
    assert_still_serving(openai_client)


MALFORMED = {
    "encoding_format": ({"model": MODEL, "input": "x", "encoding_format": "hex"}, "encoding_format"),
    "number input": ({"model": MODEL, "input": 42}, "input"),
    "float ids": ({"model": MODEL, "input": [1.5]}, "input[0]"),
    "no input": ({"model": MODEL}, "input"),
    "no model": ({"input": "x"}, "model"),
    "dimensions type": ({"model": MODEL, "input": "x", "dimensions": "many"}, "dimensions"),
    "body not an object": ([MODEL, "x"], None),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_body_is_a_400_naming_the_field(http, openai_client, case):
    body, param = MALFORMED[case]
    error = assert_error(http.post("/v1/embeddings", json=body), 400, param, "invalid_value")
    assert "`" in error["message"]  # msgspec's own sentence, e.g. "Invalid enum value 'hex' - at `$.encoding_format`"
    assert_still_serving(openai_client)


@pytest.mark.slow
def test_unknown_or_wrong_task_model_is_a_404(http, openai_client):
    for name in ("no-such-model", "whisper-tiny.en"):
        error = assert_error(http.post("/v1/embeddings", json={"model": name, "input": "x"}), 404, "model")
        assert error["code"] == "model_not_found" and name in error["message"] and MODEL in error["message"]
    assert_still_serving(openai_client)


@pytest.mark.slow
def test_body_that_is_not_json_is_a_400(http, openai_client):
    response = http.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert sorted(response.json()["error"]) == ["code", "message", "param", "type"]
    assert_still_serving(openai_client)


def assert_still_serving(client) -> None:
    response = client.embeddings.create(model=MODEL, input="still here")
    assert len(response.data) == 1 and len(response.data[0].embedding) == 384
