"""/v1/chat/completions wire types: the request converts itself to neutral Messages and GenParams,
responses and stream chunks build themselves from Deltas and Completions."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from gemmacli.errors import InvalidParamError, MediaError, UnsupportedInputError
from gemmacli.media import MediaLimits, decode_audio, decode_image
from gemmacli.media_video import decode_video
from gemmacli.server.remote_media import RemoteMedia
from gemmacli.server.schema.common import Usage, decode_base64, decode_data_url, new_id, now
from gemmacli.server.schema.completions import (
    GenerationRequest,
    TokenCount,
    finish_reason,
    unsupported,
    wire_usage,
)
from gemmacli.server.schema.limits import RequestLimits, TextBudget, check_count
from gemmacli.server.schema.logprobs import ChatLogprobs
from gemmacli.server.schema.tools import (
    ToolCallIn,
    ToolCallOut,
    ToolCallPiece,
    ToolChoice,
    ToolDef,
    call_pieces,
    history_calls,
    tool_use,
)
from gemmacli.types import Completion, Delta, GenParams, Message, Part, TextPart, ToolUse
from gemmacli.types import Usage as NeutralUsage

# -- request


class MediaURL(Struct):
    url: str
    detail: str | None = None  # OpenAI's low/high/auto: the processor decides the resolution, so ignored


class TextContent(Struct, tag_field="type", tag="text"):
    text: str


class ImageContent(Struct, tag_field="type", tag="image_url"):
    image_url: MediaURL | str  # some clients send the URL bare


class InputAudio(Struct):
    data: str  # base64
    # OpenAI's wav and mp3, and the other containers soundfile reads; it sniffs the bytes itself, the name is checked
    format: Literal["wav", "mp3", "flac", "ogg"] | None = None


class AudioContent(Struct, tag_field="type", tag="input_audio"):
    input_audio: InputAudio


class AudioURLContent(Struct, tag_field="type", tag="audio_url"):
    """vLLM's extension for audio by URL; only data: URLs here, like images."""

    audio_url: MediaURL | str


class VideoURLContent(Struct, tag_field="type", tag="video_url"):
    """vLLM's video part: a data: URL, or an http(s) one where remote media is on."""

    video_url: MediaURL | str


ContentPart = TextContent | ImageContent | AudioContent | AudioURLContent | VideoURLContent
KINDS = {ImageContent: "image", AudioContent: "audio", AudioURLContent: "audio", VideoURLContent: "video"}


class ChatMessage(Struct, kw_only=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None  # accepted, ignored: Gemma's template has no participant names
    tool_calls: list[ToolCallIn] | None = None  # an assistant turn's calls
    tool_call_id: str | None = None  # a tool turn: the call it answers


class ChatCompletionRequest(GenerationRequest, kw_only=True):
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    max_completion_tokens: TokenCount | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None  # OpenAI's range
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: str | dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None  # audio *output*
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    chat_template_kwargs: dict[str, Any] | None = None  # vLLM's; enable_thinking is the one a template may take

    def check(self) -> None:
        super().check()
        if self.top_logprobs is not None and not self.logprobs:
            unsupported("top_logprobs", "top_logprobs needs logprobs: true")
        if self.functions:
            unsupported("functions", "functions is OpenAI's deprecated form of tools: send tools instead")
        if self.function_call not in (None, "none", "auto"):  # "auto" with no functions is a no-op
            unsupported("function_call", "function_call is OpenAI's deprecated form of tool_choice: send that")
        if self.audio is not None or any(m != "text" for m in self.modalities or ()):
            unsupported("modalities" if self.audio is None else "audio", "only text output is supported")
        for i, message in enumerate(self.messages):
            if message.role == "tool" and not message.tool_call_id:
                unsupported(f"messages[{i}].tool_call_id", "a tool message needs the tool_call_id it answers")
            if message.tool_calls and message.role != "assistant":
                unsupported(f"messages[{i}].tool_calls", "only assistant messages carry tool_calls")

    def check_reads(self, reads: set[str] | None, model: str) -> None:
        """Before any media is decoded: a part the model cannot take in is a 400 naming it."""
        for i, message in enumerate(self.messages):
            for j, part in enumerate(message.content if isinstance(message.content, list) else ()):
                kind = KINDS.get(type(part))
                if reads is not None and kind is not None and kind not in reads:
                    raise UnsupportedInputError(
                        f"model {model} cannot read {kind} (it takes {', '.join(sorted(reads))})",
                        param=f"messages[{i}].content[{j}]",
                    )

    def to_thinking(self) -> bool | None:
        """Whether the model should think before answering: chat_template_kwargs.enable_thinking, else any
        reasoning_effort but "none"; None leaves it to the model's template."""
        kwargs = self.chat_template_kwargs or {}
        if unknown := sorted(set(kwargs) - {"enable_thinking"}):
            unsupported(f"chat_template_kwargs.{unknown[0]}", "chat_template_kwargs takes enable_thinking only")
        if "enable_thinking" in kwargs:
            if not isinstance(kwargs["enable_thinking"], bool):
                unsupported("chat_template_kwargs.enable_thinking", "enable_thinking must be true or false")
            return kwargs["enable_thinking"]
        return None if self.reasoning_effort is None else self.reasoning_effort != "none"

    def to_tools(self) -> ToolUse | None:
        """The tools the model may call, checked; None when it is not to call any."""
        return tool_use(self.tools, self.tool_choice, self.parallel_tool_calls)

    def check_limits(self, limits: RequestLimits) -> TextBudget:
        """Counts messages, text, images, audio clips and videos before anything is decoded."""
        budget = super().check_limits(limits)
        check_count(self.messages, limits.max_messages, "messages", "messages")
        media: dict[str, list[str]] = {"image": [], "audio": [], "video": []}
        for i, message in enumerate(self.messages):
            param = f"messages[{i}].content"
            if isinstance(message.content, str):
                budget.add(len(message.content), param)
                continue
            budget.add(sum(len(p.text) for p in message.content or () if isinstance(p, TextContent)), param)
            for j, part in enumerate(message.content or ()):
                if kind := KINDS.get(type(part)):
                    media[kind].append(f"{param}[{j}]")
        for kind, limit, what in (
            ("image", limits.max_images, "images"),
            ("audio", limits.max_audio_clips, "audio clips"),
            ("video", limits.max_video_clips, "videos"),
        ):
            if len(media[kind]) > limit:
                _too_many(media[kind], limit, what)
        return budget

    def to_params(self) -> GenParams:
        params = super().to_params()
        # max_completion_tokens is OpenAI's newer name; when a client sends both, it is the one it means.
        max_tokens = self.max_completion_tokens or params.max_tokens
        return replace(params, max_tokens=max_tokens, logprobs=(self.top_logprobs or 0) if self.logprobs else None)

    @property
    def has_media(self) -> bool:
        """Decoding media costs real CPU: the route moves such requests off the event loop."""
        return any(
            not isinstance(p, TextContent) for m in self.messages if isinstance(m.content, list) for p in m.content
        )

    def to_messages(self, limits: MediaLimits, *, remote: RemoteMedia | None = None) -> list[Message]:
        """Blocking (media URLs may be fetched): the route runs it on a worker thread when there is media."""
        return [_message(m, f"messages[{i}]", limits, remote) for i, m in enumerate(self.messages)]


def _too_many(params: list[str], limit: int, what: str) -> None:
    """Names the first part over the limit, so a client can see where to cut."""
    raise InvalidParamError(f"the request holds {len(params)} {what}; the limit is {limit}", param=params[limit])


def _message(message: ChatMessage, param: str, limits: MediaLimits, remote: RemoteMedia | None) -> Message:
    role = "system" if message.role == "developer" else message.role  # developer is OpenAI's new name for system
    content = message.content
    if message.tool_calls or message.tool_call_id:
        calls = history_calls(message.tool_calls, param)
        return Message(role, _text(content, f"{param}.content"), calls, message.tool_call_id)
    if content is None:
        if role != "assistant":
            raise InvalidParamError(f"{param}.content is required for {message.role} messages", param=param)
        return Message(role, "")
    if isinstance(content, str):
        return Message(role, content)
    parts = [_part(p, f"{param}.content[{j}]", limits, remote) for j, p in enumerate(content)]
    if all(isinstance(p, TextPart) for p in parts):
        return Message(role, "\n".join(p.text for p in parts))  # text-only: one string, as most templates expect
    if role != "user":
        raise InvalidParamError(f"images, audio and video are only accepted in user messages ({param})", param=param)
    return Message(role, tuple(parts))


def _text(content: str | list[ContentPart] | None, param: str) -> str:
    """The text of a turn about tool calls (which carries no media)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not all(isinstance(p, TextContent) for p in content):
        raise InvalidParamError("tool calls and results carry text only", param=param)
    return "\n".join(p.text for p in content)


def _part(part: ContentPart, param: str, limits: MediaLimits, remote: RemoteMedia | None) -> Part:
    if isinstance(part, TextContent):
        return TextPart(part.text)
    try:
        if isinstance(part, ImageContent):
            param += ".image_url"
            data = _fetch(part.image_url, param, limits.max_image_bytes, remote, "image")
            return decode_image(data, limits, name=param)
        if isinstance(part, AudioContent):
            param += ".input_audio.data"
            data = decode_base64(part.input_audio.data, param=param, max_bytes=limits.max_audio_bytes)
            return decode_audio(data, limits, name=param)
        if isinstance(part, VideoURLContent):
            param += ".video_url"
            data = _fetch(part.video_url, param, limits.max_video_bytes, remote, "video")
            return decode_video(data, limits.max_video_frames, limits, name=param)
        param += ".audio_url"
        data = _fetch(part.audio_url, param, limits.max_audio_bytes, remote, "audio")
        return decode_audio(data, limits, name=param)
    except MediaError as exc:
        exc.param = exc.param or param
        raise


def _fetch(url: MediaURL | str, param: str, max_bytes: int, remote: RemoteMedia | None, kind: str) -> bytes:
    """Media bytes from a data: URL, or from any other URL through the SSRF-checked fetcher when it is on."""
    url = url if isinstance(url, str) else url.url
    if url[:5].lower() == "data:":
        return decode_data_url(url, param=param, max_bytes=max_bytes, kind=kind)
    if remote is None:
        raise MediaError(
            f"only data: URLs are accepted (data:{kind}/...;base64,...): this server does not fetch "
            "media URLs (gemmacli serve --allow-remote-media turns that on)",
            param=param,
        )
    return remote.fetch(url, max_bytes, param)


# -- response


class AssistantMessage(Struct, kw_only=True):
    role: str = "assistant"
    content: str | None  # null when the turn is only tool calls, as OpenAI sends it
    refusal: None = None
    tool_calls: list[ToolCallOut] | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET  # a thinking model's thoughts (vLLM's and DeepSeek's field)

    @classmethod
    def build(cls, completion: Completion) -> AssistantMessage:
        thought = completion.reasoning or UNSET
        if not completion.tool_calls:
            return cls(content=completion.text, reasoning_content=thought)
        calls = ToolCallOut.build(completion.tool_calls)
        return cls(content=completion.text or None, tool_calls=calls, reasoning_content=thought)


class ChatChoice(Struct):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: ChatLogprobs | None = None


class ChatCompletion(Struct, kw_only=True):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: None = None

    @classmethod
    def build(
        cls, model: str, completions: list[Completion], usage: NeutralUsage, logprobs: bool = False
    ) -> ChatCompletion:
        choices = [
            ChatChoice(
                i,
                AssistantMessage.build(c),
                finish_reason(c.finish_reason),
                ChatLogprobs.build(c.logprobs) if logprobs else None,
            )
            for i, c in enumerate(completions)
        ]
        return cls(id=new_id("chatcmpl"), created=now(), model=model, choices=choices, usage=wire_usage(usage))


class ChunkDelta(Struct):
    role: str | UnsetType = UNSET
    content: str | UnsetType = UNSET
    tool_calls: list[ToolCallPiece] | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET
    reasoning: str | UnsetType = UNSET  # the same thoughts under the name Ollama's clients read


class ChunkChoice(Struct):
    index: int
    delta: ChunkDelta
    finish_reason: str | None = None  # explicitly null until the last choice chunk
    logprobs: ChatLogprobs | None = None


class ChatCompletionChunk(Struct, kw_only=True):
    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | UnsetType | None = UNSET  # null on every chunk when include_usage, else absent
    system_fingerprint: None = None


class ChatChunks:
    """Turns deltas into OpenAI's chunk sequence; all chunks share one id and created time."""

    def __init__(self, model: str, include_usage: bool, choices: int = 1):
        self.choices = choices
        self.id = new_id("chatcmpl")
        self.created = now()
        self.model = model
        self.include_usage = include_usage
        self.calls: Counter[int] = Counter()  # tool calls each choice has streamed

    def _chunk(self, choices: list[ChunkChoice], usage: Any = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=usage if self.include_usage else UNSET,
        )

    def opening(self) -> list[ChatCompletionChunk]:
        """The role first, for every choice, as OpenAI sends it."""
        return [self._chunk([ChunkChoice(i, ChunkDelta(role="assistant", content=""))]) for i in range(self.choices)]

    def on_delta(self, index: int, delta: Delta) -> list[ChatCompletionChunk]:
        logprobs = ChatLogprobs.build(delta.logprobs) if delta.logprobs else None
        content = ChunkChoice(index, ChunkDelta(content=delta.text), logprobs=logprobs)
        chunks = [self._chunk([content])] if delta.text or logprobs else []
        if delta.reasoning:
            thought = ChunkDelta(reasoning_content=delta.reasoning, reasoning=delta.reasoning)
            chunks.insert(0, self._chunk([ChunkChoice(index, thought)]))
        for call in delta.tool_calls:
            pieces = call_pieces(call, self.calls[index])
            self.calls[index] += 1
            chunks += [self._chunk([ChunkChoice(index, ChunkDelta(tool_calls=[piece]))]) for piece in pieces]
        if delta.finish_reason is not None:
            # Like OpenAI, the finish reason rides on its own chunk with an empty delta.
            chunks.append(self._chunk([ChunkChoice(index, ChunkDelta(), finish_reason(delta.finish_reason))]))
        return chunks

    def closing(self, usage: NeutralUsage) -> list[ChatCompletionChunk]:
        return [self._chunk([], wire_usage(usage))] if self.include_usage else []
