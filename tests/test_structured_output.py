"""Structured output on the bundled Gemma 3 270M base model: whatever the model would say, the grammar mask
makes it JSON that validates against the schema. Nothing here relies on the model's quality."""

from __future__ import annotations

import json

import jsonschema
import pydantic
import pytest

from gemmacli.runners import grammar
from gemmacli.types import GenParams

pytestmark = pytest.mark.slow
MODEL = "gemma-3-270m"
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["red", "green"]}, "maxItems": 3},
        "score": {"type": "number"},
        "member": {"type": "boolean"},
    },
    "required": ["name", "age", "tags", "member"],
    "additionalProperties": False,
}


def test_sampled_output_validates_against_the_schema(chat_runner):
    constrained = GenParams(grammar=grammar.json_schema(PERSON, "schema"), max_tokens=80, temperature=1.0)
    for seed in range(4):
        c = chat_runner.complete_text("Here is a poem about the sea:", GenParams(seed=seed).with_defaults(constrained))
        assert c.finish_reason == "stop"
        jsonschema.validate(json.loads(c.text), PERSON)


def test_json_object_mode_gives_an_object(chat_runner):
    c = chat_runner.complete_text("A list:", GenParams(grammar=grammar.json_object("x"), max_tokens=60, temperature=0))
    if c.finish_reason == "stop":  # greedy may keep adding keys until max_tokens
        assert isinstance(json.loads(c.text), dict)
    assert c.text.startswith("{")


def test_a_max_tokens_cut_is_length_and_the_json_may_be_incomplete(chat_runner):
    c = chat_runner.complete_text("x", GenParams(grammar=grammar.json_schema(PERSON, "s"), max_tokens=3))
    assert c.finish_reason == "length" and c.usage.completion_tokens == 3
    with pytest.raises(json.JSONDecodeError):
        json.loads(c.text)


def test_constrained_and_free_sequences_share_a_batch(chat_runner):
    """The mask is one sequence's stage: the free sequence beside it decodes exactly as it does alone."""
    free, prompt = GenParams(max_tokens=12, temperature=0), "The capital of France is"
    alone = chat_runner.complete_text(prompt, free).text
    decoder = chat_runner.decoder
    city = {"city": {"enum": ["Paris", "Rome"]}}
    schema = {"type": "object", "properties": city, "required": ["city"], "additionalProperties": False}
    held = GenParams(grammar=grammar.json_schema(schema, "s"), seed=0, max_tokens=20)  # one JSON shape: no flake
    constrained = decoder.insert(chat_runner.encode_text(prompt), held)
    plain = decoder.insert(chat_runner.encode_text(prompt), free)
    texts = {constrained: "", plain: ""}
    while not decoder.idle:
        for seq, deltas in decoder.step():
            assert len(decoder.running) <= 2 and seq.error is None
            texts[seq] += "".join(d.text for d in deltas)
    assert texts[plain] == alone
    assert json.loads(texts[constrained])["city"] in ("Paris", "Rome") and constrained.finish_reason == "stop"


class Pet(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=10)
    kind: str = pydantic.Field(pattern="^(cat|dog)$")
    legs: int = pydantic.Field(ge=0, le=8)


def test_openai_parse_with_a_pydantic_model(openai_client):
    """The client turns the model into a strict json_schema response_format and parses the reply with it."""
    messages = [{"role": "user", "content": "Describe a pet."}]
    r = openai_client.chat.completions.parse(model=MODEL, messages=messages, response_format=Pet, max_tokens=60)
    pet = r.choices[0].message.parsed
    assert isinstance(pet, Pet) and pet.kind in ("cat", "dog") and 0 <= pet.legs <= 8
    assert r.choices[0].finish_reason == "stop"


def test_completions_take_response_format_and_stream_it(openai_client):
    n = {"type": "integer", "minimum": 0, "maximum": 999}
    schema = {"type": "object", "properties": {"n": n}, "required": ["n"], "additionalProperties": False}
    response_format = {"type": "json_schema", "json_schema": {"name": "count", "schema": schema}}
    kw = dict(
        model=MODEL, prompt="Count:", max_tokens=30, temperature=0, extra_body={"response_format": response_format}
    )
    whole = openai_client.completions.create(**kw).choices[0].text
    streamed = "".join(c.choices[0].text for c in openai_client.completions.create(**kw, stream=True) if c.choices)
    assert streamed == whole and isinstance(json.loads(whole)["n"], int)


def test_json_object_on_chat(openai_client):
    r = openai_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give me JSON."}],
        response_format={"type": "json_object"},
        max_tokens=40,
        seed=1,
    )
    text = r.choices[0].message.content
    assert text.startswith("{") and (r.choices[0].finish_reason == "length" or isinstance(json.loads(text), dict))
