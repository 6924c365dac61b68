"""download, import, models, rm: getting models onto the machine and seeing what is there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gemmacli.cli.app import app
from gemmacli.cli.common import quiet_libraries
from gemmacli.cli.options import JsonOpt, QuietOpt
from gemmacli.cli.ps import ApiKeyOpt, server_get, server_url
from gemmacli.cli.ui import emit, error, reporting, stderr, stdout
from gemmacli.errors import GemmacliError


def _loader():
    from gemmacli.models.loader import ModelLoader

    return ModelLoader()


@app.command(
    epilog="""[b]Examples[/]\n
  gemmacli download gemma-3-4b-it whisper-large-v3-turbo\n
  gemmacli download google/gemma-3-12b-it --revision main\n
  gemmacli download google/gemma-3-1b-it --local-dir ./gemma-1b --include '*.json' --include '*.safetensors'\n
  HF_TOKEN=hf_xxx gemmacli download google/gemma-3-27b-it   # gated models need an accepted licence\n
  gemmacli download s3://my-bucket/models/gemma-3-1b-it     # again later: fetches only changed files\n
  gemmacli download gs://my-bucket/whisper-small ./my-finetune ./model.gguf"""
)
def download(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Catalog aliases, Hub repo ids, s3:// or gs:// URLs, local folders or GGUF files.", show_default=False
        ),
    ],
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit to fetch.")] = None,
    include: Annotated[list[str] | None, typer.Option(help="Only files matching this glob (repeatable).")] = None,
    local_dir: Annotated[Path | None, typer.Option(help="Put the files here instead of the HF cache.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Fetch models ahead of time (for CI and air-gapped machines). Exit 1 if any failed."""
    from gemmacli.models import hub, objstore
    from gemmacli.models.resolve import materialize, resolve, task_of

    loader = _loader()
    quiet_libraries()
    failed = 0
    for name in models:
        try:
            ref = resolve(name, loader.catalog, loader.paths)
            with reporting(f"fetching {ref.name}", quiet=quiet) as report:
                if revision or include or local_dir:
                    if not ref.repo_id:
                        raise GemmacliError(f"{name} is not on the Hub: --revision/--include/--local-dir do not apply")
                    folder = hub.download(
                        ref.repo_id,
                        revision=revision,
                        include=include,
                        local_dir=local_dir,
                        tqdm_class=report.tqdm_class,
                    )
                elif ref.url is not None:  # always list the bucket: a changed file is fetched again
                    fetched = objstore.fetch(ref.url, loader.paths.models_dir, report)
                    folder = fetched.path
                else:
                    folder = materialize(ref, loader.paths, report)
                if ref.path is not None:
                    task_of(ref, folder)  # a local folder that holds no model fails now, not at its first use
            if ref.url is not None and not quiet:
                stderr.print(fetched.summary(ref.url), markup=False)
            emit(f"{ref.name}\t{folder}")
        except GemmacliError as exc:
            failed += 1
            error(f"{name}: {exc.message}")
    if failed:
        raise typer.Exit(1)


@app.command(
    "import",
    epilog="""[b]Examples[/]\n
  gemmacli import gemma-3-270m-it-Q8_0.gguf --name gemma-270m-it\n
  gemmacli import ~/models/faster-whisper-small.en --name whisper-small.en\n
  gemmacli chat -m gemma-270m-it "Hello\"""",
)
def import_(
    source: Annotated[Path, typer.Argument(help="A GGUF file or a CTranslate2 Whisper folder.", show_default=False)],
    name: Annotated[str | None, typer.Option(help="Name to use it by (default: from the file name).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Convert a GGUF file or a faster-whisper folder into a cached model that loads in under a second."""
    from gemmacli.models.imports import import_path

    paths = _loader().paths
    quiet_libraries()
    with reporting(f"importing {source.name}", quiet=quiet) as report:
        model = import_path(source, paths.models_dir, name, report)
    emit(f"{model.name}\t{model.task}\t{model.path}")


@app.command(
    epilog="""[b]Examples[/]\n
  gemmacli models\n
  gemmacli models --json | jq '.[] | select(.status == "ready") | .name'\n
  gemmacli models --url http://127.0.0.1:8000   [dim]# what a running server serves (loaded, available)[/]"""
)
def models(
    json_out: JsonOpt = False,
    url: Annotated[str | None, typer.Option(help="Ask this running server instead.", show_default=False)] = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """List catalog models and what is already on this machine (ready, demo = bundled, download = from the Hub)."""
    from gemmacli.cli.render import models_table
    from gemmacli.models.listing import list_models

    if url is not None:
        rows = [_served_row(card) for card in server_get(server_url(url), "/v1/models", api_key)["data"]]
    else:
        loader = _loader()
        rows = list_models(loader.catalog, loader.paths)
    if json_out:
        emit(json.dumps(rows, indent=2))
    else:
        stdout.print(models_table(rows))


def _served_row(card: dict) -> dict:
    """A /v1/models card as a `models` row; status is loaded, loading or available (loads on first use)."""
    source = "server" if card.get("owned_by") == "gemmacli" else str(card.get("owned_by", ""))
    return {
        "name": card["id"],
        "task": card.get("task", ""),
        "modalities": card.get("modalities", []),
        "status": card.get("status", "loaded"),
        "source": source,
        "description": "",
    }


@app.command(epilog="[b]Example[/]\n\n  gemmacli rm gemma-270m-it")
def rm(name: Annotated[str, typer.Argument(help="An imported model's name.", show_default=False)]) -> None:
    """Remove an imported model from the local store."""
    from gemmacli.models import store

    if not store.remove(_loader().paths.models_dir, name):
        raise GemmacliError(f"no imported model named {name!r}; `gemmacli models` lists them")
    emit(f"removed {name}")
