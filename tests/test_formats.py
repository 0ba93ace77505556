import json

import pytest

from reward_service.data.formats import DataError, detect_format, load_groups, split_hh


def write(tmp_path, lines, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_pairwise_with_margin(tmp_path):
    path = write(tmp_path, [{"prompt": "p", "chosen": "a", "rejected": "b", "margin": 0.5}])
    fmt, groups = load_groups(path)
    assert fmt == "pairwise"
    assert groups[0].responses == ("a", "b") and groups[0].margin == 0.5


def test_hh_dialogues_split_at_last_shared_assistant_turn(tmp_path):
    prefix = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: joke?\n\nAssistant:"
    rec = {"chosen": prefix + " a good one", "rejected": prefix + " no"}
    fmt, groups = load_groups(write(tmp_path, [rec]))
    assert fmt == "hh"
    assert groups[0].prompt == prefix
    assert groups[0].responses == ("a good one", "no")


def test_hh_without_shared_prefix_names_the_line(tmp_path):
    good = {"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: a\n\nAssistant: y"}
    bad = {"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b\n\nAssistant: y"}
    with pytest.raises(DataError, match=r"d\.jsonl:2: hh record"):
        load_groups(write(tmp_path, [good, bad]))


def test_ranking_keeps_order(tmp_path):
    fmt, groups = load_groups(write(tmp_path, [{"prompt": "p", "responses": ["1", "2", "3"]}]))
    assert fmt == "ranking" and groups[0].responses == ("1", "2", "3")


def test_rating(tmp_path):
    fmt, groups = load_groups(write(tmp_path, [{"prompt": "p", "response": "r", "score": 4}]))
    assert fmt == "rating" and groups[0].rating == 4.0


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"prompt": "p", "chosen": "a", "rejected": "b"}', "{not json"], r":2: not valid JSON"),
        (["[1, 2]"], r":1: expected a JSON object"),
        ([{"foo": 1}], r":1: unknown format"),
        ([{"prompt": "p", "chosen": None, "rejected": "b"}], r":1: pairwise record: chosen"),
        ([{"prompt": "p", "responses": ["only one"]}], r":1: ranking record: responses"),
        ([{"prompt": "p", "response": "r", "score": "five"}], r":1: rating record: score"),
        (
            [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "responses": []}],
            r":2: pairwise record: chosen",
        ),
        ([""], r"no records"),
    ],
)
def test_malformed_input_names_file_and_line(tmp_path, lines, message):
    with pytest.raises(DataError, match=message):
        load_groups(write(tmp_path, lines))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot open"):
        load_groups(tmp_path / "nope.jsonl")


def test_detect_format():
    assert detect_format({"prompt", "chosen", "rejected"}) == "pairwise"
    assert detect_format({"chosen", "rejected"}) == "hh"
    assert detect_format({"prompt", "responses"}) == "ranking"
    assert detect_format({"prompt", "response", "score"}) == "rating"
    assert detect_format({"text"}) is None


def test_split_hh_requires_assistant_turn():
    with pytest.raises(ValueError, match="no shared prefix"):
        split_hh("plain a", "plain b")
