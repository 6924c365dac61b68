"""chat, embed and transcribe: run one model once, print the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gemmacli.cli.app import app
from gemmacli.cli.common import load_runner, read_prompt
from gemmacli.cli.options import (
    DeviceOpt,
    DType,
    DTypeOpt,
    JsonOpt,
    MultiGpuOpt,
    QuietOpt,
    model_opt,
)
from gemmacli.cli.ui import emit, reporting, stderr, stdout
from gemmacli.errors import GemmacliError, InvalidParamError, ModelUnavailableError
from gemmacli.models.defaults import DEFAULT_CHAT_MODEL, DEFAULT_EMBED_MODEL, DEFAULT_TRANSCRIBE_MODEL
from gemmacli.runners import grammar
from gemmacli.runners.tools import check_tools, read_tools
from gemmacli.types import GenParams, Message, TextPart, ToolCall, ToolUse


@app.command(
    epilog="""[b]Examples[/]\n
  gemmacli chat "Write a haiku about the sea"\n
  gemmacli chat photo.jpg "What is in this picture?" -m gemma-3-4b-it\n
  gemmacli chat meeting.wav "Summarise this" -m gemma-4-e4b-it\n
  cat notes.txt | gemmacli chat - -s "Summarise in three bullets" --max-tokens 200\n
  gemmacli chat --raw "Monday, Tuesday," --temperature 0 --max-tokens 8\n
  gemmacli chat "Weather in Paris?" --tools tools.json --tool-choice required\n
  gemmacli chat "A cat, as JSON" --schema pet.schema.json"""
)
def chat(
    inputs: Annotated[list[str], typer.Argument(help="Image, audio and video files, then the prompt ('-': stdin).")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help=f"chat model: alias, Hub id, s3:// or gs:// URL, folder or GGUF. Default: {DEFAULT_CHAT_MODEL}; "
            "with images, audio or video, the smallest current model that reads them.",
            envvar="GEMMACLI_CHAT_MODEL",
            show_default=False,
        ),
    ] = None,
    system: Annotated[str | None, typer.Option("--system", "-s", help="System prompt.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens to generate.", min=1)] = None,
    temperature: Annotated[float | None, typer.Option(help="0 = greedy. Default: the model's.", min=0)] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling mass.", min=0, max=1)] = None,
    top_k: Annotated[int | None, typer.Option(help="Sample from the k likeliest tokens (0 = off).", min=0)] = None,
    min_p: Annotated[float | None, typer.Option(help="Drop tokens below min_p x the top one.", min=0, max=1)] = None,
    repetition_penalty: Annotated[float | None, typer.Option(help="> 1 discourages repeats.", min=0.01)] = None,
    frequency_penalty: Annotated[float | None, typer.Option(min=-2, max=2)] = None,
    presence_penalty: Annotated[float | None, typer.Option(min=-2, max=2)] = None,
    stop: Annotated[list[str] | None, typer.Option("--stop", help="Stop before this text (repeatable).")] = None,
    seed: Annotated[int | None, typer.Option(help="Make sampling repeatable.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Complete the prompt as-is, without the chat template.")] = False,
    tools: Annotated[
        Path | None, typer.Option("--tools", help="A JSON file of OpenAI tool definitions; calls print as JSON.")
    ] = None,
    tool_choice: Annotated[
        str, typer.Option(help="auto, required, none, or the name of the tool to call.", show_default=True)
    ] = "auto",
    schema: Annotated[
        Path | None, typer.Option("--schema", help="A JSON Schema file: the answer is JSON valid against it.")
    ] = None,
    think: Annotated[
        bool | None,
        typer.Option(
            "--think/--no-think", help="Thinking models: think first (thoughts dimmed on stderr).", show_default=False
        ),
    ] = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = "auto",
    dtype: DTypeOpt = DType.auto,
    multi_gpu: MultiGpuOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Chat with a Gemma model about text, images, audio and video; the answer streams to stdout."""
    from gemmacli.media import load_media, media_kind

    *media, prompt = inputs
    prompt = read_prompt(prompt)
    parts = [load_media(p) for p in media]  # decoded before the model loads: bad files fail fast
    if raw and (parts or system or tools):
        raise GemmacliError("--raw completes plain text: it takes no media, no --system and no --tools")
    tool_use = _tool_use(tools, tool_choice)  # checked before the model loads, like the media
    model = _chat_model(model, {"text", *map(media_kind, parts)}, quiet)
    params = GenParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        frequency_penalty=frequency_penalty,
        presence_penalty=presence_penalty,
        stop=tuple(stop or ()),
        seed=seed,
        grammar=grammar.json_schema(_read_json(schema, "--schema"), "--schema") if schema else None,
    )
    runner = load_runner(model, "chat", device=device, dtype=dtype, multi_gpu=multi_gpu, quiet=quiet)
    if raw:
        deltas = runner.stream_text(prompt, params)
    else:
        messages = [Message("system", system)] if system else []
        content = (*parts, TextPart(prompt)) if parts else prompt
        deltas = runner.stream([*messages, Message("user", content)], params, tool_use, thinking=think)
    _print_stream(deltas, json_out=json_out, model=runner.name)


def _chat_model(named: str | None, inputs: set[str], quiet: bool) -> str:
    """The model to load: the one named, if it reads `inputs` (as far as the catalog knows); else the default
    for them, fetched now if it is not here, after one line saying what and how big."""
    from gemmacli.cli.common import quiet_libraries
    from gemmacli.models import choose
    from gemmacli.models.listing import list_models
    from gemmacli.models.loader import ModelLoader

    loader = ModelLoader()
    if named is not None:
        choose.check_reads(loader.catalog.get(named), loader.catalog, inputs)
        return named
    choice = choose.default_chat_model(loader.catalog, inputs)
    if isinstance(choice, str):
        return choice
    rows = {row["name"]: row for row in list_models(loader.catalog, loader.paths)}
    if rows.get(choice.name, {}).get("status") != "ready":
        if not quiet:
            stderr.print(choose.announce(choice, inputs))
        quiet_libraries()
        try:
            with reporting(f"downloading {choice.name}", quiet=quiet) as report:
                loader.prepare(choice.name, task="chat", report=report)
        except ModelUnavailableError as exc:
            ready = [n for n, r in rows.items() if r["status"] == "ready" and r["task"] == "chat"]
            readers = [n for n in ready if inputs <= set(rows[n]["modalities"])]
            raise choose.unavailable(choice, inputs, readers, exc.message) from None
    return choice.name


def _tool_use(path: Path | None, choice: str) -> ToolUse | None:
    if path is None:
        if choice != "auto":
            raise GemmacliError("--tool-choice needs --tools")
        return None
    use = ToolUse(read_tools(_read_json(path, "--tools"), "--tools"), choice)
    try:
        check_tools(use, "--tools")
    except InvalidParamError as exc:
        raise GemmacliError(f"{path}: {exc.message}") from None
    return use if choice != "none" else None


def _read_json(path: Path, option: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GemmacliError(f"{option}: cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GemmacliError(f"{option}: {path} is not JSON: {exc}") from None


def _print_stream(deltas, *, json_out: bool, model: str) -> None:
    text, calls, thoughts = [], [], []
    for delta in deltas:
        text.append(delta.text)
        calls.extend(delta.tool_calls)
        thoughts.append(delta.reasoning)
        if not json_out and delta.reasoning:  # thoughts beside the answer, never in what a pipe reads
            stderr.print(delta.reasoning, end="", style="dim", markup=False)
        if not json_out and delta.text:
            emit(delta.text, end="")
        if delta.finish_reason is not None:
            usage = delta.usage
            if json_out:
                result = {
                    "model": model,
                    "text": "".join(text),
                    "reasoning": "".join(thoughts),
                    "tool_calls": [_call_json(c) for c in calls],
                    "finish_reason": delta.finish_reason,
                    "usage": {
                        "prompt_tokens": usage.prompt_tokens,
                        "completion_tokens": usage.completion_tokens,
                        "total_tokens": usage.total_tokens,
                        "reasoning_tokens": usage.reasoning_tokens,
                    },
                }
                emit(json.dumps(result, ensure_ascii=False))
            elif calls:  # the calls as OpenAI spells them, ready for a script to run
                emit(json.dumps([_call_json(c) for c in calls], ensure_ascii=False))
            else:
                emit("")


def _call_json(call: ToolCall) -> dict:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


@app.command(
    epilog="""[b]Examples[/]\n
  gemmacli embed "A cat sits on the mat." "A kitten rests on a rug."\n
  gemmacli embed --file sentences.txt --dimensions 128 > vectors.json\n
  gemmacli embed "hello" "hi" "stocks fell" --table"""
)
def embed(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to embed.", show_default=False)] = None,
    model: Annotated[str, model_opt(DEFAULT_EMBED_MODEL, "embed")] = DEFAULT_EMBED_MODEL,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="One text per line ('-' = stdin).")] = None,
    dimensions: Annotated[int | None, typer.Option(help="Keep the first N dimensions (renormalised).", min=1)] = None,
    table: Annotated[bool, typer.Option("--table", help="A summary table and similarities instead of JSON.")] = False,
    device: DeviceOpt = "auto",
    dtype: DTypeOpt = DType.auto,
    quiet: QuietOpt = False,
) -> None:
    """Embed texts; prints JSON vectors (unit length) on stdout."""
    from gemmacli.cli.render import embeddings_json, embeddings_table

    inputs = list(texts or []) + (_read_lines(file) if file else [])
    if not inputs:
        raise typer.BadParameter("give at least one TEXT or --file", param_hint="TEXT")
    runner = load_runner(model, "embed", device=device, dtype=dtype, quiet=quiet)
    result = runner.embed(inputs, dimensions=dimensions)
    if table:
        stdout.print(embeddings_table(inputs, result))
    else:
        emit(json.dumps(embeddings_json(runner.name, inputs, result)))


def _read_lines(file: Path) -> list[str]:
    from gemmacli.media import read_file

    raw = read_prompt("-") if str(file) == "-" else read_file(file, "text").decode("utf-8", errors="replace")
    return [line for line in raw.splitlines() if line.strip()]


@app.command(
    epilog="""[b]Examples[/]\n
  gemmacli transcribe meeting.wav\n
  gemmacli transcribe talk.flac --format srt > talk.srt\n
  gemmacli transcribe interview.wav --timestamps word --format verbose_json\n
  gemmacli transcribe rede.wav -m whisper-small --language de --translate"""
)
def transcribe(
    audio: Annotated[Path, typer.Argument(help="Audio file (WAV, FLAC, OGG, MP3).", show_default=False)],
    model: Annotated[str, model_opt(DEFAULT_TRANSCRIBE_MODEL, "transcribe")] = DEFAULT_TRANSCRIBE_MODEL,
    fmt: Annotated[str, typer.Option("--format", help="json, text, srt, vtt or verbose_json.")] = "text",
    language: Annotated[str | None, typer.Option(help="Spoken language (ISO 639-1), default: detect.")] = None,
    translate: Annotated[bool, typer.Option("--translate", help="Translate into English.")] = False,
    timestamps: Annotated[str | None, typer.Option(help="segment or word.", show_default=False)] = None,
    prompt: Annotated[str | None, typer.Option(help="Text to guide spelling and style.")] = None,
    temperature: Annotated[float, typer.Option(help="0 = deterministic decoding.", min=0, max=1)] = 0.0,
    device: DeviceOpt = "auto",
    dtype: DTypeOpt = DType.auto,
    quiet: QuietOpt = False,
) -> None:
    """Transcribe (or translate) speech into text or subtitles."""
    from gemmacli.media import load_audio
    from gemmacli.transcript_formats import FORMATS, render
    from gemmacli.types import TranscribeOptions

    if fmt not in FORMATS:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--format")
    if timestamps not in (None, "segment", "word"):
        raise typer.BadParameter("choose segment or word", param_hint="--timestamps")
    if fmt in ("srt", "vtt", "verbose_json") and timestamps is None:
        timestamps = "segment"  # subtitles are made of timed segments
    samples = load_audio(audio)
    runner = load_runner(model, "transcribe", device=device, dtype=dtype, quiet=quiet)
    options = TranscribeOptions(language, translate, timestamps, prompt, temperature)
    transcript = runner.transcribe(samples, options)
    emit(render(transcript, fmt, task="translate" if translate else "transcribe"), end="")
