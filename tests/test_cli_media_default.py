"""`gemmacli chat photo.jpg "describe"` with no model named: the smallest current model that reads images is
chosen, announced with its size, fetched with real huggingface_hub code from a fake Hub on 127.0.0.1, and
answers. Offline, one error line says what was needed and how to get it. (The fake Hub serves the tiny
random-weight vision model under Gemma 4 E2B's repo id: the choice and the fetch are what is tested.)"""

from __future__ import annotations

import json

import pytest
from support.fakehub import FakeHub, point_hf_at
from support.helpers import assert_one_error_line

GEMMA4_E2B = "google/gemma-4-E2B-it"


@pytest.mark.slow
def test_an_image_without_a_model_fetches_the_default_that_reads_it(cli, vision_dir, images, tmp_path, monkeypatch):
    with FakeHub({GEMMA4_E2B: vision_dir}) as hub:
        point_hf_at(monkeypatch, hub.url, tmp_path / "hf")
        result = cli("chat", images / "red_circle_64.png", "describe", "--max-tokens", "3", "--json")
        assert result.exit_code == 0, result.output
        assert "fetching gemma-4-e2b-it from google/gemma-4-E2B-it (about 10.2 GB)" in result.stderr
        assert json.loads(result.stdout)["model"] == "gemma-4-e2b-it"
        assert any(name.endswith(".safetensors") for name in hub.downloaded(GEMMA4_E2B))
        again = cli("chat", images / "red_circle_64.png", "describe", "--max-tokens", "3", "-q")
        assert again.exit_code == 0 and "fetching" not in again.stderr  # fetched once, then ready


def test_offline_the_error_names_the_model_and_the_download_command(cli, images, tmp_path, monkeypatch):
    point_hf_at(monkeypatch, "http://127.0.0.1:9", tmp_path / "hf", offline=True)
    result = cli("chat", images / "red_circle_64.png", "describe", "-q")
    assert_one_error_line(result, r"images need gemma-4-e2b-it.*`gemmacli download gemma-4-e2b-it`.*-m MODEL")


def test_a_named_model_that_cannot_read_the_input_names_those_that_can(cli, images):
    result = cli("chat", images / "red_circle_64.png", "describe", "-m", "gemma-3-1b-it", "-q")
    assert_one_error_line(result, r"gemma-3-1b-it reads text only, not images; models that do: gemma-4-e2b-it")


def test_a_video_offline_names_the_smallest_model_that_reads_video(cli, tmp_path, monkeypatch):
    from support.videos import make_clip

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(make_clip())
    point_hf_at(monkeypatch, "http://127.0.0.1:9", tmp_path / "hf", offline=True)
    assert_one_error_line(cli("chat", clip, "what happens?", "-q"), r"video need gemma-4-e2b-it")
    named = cli("chat", clip, "what happens?", "-m", "gemma-3-4b-it", "-q")
    assert_one_error_line(named, r"gemma-3-4b-it reads text and image only, not video; models that do: gemma-4-e2b")
