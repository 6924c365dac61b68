"""Remote media through the running app: a real uvicorn server on the tiny vision model, fetching from
the local media server (127.0.0.1/32 allowed, as an operator allows an internal media host). Every SSRF
target answers 400 in OpenAI's shape naming the content part, and the server keeps serving."""

from __future__ import annotations

import threading
import time
from urllib.parse import quote

import httpx
import pytest
from support.helpers import check_openai_error
from support.liveserver import LiveServer
from support.mediaserver import MediaServer

from gemmacli.media import MediaLimits

pytestmark = pytest.mark.slow
MODEL = "tiny-gemma3-vision"
HEARS = "fake-chat-with-audio"
SEES = "fake-chat-with-video"
IMG = "messages[0].content[0].image_url"


def chat(url: str, kind: str = "image_url") -> dict:
    part = {"type": kind, kind: {"url": url}}
    return {
        "model": {"image_url": MODEL, "audio_url": HEARS, "video_url": SEES}[kind],
        "max_tokens": 1,
        "temperature": 0,
        "messages": [{"role": "user", "content": [part, {"type": "text", "text": "describe"}]}],
    }


@pytest.fixture(scope="module")
def media():
    with MediaServer() as server:
        yield server


def serve(vision_runner, **settings):
    from support.fakes import FakeChatRunner

    from gemmacli.server import create_app
    from gemmacli.server.loaded import LoadedModel
    from gemmacli.server.settings import ServerSettings

    hears = FakeChatRunner(HEARS)  # takes audio, so an audio URL reaches the fetcher's checks
    hears.modalities = ("text", "audio")
    sees = FakeChatRunner(SEES)
    sees.modalities = ("text", "video")
    models = [LoadedModel(MODEL, vision_runner), LoadedModel(HEARS, hears), LoadedModel(SEES, sees)]
    app = create_app(ServerSettings(**settings), models=models)
    app.state["services"].media_limits = MediaLimits(max_image_bytes=100_000)  # small, so "oversized" is quick
    return LiveServer(app)


@pytest.fixture(scope="module")
def api(vision_runner):
    media = {"allow_remote_media": True, "remote_media_networks": ("127.0.0.1/32",), "remote_media_timeout": 1.5}
    with serve(vision_runner, **media) as live, httpx.Client(base_url=live.url, timeout=60) as client:
        yield client


def post(client: httpx.Client, body: dict) -> httpx.Response:
    return client.post("/v1/chat/completions", json=body)


def test_a_remote_png_and_jpeg_are_described(api, media):
    for path in ("/red.png", "/photo.jpg", "/chain?n=3"):
        r = post(api, chat(media.url(path)))
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] > 10  # the image's tokens are in the prompt


def _bad_cases() -> dict[str, tuple[str, str]]:
    """id -> (URL, or a path on the media server, and words the message must hold)."""

    def to(url: str) -> str:
        return f"/to?url={quote(url, safe='')}"

    return {
        "metadata-v4": ("http://169.254.169.254/latest/meta-data/iam/", "cloud metadata"),
        "metadata-v6": ("http://[fd00:ec2::254]/latest/", "cloud metadata"),
        "metadata-mapped-v6": ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
        "metadata-6to4": ("http://[2002:a9fe:a9fe::]/", "cloud metadata"),
        "loopback-outside-allowed": ("http://127.0.0.2/", "loopback"),
        "ipv6-loopback": ("http://[::1]/", "loopback"),
        "mapped-loopback": ("http://[::ffff:127.0.0.2]/", "loopback"),
        "nat64-loopback": ("http://[64:ff9b::7f00:2]/", "loopback"),
        "unspecified": ("http://0.0.0.0/", "unspecified"),
        "private-10": ("http://10.0.0.1/", "private"),
        "private-192-168": ("http://192.168.1.1/router", "private"),
        "link-local": ("http://169.254.10.10/", "link-local"),
        "cgnat": ("http://100.64.0.1/", "carrier-grade NAT"),
        "ula": ("http://[fd12::1]/", "unique local"),
        "ipv6-link-local": ("http://[fe80::1]/", "link-local"),
        "multicast": ("http://224.0.0.1/", "multicast"),
        "decimal-loopback": ("http://2130706433/", "ambiguous numeric"),
        "octal-loopback": ("http://0177.0.0.1/", "ambiguous numeric"),
        "file-url": ("file:///etc/passwd", "only http"),
        "ftp-url": ("ftp://example.com/a.png", "only http"),
        "userinfo": ("http://user:pw@example.com/a.png", "user name"),
        "backslash-bypass": ("http://example.com\\@169.254.169.254/", "backslash"),
        "idn-homograph": ("http://exаmple.com/a.png", "non-ASCII"),
        "zone-id": ("http://[fe80::1%25eth0]/", "zone"),
        "redirect-to-metadata": (to("http://169.254.169.254/latest/"), "redirected to"),
        "redirect-to-loopback": (to("http://127.0.0.2:8080/"), "redirected to"),
        "redirect-to-file": (to("file:///etc/passwd"), "redirected to"),
        "redirect-loop": ("/loop", "more than 3 times"),
        "too-many-redirects": ("/chain?n=4", "more than 3 times"),
        "slow-body": ("/slow?seconds=6", "longer than the 1.5 s limit"),
        "oversized-body": ("/big?size=2000000", "larger than the limit of 100,000 bytes"),
        "oversized-declared": ("/big-declared?size=2000000", "the limit is 100,000"),
        "html-not-image": ("/text", "not an image"),
        "fake-png": ("/fake-png", "not an image"),
        "empty-body": ("/empty", "empty"),
        "not-found": ("/status?code=404", "HTTP 404"),
    }


BAD = _bad_cases()


@pytest.mark.parametrize(("where", "says"), BAD.values(), ids=BAD.keys())
def test_ssrf_targets_and_bad_media_are_400_naming_the_part(api, media, where, says):
    url = media.url(where) if where.startswith("/") else where
    error = check_openai_error(post(api, chat(url)), 400, param=IMG, type="invalid_request_error")
    assert says in error["message"] and error["code"] == "invalid_media"


def test_the_server_keeps_serving_after_refusals(api, media):
    for where in ("http://169.254.169.254/", "/loop", "/text", "/big?size=2000000"):
        post(api, chat(media.url(where) if where.startswith("/") else where))
    assert post(api, chat(media.url("/red.png"))).status_code == 200


def test_audio_urls_go_through_the_same_checks(api):
    error = check_openai_error(post(api, chat("http://169.254.169.254/a.wav", "audio_url")), 400)
    assert error["param"] == "messages[0].content[0].audio_url" and "cloud metadata" in error["message"]


def test_video_urls_go_through_the_same_checks(api):
    error = check_openai_error(post(api, chat("http://169.254.169.254/a.mp4", "video_url")), 400)
    assert error["param"] == "messages[0].content[0].video_url" and "cloud metadata" in error["message"]


def test_a_slow_fetch_does_not_block_the_event_loop(api, media):
    slow = threading.Thread(target=post, args=(api, chat(media.url("/slow?seconds=6"))))
    slow.start()
    time.sleep(0.3)  # the fetch is now trickling on a worker thread, for 1.2 s more
    assert api.get("/health").status_code == 200
    assert slow.is_alive()  # /health answered while the fetch was still running
    slow.join()


OFF = {
    "off-http": "http://example.com/a.png",
    "off-https": "https://example.com/a.png",
    "off-file": "file:///etc/passwd",
    "off-metadata": "http://169.254.169.254/",
    "off-bare-path": "/etc/passwd",
    "off-local-server": None,
}


@pytest.fixture(scope="module")
def api_off(vision_runner):
    with serve(vision_runner) as live, httpx.Client(base_url=live.url, timeout=60) as client:
        yield client


@pytest.mark.parametrize("url", OFF.values(), ids=OFF.keys())
def test_remote_media_is_off_by_default(api_off, media, url):
    before = len(media.seen)
    error = check_openai_error(post(api_off, chat(url or media.url("/red.png"))), 400, param=IMG)
    assert "only data: URLs" in error["message"] and "--allow-remote-media" in error["message"]
    assert len(media.seen) == before  # nothing was fetched
