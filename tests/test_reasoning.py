"""The reasoning splitter without a model: a thinking channel's text is reasoning, the rest the answer."""

from __future__ import annotations

from gemmacli.runners.reasoning import ReasoningSplitter

OPEN, CLOSE = 7, 8


class ChannelTokenizer:
    unk_token_id = 3

    def convert_tokens_to_ids(self, token: str) -> int:
        return {"<|channel>": OPEN, "<channel|>": CLOSE}.get(token, self.unk_token_id)


def split(pieces: list[tuple[int, str]], prompt_tail: tuple[int, ...] = ()) -> tuple[str, str, int]:
    splitter = ReasoningSplitter.build(ChannelTokenizer(), prompt_tail)
    answer, thought = "", ""
    for token, piece in pieces:
        a, t = splitter.route(token, piece)
        answer, thought = answer + a, thought + t
    splitter.flush()
    return answer, thought + splitter.take(), splitter.tokens


def test_the_channel_is_reasoning_without_its_label_and_the_rest_is_the_answer():
    pieces = [(OPEN, ""), (10, "thought"), (11, "\n"), (12, "Two and"), (13, " two."), (CLOSE, ""), (14, "Four.")]
    assert split(pieces) == ("Four.", "Two and two.", 6)


def test_a_label_split_across_tokens_and_an_unlabelled_channel():
    assert split([(OPEN, ""), (10, "tho"), (11, "ught\nHm"), (CLOSE, ""), (12, "Yes")]) == ("Yes", "Hm", 4)
    assert split([(OPEN, ""), (10, "Maybe"), (CLOSE, ""), (12, "No")]) == ("No", "Maybe", 3)


def test_an_end_mid_thought_keeps_the_thoughts_out_of_the_answer():
    assert split([(OPEN, ""), (10, "thought\nstill"), (11, " thinking")]) == ("", "still thinking", 3)


def test_a_prompt_that_opens_the_channel_starts_the_reply_in_its_thoughts():
    assert split([(10, "Hm"), (CLOSE, ""), (12, "Yes")], prompt_tail=(5, OPEN, 10, 11)) == ("Yes", "Hm", 2)
    assert split([(10, "Hm")], prompt_tail=(OPEN, 10, CLOSE, 11)) == ("Hm", "", 0)  # closed in the prompt


def test_no_channel_tokens_no_splitter():
    class Plain(ChannelTokenizer):
        def convert_tokens_to_ids(self, token: str) -> int:
            return self.unk_token_id

    assert ReasoningSplitter.build(Plain()) is None
