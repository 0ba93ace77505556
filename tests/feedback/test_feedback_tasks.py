"""Task files in, training records out: the pure parts of import and export."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from reward_service.data.formats import load_groups
from reward_service.feedback.export import records
from reward_service.feedback.models import Label, Task
from reward_service.feedback.tasks import TaskFileError, check_answer, read_tasks, split_to


def write(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_task_lines_take_their_kind_from_the_number_of_responses(tmp_path):
    path = write(
        tmp_path / "t.jsonl",
        [
            {"prompt": "p1", "responses": ["a", "b"]},
            {"prompt": "p2", "responses": ["a", "b", "c"], "k": 3},
            {"prompt": "p3", "responses": ["only"]},
            {"prompt": "p4", "responses": ["x", "y"], "gold": 1, "source": "set-7"},
        ],
    )
    tasks = read_tasks(path)
    assert [(t.kind, t.k) for t in tasks] == [
        ("pairwise", 1), ("ranking", 3), ("rating", 1), ("pairwise", 1)
    ]  # fmt: skip
    assert tasks[3].gold == 1 and tasks[3].meta == {"source": "set-7"}


def test_ppo_client_sample_lines_are_grouped_by_prompt_in_file_order(tmp_path):
    lines = [
        {"prompt": "A", "response": "a1", "logprob": -3.0},
        {"prompt": "B", "response": "b1", "logprob": -2.0},
        {"prompt": "A", "response": "a2", "logprob": -1.0},
        {"prompt": "B", "response": "b2", "logprob": -2.5},
        {"prompt": "B", "response": "b3", "logprob": -2.5},
    ]
    tasks = read_tasks(write(tmp_path / "s.jsonl", lines), k=2)
    assert [(t.prompt, t.kind, t.responses, t.k) for t in tasks] == [
        ("A", "pairwise", ["a1", "a2"], 2),
        ("B", "ranking", ["b1", "b2", "b3"], 2),
    ]


def test_kind_flag_splits_groups_into_pairs_or_ratings(tmp_path):
    path = write(tmp_path / "t.jsonl", [{"prompt": "p", "responses": ["a", "b", "c", "d", "e"]}])
    assert [t.responses for t in read_tasks(path, kind="pairwise")] == [["a", "b"], ["c", "d"]]
    assert [t.responses for t in read_tasks(path, kind="rating")] == [[r] for r in "abcde"]
    assert split_to("ranking", ["a", "b"]) == [["a", "b"]]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "2: not valid JSON"),
        ("[1, 2]", "2: expected a JSON object"),
        ({"prompt": "p"}, "2: expected prompt + responses"),
        ({"prompt": "", "responses": ["a", "b"]}, "2: prompt must be a non-empty string"),
        ({"prompt": "p", "responses": ["a", 7]}, "2: responses[1] must be a string"),
        ({"prompt": "p", "responses": []}, "2: responses must be a non-empty list"),
        ({"prompt": "p", "responses": ["a", "b"], "k": 0}, "2: k must be"),
        ({"prompt": "p", "responses": ["a", "b"], "kind": "vote"}, "2: kind must be"),
        ({"prompt": "p", "responses": ["a", "b"], "gold": 2}, "2: a comparison's answer is 0"),
        ({"prompt": "p", "responses": ["a"], "gold": 6}, "2: a rating's answer"),
        ({"prompt": "p", "responses": ["a", "b"], "kind": "rating", "gold": 3}, "2: a gold"),
        ({"prompt": "p", "response": 5}, "2: response must be"),
        (
            {"prompt": "p", "responses": [str(i) for i in range(10)]},
            "2: 10 responses to rank; at most 9",
        ),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = write(tmp_path / "bad.jsonl", [{"prompt": "ok", "responses": ["a", "b"]}, line])
    with pytest.raises(TaskFileError, match=re.escape(message)):
        read_tasks(path)


def test_empty_and_missing_files_are_errors(tmp_path):
    with pytest.raises(TaskFileError, match="no tasks"):
        read_tasks(write(tmp_path / "empty.jsonl", ["", "  "]))
    with pytest.raises(TaskFileError, match="cannot open"):
        read_tasks(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(
    ("kind", "n", "answer", "ok"),
    [
        ("pairwise", 2, 0, True),
        ("pairwise", 2, 1, True),
        ("pairwise", 2, 2, False),
        ("pairwise", 2, True, False),
        ("pairwise", 2, "1", False),
        ("ranking", 3, [2, 0, 1], True),
        ("ranking", 3, [2, 0], False),
        ("ranking", 3, [2, 0, 0], False),
        ("ranking", 3, [2, 0, True], False),
        ("ranking", 3, 1, False),
        ("rating", 1, 5, True),
        ("rating", 1, 0, False),
        ("rating", 1, 3.5, False),
    ],
)
def test_check_answer(kind, n, answer, ok):
    if ok:
        assert check_answer(kind, n, answer) == answer
    else:
        with pytest.raises(ValueError):
            check_answer(kind, n, answer)


def task(kind: str, responses: list[str]) -> Task:
    return Task(id=1, kind=kind, prompt="P", responses=responses, k=1)


def label(answer, unsafe=None) -> Label:
    return Label(id=1, answer=answer, unsafe=unsafe, created_at=datetime.now(timezone.utc))


def test_records_per_format_and_kind():
    pair, rank, rate = (
        task("pairwise", ["a", "b"]),
        task("ranking", ["x", "y", "z"]),
        task("rating", ["r"]),
    )
    assert records("pairwise", label(1), pair) == [{"prompt": "P", "chosen": "b", "rejected": "a"}]
    assert records("rankings", label(1), pair) == [{"prompt": "P", "responses": ["b", "a"]}]
    assert records("ratings", label(1), pair) == []
    assert records("rankings", label([2, 0, 1]), rank) == [
        {"prompt": "P", "responses": ["z", "x", "y"]}
    ]
    assert [(r["chosen"], r["rejected"]) for r in records("pairwise", label([2, 0, 1]), rank)] == [
        ("z", "x"), ("z", "y"), ("x", "y")
    ]  # fmt: skip
    assert records("ratings", label(4), rate) == [{"prompt": "P", "response": "r", "score": 4}]
    assert records("pairwise", label(4), rate) == []
    assert records("safety", label(0, [False, True]), pair) == [
        {"prompt": "P", "response": "a", "safe": True},
        {"prompt": "P", "response": "b", "safe": False},
    ]
    assert records("safety", label(0), pair) == []  # no flags sent: no safety judgment


@pytest.mark.parametrize(("fmt", "expect"), [("pairwise", "pairwise"), ("rankings", "ranking")])
def test_exported_records_load_as_training_data(tmp_path, fmt, expect):
    rows = records(fmt, label([1, 2, 0]), task("ranking", ["x", "y", "z"]))
    rows = [{**r, "annotator": "ada", "labeled_at": "2026-01-01T00:00:00+00:00"} for r in rows]
    detected, groups = load_groups(write(tmp_path / "x.jsonl", rows))
    assert detected == expect
    assert groups[0].responses[0] == "y"


def test_an_empty_response_is_a_task_and_its_label_trains(tmp_path):
    """A policy that stops at once writes "": people must be able to say that is worse, and the
    exported line must be training data, or the loop can never teach the RM to avoid it."""
    samples = [{"prompt": "p", "response": "a real answer"}, {"prompt": "p", "response": ""}]
    tasks = read_tasks(write(tmp_path / "samples.jsonl", samples))
    assert [t.responses for t in tasks] == [["a real answer", ""]]
    rows = records("pairwise", label(0), task("pairwise", tasks[0].responses))
    assert rows == [{"prompt": "P", "chosen": "a real answer", "rejected": ""}]
    detected, groups = load_groups(write(tmp_path / "labels.jsonl", rows))
    assert detected == "pairwise" and groups[0].responses == ("a real answer", "")
