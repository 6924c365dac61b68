"""Every command through Typer's CliRunner, on the real demo models, including its bad inputs."""

from __future__ import annotations

import json
import re

import jsonschema
import numpy as np
import pytest
from support.helpers import assert_one_error_line

CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
COMMANDS = ["chat", "embed", "transcribe", "download", "import", "models", "rm", "serve", "smoke", "bench"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(cli, command):
    result = cli(command, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.stdout and "Example" in result.stdout


def test_version_and_no_arguments(cli):
    assert cli("--version").stdout.startswith("gemmacli ")
    assert cli().exit_code in (0, 2)


@pytest.mark.slow
class TestChat:
    def test_raw_greedy_continues_the_weekdays(self, cli, gemma_dir):
        result = cli("chat", "--raw", "Monday, Tuesday, Wednesday,", "--temperature", "0", "--max-tokens", "4", "-q")
        assert result.exit_code == 0, result.output
        assert result.stdout.strip().startswith("Thursday")
        assert result.stderr == ""

    def test_json_with_system_prompt_stop_and_stdin(self, cli, gemma_dir):
        args = ["chat", "-", "-s", "Answer briefly.", "--temperature", "0", "--max-tokens", "6", "--json", "-q"]
        result = cli(*args, input="Say hello.")
        assert result.exit_code == 0, result.output
        body = json.loads(result.stdout)
        assert body["model"] == "gemma-3-270m" and body["finish_reason"] in ("stop", "length")
        assert body["usage"]["completion_tokens"] <= 6 and body["usage"]["prompt_tokens"] > 5

    def test_stop_string(self, cli, gemma_dir):
        days = "Monday, Tuesday, Wednesday,"
        result = cli("chat", "--raw", days, "--temperature", "0", "--stop", "Sat", "--json", "-q")
        body = json.loads(result.stdout)
        assert body["finish_reason"] == "stop" and "Friday" in body["text"] and "Sat" not in body["text"]

    def test_image_chat_on_the_tiny_vision_model(self, cli, vision_dir, images):
        result = cli("chat", images / "red_circle_64.png", "describe", "-m", vision_dir, "--max-tokens", "5", "--json")
        assert result.exit_code == 0, result.output
        usage = json.loads(result.stdout)["usage"]
        assert usage["completion_tokens"] <= 5 and usage["prompt_tokens"] > 4

    def test_tools_print_schema_valid_calls_as_json(self, cli, gemma_dir, tmp_path):
        tools = tmp_path / "tools.json"
        tools.write_text(json.dumps([{"type": "function", "function": {"name": "get_weather", "parameters": CITY}}]))
        args = ["chat", "Weather in Paris?", "--tools", tools, "--tool-choice", "required", "--max-tokens", "120", "-q"]
        result = cli(*args, "--seed", "0")
        assert result.exit_code == 0, result.output
        calls = json.loads(result.stdout)
        assert calls and all(c["function"]["name"] == "get_weather" for c in calls)
        for call in calls:
            jsonschema.validate(json.loads(call["function"]["arguments"]), CITY)
        body = json.loads(cli(*args, "--seed", "0", "--json").stdout)
        assert body["finish_reason"] == "tool_calls" and len(body["tool_calls"]) == len(calls)

    def test_schema_makes_the_answer_valid_json(self, cli, gemma_dir, tmp_path):
        schema = tmp_path / "schema.json"
        schema.write_text(json.dumps(CITY))
        result = cli("chat", "A city, as JSON", "--schema", schema, "--max-tokens", "60", "--seed", "1", "-q")
        assert result.exit_code == 0, result.output
        jsonschema.validate(json.loads(result.stdout), CITY)

    def test_image_to_the_text_only_model(self, cli, gemma_dir, images):
        result = cli("chat", images / "red_circle_64.png", "describe", "-m", "gemma-3-270m", "-q")
        assert_one_error_line(result, "gemma-3-270m reads text only, not images; models that do: gemma-4-e2b-it")


@pytest.mark.parametrize(
    "args,pattern",
    [
        (["missing.png", "describe"], "not found"),
        (["{images}/corrupt.png", "describe"], "not an image"),
        (["{images}/truncated.jpg", "describe"], "truncated"),
        (["-m", "no-such-model", "hi"], "unknown model"),
        (["-m", "gemma-3-4b", "hi"], "did you mean 'gemma-3-4b-it'"),
        (["-m", "google/gemma-3-12b-it", "hi"], "not cached"),
        (["-m", "all-minilm-l6-v2", "hi"], "embed model, not a chat model"),
        (["--raw", "-s", "sys", "hi"], "--raw"),
        (["--device", "cuda", "hi"], "CUDA"),
        (["--device", "tpu", "hi"], "unknown device"),
    ],
)
def test_chat_bad_input_is_one_line_and_exit_1(cli, images, minilm_dir, args, pattern):
    result = cli("chat", *[a.format(images=images) for a in args], "-q")
    assert_one_error_line(result, pattern)


def test_bad_tools_and_schema_files_are_one_line_before_any_model_loads(cli, tmp_path):
    files = {
        "not_json.json": "{",
        "bad_name.json": json.dumps([{"type": "function", "function": {"name": "get weather"}}]),
        "not_a_list.json": json.dumps({"name": "f"}),
        "string_schema.json": json.dumps([1, 2]),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    cases = [
        (["--tools", tmp_path / "missing.json"], "cannot read"),
        (["--tools", tmp_path / "not_json.json"], "not JSON"),
        (["--tools", tmp_path / "bad_name.json"], "name must match"),
        (["--tools", tmp_path / "not_a_list.json"], "list of tool definitions"),
        (["--tool-choice", "required"], "needs --tools"),
        (["--schema", tmp_path / "string_schema.json"], "JSON Schema object"),
    ]
    for args, pattern in cases:
        assert_one_error_line(cli("chat", "hi", *args, "-m", "no-such-model-loaded-first", "-q"), pattern)


USAGE_ERRORS = [[], ["hi", "--temperature", "-1"], ["hi", "--max-tokens", "0"], ["hi", "--dtype", "int3"]]


@pytest.mark.parametrize("args", USAGE_ERRORS)
def test_chat_usage_errors_exit_2(cli, args):
    assert cli("chat", *args).exit_code == 2


def test_chat_stdin_dash_with_nothing_piped(cli):
    assert_one_error_line(cli("chat", "-", input=""), "empty")


@pytest.mark.slow
class TestEmbed:
    def test_json_vectors_match_the_runner(self, cli, embed_runner):
        result = cli("embed", "A cat sits on the mat.", "Stocks fell.", "-q")
        assert result.exit_code == 0, result.output
        body = json.loads(result.stdout)
        vectors = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
        expected = embed_runner.embed(["A cat sits on the mat.", "Stocks fell."]).vectors
        np.testing.assert_allclose(vectors, expected, atol=1e-6)
        assert body["usage"]["prompt_tokens"] > 0

    def test_file_dimensions_and_table(self, cli, minilm_dir, tmp_path):
        texts = tmp_path / "texts.txt"
        texts.write_text("first line\n\nsecond line\n")
        body = json.loads(cli("embed", "--file", texts, "--dimensions", "32", "-q").stdout)
        assert len(body["data"]) == 2 and len(body["data"][0]["embedding"]) == 32
        table = cli("embed", "a cat", "a kitten", "--table", "-q")
        assert table.exit_code == 0 and "cos #1" in table.stdout and "384 dimensions" in table.stdout

    def test_bad_inputs(self, cli, minilm_dir, tmp_path):
        assert cli("embed").exit_code == 2
        assert_one_error_line(cli("embed", "x", "--dimensions", "999", "-q"), "dimensions must be between")
        assert_one_error_line(cli("embed", "--file", tmp_path / "none.txt", "-q"), "not found")
        assert_one_error_line(cli("embed", "x", "-m", "whisper-tiny.en", "-q"), "not a embed model")


@pytest.mark.slow
class TestTranscribe:
    def test_text_matches_the_spoken_sentence(self, cli, whisper_dir, audio):
        from support.helpers import word_error_rate

        result = cli("transcribe", audio / "quick_brown_fox.wav", "-q")
        assert result.exit_code == 0, result.output
        reference = (audio / "quick_brown_fox.txt").read_text()
        assert word_error_rate(reference, result.stdout) < 0.25

    @pytest.mark.parametrize("fmt", ["srt", "vtt", "verbose_json", "json"])
    def test_formats(self, cli, whisper_dir, audio, fmt):
        result = cli("transcribe", audio / "hello_world.wav", "--format", fmt, "-q")
        assert result.exit_code == 0, result.output
        out = result.stdout
        if fmt == "srt":
            assert re.match(r"1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n\S", out)
        elif fmt == "vtt":
            assert out.startswith("WEBVTT\n\n") and re.search(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}", out)
        else:
            body = json.loads(out)
            assert "hello world" in body["text"].lower()
            if fmt == "verbose_json":
                assert body["segments"] and body["duration"] > 1 and body["language"] == "english"

    def test_bad_inputs(self, cli, whisper_dir, audio, images):
        assert_one_error_line(cli("transcribe", images / "corrupt.png", "-q"), "not audio")
        assert_one_error_line(cli("transcribe", "nothing.wav", "-q"), "not found")
        assert_one_error_line(cli("transcribe", audio / "hello_world.wav", "--translate", "-q"), "English-only")
        assert cli("transcribe", audio / "hello_world.wav", "--format", "docx").exit_code == 2
        assert cli("transcribe", audio / "hello_world.wav", "--timestamps", "char").exit_code == 2


def test_models_table_and_json(cli, gemma_dir, minilm_dir, whisper_dir):
    table = cli("models")
    assert table.exit_code == 0 and "gemma-3-12b-it" in table.stdout and "whisper-tiny.en" in table.stdout
    rows = {row["name"]: row for row in json.loads(cli("models", "--json").stdout)}
    assert rows["gemma-3-270m"]["status"] == "ready" and rows["gemma-3-270m"]["task"] == "chat"
    assert rows["gemma-3-27b-it"]["status"] == "download"
