"""Train → export → ONNX score round trips on a tiny BERT, plus the export gate's refusals."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from rm_fixtures import sentiment_pairs, write_jsonl
from transformers import AutoModelForSequenceClassification

from reward_service.checkpoint import read_info
from reward_service.export import onnx_export
from reward_service.export.onnx_export import ExportError, export
from reward_service.repository import load_manifest, sha256_file
from reward_service.scorer import LoadedModel
from reward_service.template import encode_batch, load_tokenizer
from reward_service.train.trainer import TrainConfig, train

FRESH = [
    ("How was the concert?", "It was wonderful, the band was great."),
    ("How was the concert?", "It was awful and the sound was terrible."),
    ("Describe the weather", "bright and lovely"),
]


def test_training_learns_the_preference(tiny_checkpoint):
    report = json.loads((tiny_checkpoint / "report.json").read_text())
    assert report["metrics"]["pairwise_accuracy"] >= 0.9
    assert (tiny_checkpoint / "report.png").stat().st_size > 10_000
    assert report["history"]["loss"][-1] < report["history"]["loss"][0]


def test_onnx_scores_match_pytorch_on_fresh_text(tiny_checkpoint, tiny_model_dir):
    model = LoadedModel.open(tiny_model_dir)
    onnx = model.score(FRESH)
    info = read_info(tiny_checkpoint)
    torch_model = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint).eval()
    tok = load_tokenizer(tiny_checkpoint / "tokenizer.json")
    batch = encode_batch(tok, info.template, FRESH, info.pad_token_id)
    with torch.inference_mode():
        feeds = {k: torch.from_numpy(v) for k, v in batch.feeds(model.manifest.inputs).items()}
        expected = torch_model(**feeds).logits[:, 0].numpy()
    np.testing.assert_allclose(onnx, expected, atol=1e-4)
    assert onnx[0] > onnx[1]  # the trained preference survives export


def test_manifest_records_what_serving_needs(tiny_model_dir):
    manifest = load_manifest(tiny_model_dir)
    assert manifest.sha256 == sha256_file(tiny_model_dir / "model.onnx")
    assert manifest.parity[0].reference == "pytorch"
    assert manifest.parity[0].max_abs_diff <= 1e-4
    assert manifest.inputs == ["input_ids", "attention_mask", "token_type_ids"]
    assert len(manifest.reference) == 64 and manifest.normalization.std > 0
    assert manifest.metrics["pairwise_accuracy"] >= 0.9
    scores = LoadedModel.open(tiny_model_dir).score(
        [(r.prompt, r.response) for r in manifest.reference]
    )
    np.testing.assert_allclose(scores, [r.score for r in manifest.reference], atol=1e-5)


def test_manifest_matches_its_published_schema(tiny_model_dir):
    jsonschema = pytest.importorskip("jsonschema")
    from pathlib import Path

    schema_path = Path(__file__).parents[1] / "proto" / "schemas" / "manifest.schema.json"
    if not schema_path.exists():
        pytest.skip("proto/ not generated yet")
    jsonschema.validate(
        json.loads((tiny_model_dir / "manifest.json").read_text()),
        json.loads(schema_path.read_text()),
    )


def test_failed_parity_publishes_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "FP32_TOLERANCE", -1.0)
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export(tiny_checkpoint, tmp_path, "broken", optimize="off")
    assert not (tmp_path / "broken").exists()  # no version, no temporary folder, no empty name


def test_versions_increment_and_never_overwrite(tiny_checkpoint, tmp_path):
    first, _ = export(tiny_checkpoint, tmp_path, "m", optimize="off")
    second, _ = export(tiny_checkpoint, tmp_path, "m", optimize="off")
    assert (first.name, second.name) == ("1", "2")
    with pytest.raises(ExportError, match="already exists"):
        export(tiny_checkpoint, tmp_path, "m", version=1, optimize="off")


def test_optimize_on_keeps_parity(tiny_checkpoint, tmp_path):
    folder, manifest = export(tiny_checkpoint, tmp_path, "fused", optimize="on")
    assert manifest.optimized
    assert LoadedModel.open(folder).score(FRESH)[0] > LoadedModel.open(folder).score(FRESH)[1]


@pytest.mark.parametrize(
    "records",
    [
        [{"prompt": "q", "responses": ["great and lovely", "fine", "awful and sad"]}] * 12,
        [
            {"prompt": "q", "response": r, "score": s}
            for r, s in [("great", 5), ("ok", 3), ("awful", 1), ("lovely", 5)] * 4
        ],
    ],
    ids=["ranking", "rating"],
)
def test_other_formats_train(tiny_base, tmp_path, records):
    data = write_jsonl(tmp_path / "d.jsonl", records)
    metrics = train(
        TrainConfig(
            data=data,
            output=tmp_path / "ck",
            base=tiny_base,
            max_steps=3,
            batch_size=4,
            eval_fraction=0.25,
        )
    )
    assert set(metrics) in ({"pairwise_accuracy"}, {"pearson", "spearman"})
    assert read_info(tmp_path / "ck").data_format in ("ranking", "rating")


def test_same_seed_same_weights(tiny_base, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", sentiment_pairs(24, seed=5))
    weights = []
    for run in ("a", "b"):
        train(
            TrainConfig(
                data=data, output=tmp_path / run, base=tiny_base, max_steps=4, batch_size=4, lr=1e-3
            )
        )
        model = AutoModelForSequenceClassification.from_pretrained(tmp_path / run)
        weights.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_cli_reports_bad_data_with_line_number(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": 3}\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reward_service.cli",
            "train",
            "--data",
            str(bad),
            "--output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "bad.jsonl:2:" in proc.stderr and "Traceback" not in proc.stderr


def make_tiny_decoder(folder):
    """A 2-layer GPT-2 with a byte-level BPE trained here: a decoder with no pair tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2ForSequenceClassification

    folder.mkdir(parents=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<pad>"])
    corpus = [r["chosen"] + " " + r["rejected"] for r in sentiment_pairs(50, seed=3)]
    tok.train_from_iterator(corpus, trainer)
    tok.save(str(folder / "tokenizer.json"))
    config = GPT2Config(
        vocab_size=tok.get_vocab_size(),
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_positions=128,
        num_labels=1,
        bos_token_id=0,
        eos_token_id=0,
    )
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_decoder_backbone_round_trip(tmp_path):
    base = make_tiny_decoder(tmp_path / "gpt")
    data = write_jsonl(tmp_path / "d.jsonl", sentiment_pairs(32, seed=4))
    train(
        TrainConfig(
            data=data,
            output=tmp_path / "ck",
            base=base,
            max_steps=2,
            batch_size=8,
            eval_fraction=0.25,
        )
    )
    info = read_info(tmp_path / "ck")
    assert not info.template.pair  # no pair special tokens: prompt and response are joined
    assert info.pad_token_id == load_tokenizer(base / "tokenizer.json").token_to_id("<pad>")
    folder, manifest = export(tmp_path / "ck", tmp_path / "repo", "gpt", optimize="off")
    assert manifest.inputs == ["input_ids", "attention_mask"]
    assert manifest.parity[0].max_abs_diff <= 1e-4
    assert len(LoadedModel.open(folder).score(FRESH)) == 3
