"""Audio and images to the tiny random-weight Gemma 4 (tests/support/gemma4_kit.py) as users send them: files
on `gemmacli chat`'s command line, and OpenAI content parts over HTTP, streamed."""

from __future__ import annotations

import base64
import json

import pytest

pytestmark = pytest.mark.slow


def test_cli_chat_with_an_audio_file_and_an_image(cli, gemma4_dir, audio, images):
    args = ["chat", "-m", gemma4_dir, "--max-tokens", "3", "--temperature", "0", "--json", "-q"]
    text_only = json.loads(cli(*args, "summarise").stdout)["usage"]["prompt_tokens"]
    result = cli(*args, audio / "hello_world.wav", images / "red_circle_64.png", "summarise")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["usage"]["prompt_tokens"] > text_only + 10  # the clip's and the image's soft tokens
    assert body["usage"]["completion_tokens"] <= 3 and body["reasoning"] == ""


def test_http_input_audio_streams_a_reply(gemma4_dir, audio):
    import openai
    from support.liveserver import LiveServer

    from gemmacli.device import placement
    from gemmacli.runners.chat import ChatRunner
    from gemmacli.server import create_app
    from gemmacli.server.loaded import LoadedModel
    from gemmacli.server.settings import ServerSettings

    runner = ChatRunner.load(gemma4_dir, placement("cpu", "float32"), name="tiny-gemma4")
    wav = base64.b64encode((audio / "hello_world.wav").read_bytes()).decode()
    clip = {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}
    messages = [{"role": "user", "content": [clip, {"type": "text", "text": "What is said?"}]}]
    with LiveServer(create_app(ServerSettings(), models=[LoadedModel("tiny-gemma4", runner)])) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        card = client.models.retrieve("tiny-gemma4")
        kw = dict(model="tiny-gemma4", messages=messages, max_tokens=4, temperature=0)
        whole = client.chat.completions.create(**kw)
        chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content and chunks[-1].usage == whole.usage
    assert whole.usage.prompt_tokens > 20 and card.model_extra["modalities"] == ["text", "image", "audio"]
