"""What a training run leaves beside the Hugging Face weights, so export needs no extra flags.

``reward_config.json`` carries the input template, pad id and eval metrics; ``heldout.jsonl``
the held-out groups that export re-scores for its parity gate and normalization statistics.
Imports no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from reward_service.data.formats import Group, load_groups
from reward_service.template import InputTemplate, Item

REWARD_CONFIG = "reward_config.json"
HELDOUT = "heldout.jsonl"
TOKENIZER = "tokenizer.json"


class RewardCheckpointInfo(BaseModel):
    base_model: str
    template: InputTemplate
    pad_token_id: int
    data_format: str
    metrics: dict[str, float] = Field(default_factory=dict)
    kind: Literal["reward", "cost"] = "reward"


def heldout_record(group: Group) -> dict:
    """A group as a line of a format that reads back into the same group."""
    if group.rating is not None:
        return {"prompt": group.prompt, "response": group.responses[0], "score": group.rating}
    if group.safe is not None and len(group.responses) == 1:
        return {"prompt": group.prompt, "response": group.responses[0], "safe": group.safe[0]}
    if group.safe is not None:
        return {
            "prompt": group.prompt,
            "safer": group.responses[0],
            "less_safe": group.responses[1],
            "safer_is_safe": group.safe[0],
            "less_safe_is_safe": group.safe[1],
        }
    return {"prompt": group.prompt, "responses": list(group.responses)}


def write_info(folder: Path, info: RewardCheckpointInfo, heldout: list[Group]) -> None:
    (folder / REWARD_CONFIG).write_text(info.model_dump_json(indent=2) + "\n")
    with (folder / HELDOUT).open("w") as fh:
        for group in heldout:
            fh.write(json.dumps(heldout_record(group)) + "\n")


def read_info(folder: Path) -> RewardCheckpointInfo:
    path = Path(folder) / REWARD_CONFIG
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a reward-model checkpoint ({REWARD_CONFIG} missing); "
            "train one with `reward-service train`"
        )
    return RewardCheckpointInfo.model_validate_json(path.read_text())


def items_and_pairs(groups: list[Group]) -> tuple[list[Item], list[tuple[int, int]]]:
    """Flatten groups into items plus (better, worse) index pairs within each group."""
    items: list[Item] = []
    pairs: list[tuple[int, int]] = []
    for group in groups:
        start = len(items)
        items.extend((group.prompt, r) for r in group.responses)
        n = len(group.responses)
        pairs.extend((start + i, start + j) for i in range(n) for j in range(i + 1, n))
    return items, pairs


def load_heldout(folder: Path) -> list[Group]:
    path = Path(folder) / HELDOUT
    return load_groups(path)[1] if path.is_file() else []
