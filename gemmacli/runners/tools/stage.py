"""Tool calls at decode time: the grammar a sequence is held to, and the output stage that turns text into calls.

`ToolCallParser` sees the text every token adds, after the stop strings. With a constrained choice all of it
is calls. With "auto" it waits until the turn's start tells text from calls (pythonic: a turn of calls starts
with `[`; Hermes: calls may follow some text), passes text through as content and holds a call until it is
whole, then hands it over. Text held as a call that never parses goes out as content when the sequence ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from gemmacli.runners import grammar
from gemmacli.runners.tools import ToolFormat
from gemmacli.types import ToolCall, ToolUse


@dataclass(frozen=True)
class PromptTools:
    """What a prompt rendered with tools needs at decode time: the model's format and the request's tool use."""

    format: ToolFormat
    use: ToolUse

    def grammar(self, content: str | None) -> str | None:
        """Calls only, when the choice is constrained; calls or the response format's content, when both apply."""
        if self.use.constrained:
            return grammar.lark(self.format.lark(self.use), "tools")
        return None if content is None else grammar.either(self.format.lark(self.use), content)


class ToolCallParser:
    def __init__(self, tools: PromptTools):
        self.format, self.use = tools.format, tools.use
        self.state = "calls" if tools.use.constrained else "open"  # open: text or calls, not known yet
        self.buffer = ""
        self.made: list[ToolCall] = []
        self.taken = 0
        self.stopped = False

    @classmethod
    def build(cls, tools: PromptTools | None) -> ToolCallParser | None:
        return None if tools is None else cls(tools)

    def feed(self, text: str) -> str:
        if self.state == "text":
            return text
        self.buffer += text
        released = self._open() if self.state == "open" else ""
        if self.state == "calls" and (calls := self.format.parse(self.buffer, self.use)):
            self._add(calls)
            self.buffer = ""
            self.stopped = not self.format.anywhere  # a pythonic list of calls is the whole turn
        elif self.made and self.buffer.lstrip().startswith(self.format.ends):
            self.stopped, self.buffer = True, ""  # Gemma 4 opens the results' block: its calls are all made
        return released

    def flush(self) -> str:
        """At the end: calls, if what is held parses as calls; else the held text, as content."""
        held, self.buffer = self.buffer, ""
        if self.state == "calls" and held and (calls := self.format.parse(held, self.use)):
            self._add(calls)
            return ""
        return held

    def _add(self, calls: list[ToolCall]) -> None:
        self.made = (self.made + calls)[: None if self.use.parallel else 1]  # parallel_tool_calls: false keeps one

    def take(self) -> tuple[ToolCall, ...]:
        """The calls made whole since the last take."""
        calls, self.taken = tuple(self.made[self.taken :]), len(self.made)
        return calls

    def _open(self) -> str:
        """Decide whether the text so far begins a turn of calls; returns what is content for sure."""
        if self.format.anywhere:  # calls may follow text: release all but a possible opener's beginning
            starts = [at for opener in self.format.openers if (at := self.buffer.find(opener)) >= 0]
            cut = min(starts) if starts else len(self.buffer) - _partial(self.buffer, self.format.openers)
            if starts:
                self.state = "calls"
            released, self.buffer = self.buffer[:cut], self.buffer[cut:]
            return released
        head = self.buffer.lstrip()
        if any(head.startswith(opener) for opener in self.format.openers):
            self.state = "calls"
        elif head and not any(opener.startswith(head) for opener in self.format.openers):
            self.state, released, self.buffer = "text", self.buffer, ""
            return released
        return ""


def _partial(text: str, openers: tuple[str, ...]) -> int:
    """The length of the longest end of `text` that some opener begins with."""
    return max((n for opener in openers for n in range(1, len(opener)) if text.endswith(opener[:n])), default=0)
