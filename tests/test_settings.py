"""Each server setting declared once: its flag, its variable, its --help line and its README row agree with it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from gemmacli.cli import app
from gemmacli.media import MediaLimits
from gemmacli.models import defaults
from gemmacli.server.schema.limits import RequestLimits
from gemmacli.server.settings import SETTINGS, ServerSettings, markdown_env_row, markdown_table

ROOT = Path(__file__).parent.parent
COMMANDS = get_command(app).commands


def serve_help(columns: int) -> str:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_every_setting_is_a_flag_whose_help_shows_the_declared_default():
    params = {p.name: p for p in COMMANDS["serve"].params}
    lines = serve_help(300).splitlines()  # wide enough for one line per flag
    for s in SETTINGS:
        assert s.flag in params[s.name].opts, s.name
        [line] = [line for line in lines if re.search(rf"│ {s.flag}\s", line)]
        assert f"[default: {s.shown}]" in line and s.doc in line, line
    assert len(params) == len(SETTINGS) + 2  # and --env-file, --quiet


def test_the_flags_keep_their_spellings():
    opts = {p.name: (*p.opts, *p.secondary_opts) for p in COMMANDS["serve"].params}
    assert opts["models"] == ("--model", "-m") and opts["device"] == ("--device", "-d")
    assert opts["api_keys"] == ("--api-key",) and opts["cors_origins"] == ("--cors-origin",)
    assert opts["remote_media_hosts"] == ("--remote-media-host",)
    assert opts["remote_media_networks"] == ("--remote-media-allow-network",)
    assert opts["allow_remote_media"] == ("--allow-remote-media", "--no-remote-media")
    assert opts["metrics_auth"] == ("--metrics-auth", "--public-metrics")
    assert opts["warmup"] == ("--warmup", "--no-warmup") and opts["quiet"] == ("--quiet", "-q")


def test_help_renders_in_80_columns():
    text = serve_help(80)
    assert all(len(line) <= 80 for line in text.splitlines())
    for panel in ("Options", "Queue and batching", "Models in memory", "Access", "Remote media", "Request limits"):
        assert f"─ {panel} ─" in text
    assert f"# {defaults.DEFAULT_SERVE_MODEL} on 127.0.0.1:8000" in serve_help(300)  # the examples, unwrapped


def _other_value(s) -> tuple[str, object]:
    """A variable's text and the value it means, never the default."""
    if s.kind is bool:
        return ("0", False) if s.default else ("yes", True)
    if s.kind is tuple:
        return " a, b ,", ("a", "b")
    if s.kind is Path:
        return "/srv/x.toml", Path("/srv/x.toml")
    if s.kind is str:
        value = next((c for c in s.choices if c != s.default), "x")
        return value, value
    value = s.default + 1 if s.max is None or s.default < s.max else s.default - 1
    return str(value), value


@pytest.mark.parametrize("s", SETTINGS, ids=lambda s: s.name)
def test_every_setting_reads_its_variable_and_dotenv_line(s, tmp_path):
    raw, expected = _other_value(s)
    assert getattr(ServerSettings.load({}, environ={s.env: raw}, dotenv=tmp_path / "none"), s.name) == expected
    (tmp_path / ".env").write_text(f"{s.env}={raw}\n")
    assert getattr(ServerSettings.load({}, environ={}, dotenv=tmp_path / ".env"), s.name) == expected


def test_flags_override_variables_which_override_dotenv(tmp_path, monkeypatch):
    import gemmacli.cli.serve
    import gemmacli.server.launch

    taken = []
    monkeypatch.setattr(gemmacli.server.launch, "serve", lambda settings, report: taken.append(settings))
    monkeypatch.setattr(gemmacli.cli.serve, "quiet_libraries", lambda: None)
    (tmp_path / "x.env").write_text("GEMMACLI_MAX_QUEUE=3\nGEMMACLI_PORT=7000\nGEMMACLI_MAX_BATCH=2\n")
    flags = ["-m", "a", "-m", "b", "--api-key", "k", "--no-warmup", "--dtype", "float16", "--log-level", "debug"]
    flags += ["--remote-media-allow-network", "10.1.0.0/16", "--max-batch", "4", "--public-metrics"]
    flags += ["--max-audio-seconds", "9.5", "--env-file", str(tmp_path / "x.env"), "-q"]
    result = CliRunner().invoke(app, ["serve", *flags], env={"GEMMACLI_PORT": "7100", "GEMMACLI_MAX_BATCH": "9"})
    assert result.exit_code == 0, result.output
    [s] = taken
    assert (s.models, s.api_keys, s.warmup, s.remote_media_networks) == (("a", "b"), ("k",), False, ("10.1.0.0/16",))
    assert (s.dtype, s.log_level) == ("float16", "debug") and type(s.dtype) is str
    assert (s.max_batch, s.port, s.max_queue, s.metrics_auth, s.max_audio_seconds) == (4, 7100, 3, False, 9.5)


@pytest.mark.parametrize(
    ("variable", "raw", "message"),
    [
        ("GEMMACLI_MAX_BATCH", "0", "GEMMACLI_MAX_BATCH='0' is out of range: at least 1"),
        ("GEMMACLI_PORT", "65536", "GEMMACLI_PORT='65536' is out of range: 1 to 65535"),
        ("GEMMACLI_REMOTE_MEDIA_TIMEOUT", "0.01", "at least 0.1"),
        ("GEMMACLI_REQUEST_TIMEOUT", "nan", "GEMMACLI_REQUEST_TIMEOUT='nan' is out of range"),
        ("GEMMACLI_MAX_IMAGES", "-1", "GEMMACLI_MAX_IMAGES='-1' is out of range: at least 0"),
        ("GEMMACLI_LOG_LEVEL", "loud", "is not one of debug, info, warning, error"),
        ("GEMMACLI_DTYPE", "int4", "is not one of auto, bfloat16, float16, float32"),
        ("GEMMACLI_MAX_QUEUE", "many", "GEMMACLI_MAX_QUEUE='many' is not a valid value"),
    ],
)
@pytest.mark.parametrize("where", ["environment", ".env"])
def test_a_bad_variable_is_one_error_line(variable, raw, message, where, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {variable: raw}
    if where == ".env":
        (tmp_path / ".env").write_text(f"{variable}={raw}\n")
        env = {}
    result = CliRunner().invoke(app, ["serve", "-q"], env=env)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


@pytest.mark.parametrize(
    "flags", [["--max-batch", "0"], ["--port", "65536"], ["--log-level", "loud"], ["--remote-media-timeout", "0"]]
)
def test_a_flag_out_of_range_is_a_usage_error(flags, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["serve", *flags, "-q"])
    assert result.exit_code == 2 and flags[0] in result.output


def test_the_field_spelling_of_a_renamed_variable_still_works(tmp_path):
    none = tmp_path / "none"
    assert ServerSettings.load({}, environ={"GEMMACLI_API_KEYS": "k1,k2"}, dotenv=none).api_keys == ("k1", "k2")
    both = {"GEMMACLI_API_KEY": "k1", "GEMMACLI_API_KEYS": "k2"}
    assert ServerSettings.load({}, environ=both, dotenv=none).api_keys == ("k1",)  # the documented one wins


def test_readme_tables_are_the_declaration():
    """Run `python -c 'from gemmacli.server.settings import *; print(markdown_table())'` and paste, if this fails."""
    readme = (ROOT / "README.md").read_text()
    marker = "<!-- generated from gemmacli/settings.py by gemmacli.server.settings.markdown_table()"
    after = readme[readme.index(marker) :].split("\n", 1)[1]
    assert after.split("\n\n", 1)[0] == markdown_table()
    [row] = [line for line in readme.splitlines() if "`gemmacli serve` settings" in line]
    assert row == markdown_env_row()
    assert all(s.env in readme for s in SETTINGS)


def test_limits_take_their_defaults_from_the_declaration():
    assert RequestLimits() == ServerSettings().request_limits()
    assert MediaLimits() == ServerSettings().media_limits()
    assert MediaLimits().max_audio_bytes == 25 * 1024 * 1024  # the server's value, OpenAI's upload limit


def test_one_default_model_constant_per_role():
    roles = {name: getattr(defaults, name) for name in dir(defaults) if name.startswith("DEFAULT_")}
    assert sorted(roles) == [f"DEFAULT_{role}_MODEL" for role in ("CHAT", "EMBED", "SERVE", "TRANSCRIBE")]
    assert len(set(roles.values())) == len(roles)
    elsewhere = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in (ROOT / "gemmacli").rglob("*.py")
        if path.name != "defaults.py"
        for line in path.read_text().splitlines()
        if re.match(r"\s*DEFAULT_\w*MODEL\s*[:=]", line)
    ]
    assert elsewhere == []
    assert ServerSettings().models == (defaults.DEFAULT_SERVE_MODEL,)
    commands = ("chat", "bench", "smoke", "embed", "transcribe")
    model_default = {name: next(p.default for p in COMMANDS[name].params if p.name == "model") for name in commands}
    assert model_default["bench"] == model_default["smoke"] == defaults.DEFAULT_CHAT_MODEL
    assert model_default["chat"] is None  # chosen by the inputs: DEFAULT_CHAT_MODEL for text (models/choose.py)
    assert model_default["embed"] == defaults.DEFAULT_EMBED_MODEL
    assert model_default["transcribe"] == defaults.DEFAULT_TRANSCRIBE_MODEL
    from gemmacli.smoke import run_smoke

    assert inspect.signature(run_smoke).parameters["model"].default == defaults.DEFAULT_CHAT_MODEL
