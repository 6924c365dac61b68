"""Audio, images and video to the tiny random-weight Gemma 4 (tests/support/gemma4_kit.py) as users send them:
files on `gemmacli chat`'s command line, and OpenAI (and vLLM) content parts over HTTP, streamed."""

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
    from support.liveserver import openai_on

    from gemmacli.device import placement
    from gemmacli.runners.chat import ChatRunner

    runner = ChatRunner.load(gemma4_dir, placement("cpu", "float32"), name="tiny-gemma4")
    wav = base64.b64encode((audio / "hello_world.wav").read_bytes()).decode()
    clip = {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}
    messages = [{"role": "user", "content": [clip, {"type": "text", "text": "What is said?"}]}]
    with openai_on(runner, "tiny-gemma4") as client:
        card = client.models.retrieve("tiny-gemma4")
        kw = dict(model="tiny-gemma4", messages=messages, max_tokens=4, temperature=0)
        whole = client.chat.completions.create(**kw)
        chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content and chunks[-1].usage == whole.usage
    assert whole.usage.prompt_tokens > 20 and card.model_extra["modalities"] == ["text", "image", "audio", "video"]


def test_cli_chat_with_a_video_file(cli, gemma4_dir, tmp_path):
    from support.videos import make_clip

    clip = tmp_path / "clip.webm"
    clip.write_bytes(make_clip(frames=72, codec="libvpx"))
    args = ["chat", "-m", gemma4_dir, "--max-tokens", "3", "--temperature", "0", "--json", "-q"]
    text_only = json.loads(cli(*args, "what happens?").stdout)["usage"]["prompt_tokens"]
    result = cli(*args, clip, "what happens?")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["usage"]["prompt_tokens"] > text_only + 4 * 3  # 4 frames, each its time


def test_cli_a_corrupt_video_is_one_error_line(cli, gemma4_dir, tmp_path):
    from support.helpers import assert_one_error_line

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    assert_one_error_line(cli("chat", "-m", gemma4_dir, clip, "what happens?", "-q"), r"video clip.mp4 is not a video")


def test_http_video_url_streams_a_reply(gemma4_dir):
    from support.liveserver import openai_on
    from support.videos import make_clip

    from gemmacli.device import placement
    from gemmacli.runners.chat import ChatRunner

    runner = ChatRunner.load(gemma4_dir, placement("cpu", "float32"), name="tiny-gemma4")
    url = "data:video/mp4;base64," + base64.b64encode(make_clip()).decode()
    part = {"type": "video_url", "video_url": {"url": url}}
    messages = [{"role": "user", "content": [part, {"type": "text", "text": "What happens?"}]}]
    with openai_on(runner, "tiny-gemma4") as client:
        kw = dict(model="tiny-gemma4", messages=messages, max_tokens=4, temperature=0)
        whole = client.chat.completions.create(**kw)
        chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content and chunks[-1].usage == whole.usage
    assert whole.usage.prompt_tokens > 4 * 3
