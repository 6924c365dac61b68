"""Each default declared once: one constant per default model role."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from typer.main import get_command

from gemmacli.cli import app
from gemmacli.models import defaults
from gemmacli.server.settings import ServerSettings

ROOT = Path(__file__).parent.parent
COMMANDS = get_command(app).commands


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
    assert model_default["chat"] == model_default["bench"] == model_default["smoke"] == defaults.DEFAULT_CHAT_MODEL
    assert model_default["embed"] == defaults.DEFAULT_EMBED_MODEL
    assert model_default["transcribe"] == defaults.DEFAULT_TRANSCRIBE_MODEL
    from gemmacli.smoke import run_smoke

    assert inspect.signature(run_smoke).parameters["model"].default == defaults.DEFAULT_CHAT_MODEL
