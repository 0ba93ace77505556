"""Safety feedback formats: detection, what each becomes, and file:line on malformed lines."""

from __future__ import annotations

import json

import pytest

from reward_service.checkpoint import heldout_record
from reward_service.data.formats import (
    DataError,
    check_objective,
    detect_format,
    load_groups,
)

PKU = {
    "prompt": "p",
    "response_0": "calm answer",
    "response_1": "rude answer",
    "safer_response_id": 0,
    "is_response_0_safe": True,
    "is_response_1_safe": False,
    "better_response_id": 1,
    "response_0_harm_category": {},  # the real data set carries more fields; they are ignored
}


def write(tmp_path, lines, name="s.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_detects_each_safety_format():
    assert detect_format({"prompt", "response", "safe"}) == "safety"
    assert detect_format({"prompt", "safer", "less_safe"}) == "safer-pair"
    assert detect_format(set(PKU)) == "pku-saferlhf"
    assert detect_format({"prompt", "response", "score"}) == "rating"  # unchanged


def test_binary_labels_are_groups_of_one_with_their_sign(tmp_path):
    path = write(
        tmp_path,
        [
            {"prompt": "p", "response": "fine", "safe": True, "annotator": "ann"},
            {"prompt": "p", "response": "awful", "safe": False},
        ],
    )
    fmt, groups = load_groups(path)
    assert fmt == "safety"
    assert [(g.responses, g.safe) for g in groups] == [(("fine",), (True,)), (("awful",), (False,))]


def test_safer_pairs_put_the_safer_first_with_optional_signs(tmp_path):
    path = write(
        tmp_path,
        [
            {"prompt": "p", "safer": "a", "less_safe": "b"},
            {
                "prompt": "p",
                "safer": "c",
                "less_safe": "d",
                "safer_is_safe": True,
                "less_safe_is_safe": False,
            },
        ],
    )
    fmt, groups = load_groups(path)
    assert fmt == "safer-pair"
    assert groups[0].responses == ("a", "b") and groups[0].safe == (None, None)
    assert groups[1].responses == ("c", "d") and groups[1].safe == (True, False)


def test_pku_feeds_the_cost_model_and_the_reward_model_from_one_file(tmp_path):
    path = write(tmp_path, [PKU, {**PKU, "safer_response_id": 1, "better_response_id": 0}])
    fmt, cost_groups = load_groups(path, objective="cost")
    assert fmt == "pku-saferlhf"
    assert cost_groups[0].responses == ("calm answer", "rude answer")
    assert cost_groups[0].safe == (True, False)
    assert cost_groups[1].responses == ("rude answer", "calm answer")  # safer first
    assert cost_groups[1].safe == (False, True)  # flags follow their responses
    _, reward_groups = load_groups(path, objective="reward")
    assert reward_groups[0].responses == ("rude answer", "calm answer")  # better first
    assert reward_groups[0].safe is None
    assert reward_groups[1].responses == ("calm answer", "rude answer")


def test_objective_and_format_must_fit():
    check_objective("pku-saferlhf", "cost")
    check_objective("pku-saferlhf", "reward")
    with pytest.raises(ValueError, match="--objective cost needs safety data"):
        check_objective("pairwise", "cost")
    with pytest.raises(ValueError, match="train a cost model with --objective cost"):
        check_objective("safety", "reward")


@pytest.mark.parametrize(
    "group_lines",
    [
        [{"prompt": "p", "response": "r", "safe": False}],
        [{"prompt": "p", "safer": "a", "less_safe": "b", "safer_is_safe": True}],
        [PKU],
    ],
)
def test_heldout_records_read_back_into_the_same_groups(tmp_path, group_lines):
    _, groups = load_groups(write(tmp_path, group_lines), objective="cost")
    again = write(tmp_path, [heldout_record(g) for g in groups], name="heldout.jsonl")
    assert load_groups(again)[1] == groups


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [{"prompt": "p", "response": "r", "safe": True}, "{oops"],
            r"s\.jsonl:2: not valid JSON",
        ),
        ([{"prompt": "p", "response": "r", "safe": "perhaps"}], r"s\.jsonl:1: safety record: safe"),
        ([{"prompt": "p", "response": None, "safe": True}], r"s\.jsonl:1: safety record: response"),
        (
            [{"prompt": "p", "response": "r", "safe": True}, {"prompt": "p", "response": "r"}],
            r"s\.jsonl:2: safety record: safe: Field required",
        ),
        (
            [{"prompt": "p", "safer": "a", "less_safe": "b", "less_safe_is_safe": "x"}],
            r"s\.jsonl:1: safer-pair record: less_safe_is_safe",
        ),
        ([{"prompt": "p", "safer": "a", "less_safe": 5}], r"s\.jsonl:1: safer-pair record"),
        ([PKU, {**PKU, "safer_response_id": 2}], r"s\.jsonl:2: pku-saferlhf record: safer_resp"),
        (
            [PKU, {k: v for k, v in PKU.items() if k != "is_response_1_safe"}],
            r"s\.jsonl:2: pku-saferlhf record: is_response_1_safe: Field required",
        ),
        ([{**PKU, "response_1": None}], r"s\.jsonl:1: pku-saferlhf record: response_1"),
    ],
)
def test_malformed_safety_lines_name_file_and_line(tmp_path, lines, message):
    with pytest.raises(DataError, match=message):
        load_groups(write(tmp_path, lines), objective="cost")


def test_pku_without_better_id_cannot_train_a_reward_model(tmp_path):
    record = {k: v for k, v in PKU.items() if k != "better_response_id"}
    assert load_groups(write(tmp_path, [record]), objective="cost")[1]
    with pytest.raises(DataError, match=r"s\.jsonl:1: pku-saferlhf record: better_response_id"):
        load_groups(write(tmp_path, [record]), objective="reward")
