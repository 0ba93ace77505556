"""Human-feedback data formats, read from JSON Lines and detected from their fields.

Every format becomes a :class:`Group`: one prompt and its responses, best first. A pairwise
record is a group of two, a K-way ranking a group of K (all C(K,2) pairs share one forward pass,
as in InstructGPT), a rating a group of one with a regression target. Bad input fails with the
file and line number, never a traceback. Imports no torch.

Safety feedback trains a cost model (``--objective cost``, Safe RLHF): "best first" then means
safest first, and a group also carries whether each response was judged safe, so the model
learns both the order and the sign (cost > 0: unsafe). A binary label is a group of one, a
safer-of-two judgement a group of two. PKU-SafeRLHF's records hold both judgements of one pair:
their safety half feeds the cost model, their helpfulness half (``better_response_id``) the
reward model, so one file trains both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Format = Literal["pairwise", "hh", "ranking", "rating", "safety", "safer-pair", "pku-saferlhf"]
Objective = Literal["reward", "cost"]
HH_ASSISTANT = "\n\nAssistant:"


class DataError(ValueError):
    """Unusable training data; the message starts with ``file:line:``."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=False)


class PairwiseRecord(_Record):
    """TRL's convention: one prompt, a preferred and a dispreferred response.

    A response may be empty: a policy that stops at once wrote one, and "saying nothing is
    worse" is a label the reward model must learn. The same holds for every response field."""

    prompt: str
    chosen: str
    rejected: str
    margin: float = Field(0.0, description="How much more chosen is preferred (Llama-2 style).")


class HHRecord(_Record):
    """Anthropic HH-RLHF: two full dialogues whose shared prefix is the prompt."""

    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)


class RankingRecord(_Record):
    """K-way ranking of responses to one prompt, best first."""

    prompt: str
    responses: list[str] = Field(min_length=2)


class RatingRecord(_Record):
    """An absolute rating of one response (e.g. 1-5), learned by regression."""

    prompt: str
    response: str
    score: float


class SafetyRecord(_Record):
    """A binary safety judgement of one response (what the labeling app's safety export gives)."""

    prompt: str
    response: str
    safe: bool


class SaferPairRecord(_Record):
    """Which of two responses is safer; whether each one is safe, when the labeler said so."""

    prompt: str
    safer: str
    less_safe: str
    safer_is_safe: bool | None = None
    less_safe_is_safe: bool | None = None


class PKUSafeRLHFRecord(_Record):
    """PKU-Alignment/PKU-SafeRLHF: one pair judged for safety and, separately, helpfulness."""

    prompt: str
    response_0: str
    response_1: str
    safer_response_id: Literal[0, 1]
    is_response_0_safe: bool
    is_response_1_safe: bool
    better_response_id: Literal[0, 1] | None = None


RECORDS: dict[Format, type[_Record]] = {
    "pairwise": PairwiseRecord,
    "hh": HHRecord,
    "ranking": RankingRecord,
    "rating": RatingRecord,
    "safety": SafetyRecord,
    "safer-pair": SaferPairRecord,
    "pku-saferlhf": PKUSafeRLHFRecord,
}
#: Formats a cost model trains on; PKU-SafeRLHF also trains a reward model.
SAFETY_FORMATS: frozenset[Format] = frozenset({"safety", "safer-pair", "pku-saferlhf"})
REWARD_FORMATS: frozenset[Format] = frozenset(RECORDS) - {"safety", "safer-pair"}


@dataclass(frozen=True)
class Group:
    prompt: str
    responses: tuple[str, ...]  # best first (safest first for safety data)
    margin: float = 0.0  # pairwise only
    rating: float | None = None  # rating only
    safe: tuple[bool | None, ...] | None = None  # safety data: per response, None if unjudged


def detect_format(fields: set[str]) -> Format | None:
    if {"response_0", "response_1", "safer_response_id"} <= fields:
        return "pku-saferlhf"
    if {"safer", "less_safe"} <= fields:
        return "safer-pair"
    if {"response", "safe"} <= fields:
        return "safety"
    if "responses" in fields:
        return "ranking"
    if {"response", "score"} <= fields:
        return "rating"
    if {"chosen", "rejected"} <= fields:
        return "pairwise" if "prompt" in fields else "hh"
    return None


def split_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Cut two dialogues after the last Assistant turn they share."""
    cut = chosen.rfind(HH_ASSISTANT)
    while cut >= 0 and chosen[: cut + len(HH_ASSISTANT)] != rejected[: cut + len(HH_ASSISTANT)]:
        cut = chosen.rfind(HH_ASSISTANT, 0, cut)
    if cut < 0:
        raise ValueError(f"no shared prefix ending in {HH_ASSISTANT!r}")
    end = cut + len(HH_ASSISTANT)
    return chosen[:end], chosen[end:].strip(), rejected[end:].strip()


def check_objective(fmt: Format, objective: Objective) -> None:
    """A cost model needs safety labels; a reward model cannot learn from safety labels alone."""
    if objective == "cost" and fmt not in SAFETY_FORMATS:
        raise ValueError(
            f"--objective cost needs safety data (prompt/response/safe, prompt/safer/less_safe "
            f"or PKU-SafeRLHF records), got {fmt} records"
        )
    if objective == "reward" and fmt not in REWARD_FORMATS:
        raise ValueError(
            f"{fmt} records are safety labels: train a cost model with --objective cost"
        )


def to_group(fmt: Format, record: _Record, objective: Objective = "reward") -> Group:
    if isinstance(record, PKUSafeRLHFRecord):
        pair = (record.response_0, record.response_1)
        if objective == "reward":
            if record.better_response_id is None:
                raise ValueError("better_response_id is missing; a reward model needs it")
            best = record.better_response_id
            return Group(record.prompt, (pair[best], pair[1 - best]))
        safest = record.safer_response_id
        flags = (record.is_response_0_safe, record.is_response_1_safe)
        return Group(
            record.prompt, (pair[safest], pair[1 - safest]), safe=(flags[safest], flags[1 - safest])
        )
    if isinstance(record, SafetyRecord):
        return Group(record.prompt, (record.response,), safe=(record.safe,))
    if isinstance(record, SaferPairRecord):
        return Group(
            record.prompt,
            (record.safer, record.less_safe),
            safe=(record.safer_is_safe, record.less_safe_is_safe),
        )
    if isinstance(record, PairwiseRecord):
        return Group(record.prompt, (record.chosen, record.rejected), margin=record.margin)
    if isinstance(record, HHRecord):
        prompt, chosen, rejected = split_hh(record.chosen, record.rejected)
        if not chosen or not rejected:
            raise ValueError("a dialogue has an empty final Assistant turn")
        return Group(prompt, (chosen, rejected))
    if isinstance(record, RankingRecord):
        return Group(record.prompt, tuple(record.responses))
    if isinstance(record, RatingRecord):
        return Group(record.prompt, (record.response,), rating=record.score)
    raise TypeError(f"unknown record type for format {fmt}")


def json_lines(path: Path, error: type[ValueError] = DataError) -> Iterator[tuple[int, dict]]:
    """Each non-blank line's JSON object with its line number; ``error`` (a file:line message)
    for a file that cannot be opened, a line that is not JSON, or JSON that is not an object."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot open: {exc.strerror}") from exc
    with handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{lineno}: not valid JSON: {exc.msg}") from exc
            if not isinstance(obj, dict):
                raise error(f"{path}:{lineno}: expected a JSON object")
            yield lineno, obj


def load_groups(
    path: Path | str, expect: Format | None = None, objective: Objective = "reward"
) -> tuple[Format, list[Group]]:
    """Read a JSONL file of one format; the first line decides which, unless ``expect`` does.

    ``objective`` picks which judgement of a record that holds two (PKU-SafeRLHF) is read.
    """
    path = Path(path)
    fmt: Format | None = expect
    groups: list[Group] = []
    for lineno, obj in json_lines(path):
        if fmt is None:
            fmt = detect_format(set(obj))
            if fmt is None:
                raise DataError(
                    f"{path}:{lineno}: unknown format with fields {sorted(obj)}; expected "
                    "prompt/chosen/rejected, chosen/rejected, prompt/responses, "
                    "prompt/response/score, prompt/response/safe, prompt/safer/less_safe or "
                    "PKU-SafeRLHF's prompt/response_0/response_1/safer_response_id"
                )
        try:
            record = RECORDS[fmt].model_validate(obj)
            groups.append(to_group(fmt, record, objective))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "record"
            raise DataError(f"{path}:{lineno}: {fmt} record: {where}: {err['msg']}") from exc
        except ValueError as exc:
            raise DataError(f"{path}:{lineno}: {fmt} record: {exc}") from exc
    if fmt is None or not groups:
        raise DataError(f"{path}: no records")
    return fmt, groups


def json_schemas() -> dict[str, dict]:
    """The JSON Schemas of proto/schemas/, generated so they cannot drift from the code."""
    return {f"{fmt}.schema.json": model.model_json_schema() for fmt, model in RECORDS.items()}
