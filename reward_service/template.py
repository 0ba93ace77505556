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


def encode_items(
    tokenizer: Tokenizer, template: InputTemplate, items: Sequence[Item]
) -> list[EncodedItem]:
    """Tokenize items without padding. ``encode_batch`` of tokenizers releases the GIL."""
    if not items:
        return []
    pairs = [item if isinstance(item, tuple) else None for item in items]
    firsts: list[str] = []
    seconds: list[str] = []
    for item, pair in zip(items, pairs, strict=True):
        if pair is None:
            firsts.append(str(item))
            seconds.append("")
            continue
        prompt, response = template.render(*pair)
        if not template.pair:
            prompt, response = prompt + template.joiner + response, ""
        firsts.append(prompt)
        seconds.append(response)
    encoded = tokenizer.encode_batch(firsts + seconds, add_special_tokens=False)
    first_enc, second_enc = encoded[: len(items)], encoded[len(items) :]
    out = []
    for pair, first, second in zip(pairs, first_enc, second_enc, strict=True):
        is_pair = pair is not None and template.pair
        budget = template.max_length - tokenizer.num_special_tokens_to_add(is_pair)
        out.append(_join(tokenizer, first, second if is_pair else None, budget))
    return out


def _join(
    tokenizer: Tokenizer, first: Encoding, second: Encoding | None, budget: int
) -> EncodedItem:
    n_first = len(first.ids)
    if second is None:
        # One text: keep its end, where the response (the part being judged) lives.
        keep = min(n_first, budget)
        truncated = keep < n_first
        if truncated:
            first.truncate(keep, direction="left")
        joined = tokenizer.post_process(first, None, add_special_tokens=True)
        return EncodedItem(joined.ids, joined.type_ids, truncated)
    n_second = len(second.ids)
    keep_first, keep_second = _fit(n_first, n_second, budget)
    if keep_first < n_first:
        first.truncate(keep_first, direction="left")
    if keep_second < n_second:
        second.truncate(keep_second, direction="right")
    joined = tokenizer.post_process(first, second, add_special_tokens=True)
    return EncodedItem(joined.ids, joined.type_ids, keep_first < n_first or keep_second < n_second)


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
