"""Turn an OpenRLHF query back into the (prompt, response) pair a reward model was trained on.

OpenRLHF posts each sample as ``query``: the policy's prompt, rendered with its chat template,
followed by the generated response and its end-of-turn token, all decoded as one string; beside
it, ``prompts`` holds the rendered prompt. A reward model trained on plain (prompt, response)
pairs never saw that markup, so scoring the joined string as one text costs agreement with pair
scoring. Here the query is cut where its prompt ends, the markup of known chat templates
(ChatML, Llama 3) is removed, and the two halves go through the model's own template like any
pair. A conversation of several turns becomes the transcript form of the HH data format
(``\\n\\nHuman: … \\n\\nAssistant:``); system turns are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Markup = Literal["auto", "chatml", "llama3", "none"]


@dataclass(frozen=True)
class ChatMarkup:
    name: str
    marker: str  # present in any text that uses it
    turn: re.Pattern[str]  # groups: role, content
    assistant_header: re.Pattern[str]  # opens a generated turn


CHATML = ChatMarkup(
    "chatml",
    "<|im_start|>",
    re.compile(r"<\|im_start\|>(\w+)\n(.*?)(?:<\|im_end\|>|$)", re.S),
    re.compile(r"<\|im_start\|>assistant\n"),
)
LLAMA3 = ChatMarkup(
    "llama3",
    "<|start_header_id|>",
    re.compile(r"<\|start_header_id\|>(\w+)<\|end_header_id\|>\n*(.*?)(?:<\|eot_id\|>|$)", re.S),
    re.compile(r"<\|start_header_id\|>assistant<\|end_header_id\|>\n*"),
)
MARKUPS = {m.name: m for m in (CHATML, LLAMA3)}
END_OF_TURN = re.compile(r"<\|im_end\|>|<\|eot_id\|>|<\|endoftext\|>|<\|end_of_text\|>|</s>")


def detect(text: str, markup: Markup) -> ChatMarkup | None:
    if markup == "none":
        return None
    if markup != "auto":
        return MARKUPS[markup]
    return next((m for m in MARKUPS.values() if m.marker in text), None)


def plain_prompt(prompt: str, markup: ChatMarkup | None) -> str:
    """The prompt as training data writes it: the user's words, or an HH transcript."""
    if markup is None:
        return prompt
    turns = [(role, content.strip()) for role, content in markup.turn.findall(prompt)]
    turns = [(role, content) for role, content in turns if role != "system"]
    while turns and turns[-1] == ("assistant", ""):  # the generation prompt's open turn
        turns.pop()
    if not turns:
        return prompt
    if len(turns) == 1 and turns[0][0] == "user":
        return turns[0][1]
    names = {"user": "Human", "assistant": "Assistant"}
    transcript = "".join(f"\n\n{names.get(r, r.title())}: {c}" for r, c in turns)
    return transcript + "\n\nAssistant:"


def plain_response(response: str, markup: ChatMarkup | None) -> str:
    """The generated text alone: no assistant header before it, nothing after its turn ends."""
    if markup is not None:
        header = markup.assistant_header.match(response)
        if header:
            response = response[header.end() :]
    return END_OF_TURN.split(response, maxsplit=1)[0].strip()


def split_query(query: str, prompt: str, markup: Markup = "auto") -> tuple[str, str] | None:
    """(prompt, response) of one query, or None when it cannot be cut reliably.

    The query is cut after the first occurrence of its prompt (decoding may add a BOS token in
    front); failing that, before the last assistant turn of a known markup.
    """
    found = detect(query + prompt, markup)
    at = query.find(prompt) if prompt else -1
    if at >= 0:
        head, tail = prompt, query[at + len(prompt) :]
    elif found is not None:
        opens = list(found.assistant_header.finditer(query))
        if not opens:
            return None
        head, tail = query[: opens[-1].end()], query[opens[-1].end() :]
    else:
        return None
    return plain_prompt(head, found), plain_response(tail, found)
