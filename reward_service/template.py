"""How a (prompt, response) pair becomes token ids: one definition for train, export and serve.

A reward model is only as good as the agreement between the text it was trained on and the text
it scores. Training, export parity checks, the HTTP service and the PPO client all call
:func:`encode_batch` with the :class:`InputTemplate` stored in the model's manifest, on the same
``tokenizer.json``, so the ids can never drift between stages. This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from tokenizers import Encoding, Tokenizer

Item = tuple[str, str] | str
"""A (prompt, response) pair, or one pre-joined text (OpenRLHF and KServe send those)."""


class InputTemplate(BaseModel):
    """Formats applied to the two halves before tokenization; stored in the manifest."""

    prompt_format: str = Field(
        "{prompt}", description="Python format string with a {prompt} field."
    )
    response_format: str = Field(
        "{response}", description="Python format string with a {response} field."
    )
    pair: bool = Field(
        True,
        description="Encode prompt and response as a tokenizer pair (BERT: [CLS] p [SEP] r [SEP],"
        " with segment ids); false joins them into one sequence.",
    )
    joiner: str = Field("\n", description="Text between prompt and response when pair is false.")
    max_length: int = Field(256, ge=8, description="Tokens per item, special tokens included.")
    chat_markup: Literal["auto", "chatml", "llama3", "none"] = Field(
        "auto",
        description="Chat markup that the service strips from texts a client joined with a "
        "policy's chat template (OpenRLHF's queries) before scoring them as (prompt, response); "
        "auto recognises ChatML and Llama 3.",
    )

    def render(self, prompt: str, response: str) -> tuple[str, str]:
        return (
            self.prompt_format.format(prompt=prompt),
            self.response_format.format(response=response),
        )


@dataclass(frozen=True)
class EncodedBatch:
    """Right-padded int64 arrays ready for any backend, plus per-item bookkeeping."""

    input_ids: np.ndarray  # (B, T)
    attention_mask: np.ndarray  # (B, T)
    token_type_ids: np.ndarray  # (B, T)
    lengths: np.ndarray  # (B,) real tokens per item
    truncated: np.ndarray  # (B,) bool

    def feeds(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The subset of arrays a model declares as inputs (decoders take no token_type_ids)."""
        return {name: getattr(self, name) for name in names}


@dataclass(frozen=True)
class EncodedItem:
    """One item's ids before padding: what the serving batcher queues."""

    ids: list[int]
    type_ids: list[int]
    truncated: bool


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load ``tokenizer.json`` with its own padding and truncation switched off.

    Many shipped files pad every text to a fixed width (MiniLM's pads to 128); padding and
    truncation belong to this module, which pads per batch and truncates per the template.
    """
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _fit(prompt_len: int, response_len: int, budget: int) -> tuple[int, int]:
    """Split a token budget: the response keeps at least half, the prompt keeps its tail.

    The response is what is being judged, so it is cut last; the prompt loses its oldest tokens
    first, since the most recent context matters most to the judgement.
    """
    if prompt_len + response_len <= budget:
        return prompt_len, response_len
    response_keep = min(response_len, budget - min(prompt_len, budget // 2))
    return min(prompt_len, budget - response_keep), response_keep


CHARS_PER_TOKEN = 8
"""Characters read per token of budget from the side a long text keeps (see :func:`window`)."""

WINDOW_SLACK_TOKENS = 32
"""Tokens a window must yield beyond the budget for its cut edge to be out of the kept span."""

ENCODE_CHUNK = 64
"""Items tokenized per ``encode_batch`` call: bounds the short-lived per-token objects."""


def window(text: str, budget: int, keep: Literal["start", "end"]) -> tuple[str, bool]:
    """The part of ``text`` a budget of tokens can use, and whether anything was cut.

    Tokenizing a 16,000-character text to keep 256 of its tokens costs memory and time for
    tokens that are then thrown away, so each side is first cut to ``budget * CHARS_PER_TOKEN``
    characters on the side truncation drops anyway. English runs at about 4 characters a token,
    so the window holds about twice the budget and the word cut at its edge lies beyond the
    kept tokens; :func:`encode_items` re-reads a whole text when its window turns out sparser.
    """
    limit = budget * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text, False
    return (text[:limit] if keep == "start" else text[-limit:]), True


def encode_items(
    tokenizer: Tokenizer, template: InputTemplate, items: Sequence[Item]
) -> list[EncodedItem]:
    """Tokenize items without padding. ``encode_batch`` of tokenizers releases the GIL."""
    out: list[EncodedItem] = []
    for start in range(0, len(items), ENCODE_CHUNK):
        out.extend(_encode_chunk(tokenizer, template, items[start : start + ENCODE_CHUNK]))
    return out


def _sides(template: InputTemplate, item: Item) -> tuple[str, str | None]:
    """The text whose end is kept, and the text whose start is kept (None: a single text)."""
    if not isinstance(item, tuple):
        return str(item), None
    prompt, response = template.render(*item)
    if not template.pair:
        return prompt + template.joiner + response, None
    return prompt, response


def _encode_chunk(
    tokenizer: Tokenizer, template: InputTemplate, items: Sequence[Item]
) -> list[EncodedItem]:
    sides = [_sides(template, item) for item in items]
    budgets = [
        template.max_length - tokenizer.num_special_tokens_to_add(second is not None)
        for _, second in sides
    ]
    firsts = [window(first, b, "end") for (first, _), b in zip(sides, budgets, strict=True)]
    seconds = [
        window(second or "", b, "start") for (_, second), b in zip(sides, budgets, strict=True)
    ]
    encoded = tokenizer.encode_batch(
        [text for text, _ in firsts] + [text for text, _ in seconds], add_special_tokens=False
    )
    first_enc, second_enc = encoded[: len(items)], encoded[len(items) :]
    out = []
    for i, (first, second) in enumerate(sides):
        budget = budgets[i]
        first_e, cut = _unless_sparse(tokenizer, first_enc[i], firsts[i][1], first, budget)
        second_e = None
        if second is not None:
            second_e, cut_second = _unless_sparse(
                tokenizer, second_enc[i], seconds[i][1], second, budget
            )
            cut = cut or cut_second
        out.append(_join(tokenizer, first_e, second_e, budget, cut))
    return out


def _unless_sparse(
    tokenizer: Tokenizer, encoding: Encoding, was_cut: bool, text: str, budget: int
) -> tuple[Encoding, bool]:
    """A cut window that gave too few tokens (long runs of spaces, say) is read whole instead,
    so the tokens kept never depend on where the window happened to cut."""
    if was_cut and len(encoding.ids) < budget + WINDOW_SLACK_TOKENS:
        return tokenizer.encode(text, add_special_tokens=False), False
    return encoding, was_cut


def _join(
    tokenizer: Tokenizer,
    first: Encoding,
    second: Encoding | None,
    budget: int,
    cut: bool,
) -> EncodedItem:
    n_first = len(first.ids)
    if second is None:
        # One text: keep its end, where the response (the part being judged) lives.
        keep = min(n_first, budget)
        if keep < n_first:
            first.truncate(keep, direction="left")
        joined = tokenizer.post_process(first, None, add_special_tokens=True)
        return EncodedItem(joined.ids, joined.type_ids, cut or keep < n_first)
    n_second = len(second.ids)
    keep_first, keep_second = _fit(n_first, n_second, budget)
    if keep_first < n_first:
        first.truncate(keep_first, direction="left")
    if keep_second < n_second:
        second.truncate(keep_second, direction="right")
    joined = tokenizer.post_process(first, second, add_special_tokens=True)
    truncated = cut or keep_first < n_first or keep_second < n_second
    return EncodedItem(joined.ids, joined.type_ids, truncated)


def pad(items: Sequence[EncodedItem], pad_id: int) -> EncodedBatch:
    """Right-pad a list of encoded items into one batch, as wide as its longest item."""
    lengths = np.array([len(item.ids) for item in items], dtype=np.int64)
    width = int(lengths.max()) if len(items) else 0
    ids = np.full((len(items), width), pad_id, dtype=np.int64)
    types = np.zeros((len(items), width), dtype=np.int64)
    mask = np.zeros((len(items), width), dtype=np.int64)
    for row, item in enumerate(items):
        n = len(item.ids)
        ids[row, :n] = item.ids
        types[row, :n] = item.type_ids
        mask[row, :n] = 1
    truncated = np.array([item.truncated for item in items], dtype=bool)
    return EncodedBatch(ids, mask, types, lengths, truncated)


def encode_batch(
    tokenizer: Tokenizer, template: InputTemplate, items: Sequence[Item], pad_id: int
) -> EncodedBatch:
    """Tokenize and pad in one call: the path used outside the serving batcher."""
    return pad(encode_items(tokenizer, template, items), pad_id)
