"""A reward model that misbehaves on purpose, for the fault tests, built with onnx.helper.

Scores are finite for ordinary text and go wrong on chosen words of the shared MiniLM
tokenizer: ``poison`` gives NaN, ``infinity`` gives -inf, ``explode`` makes ONNX Runtime raise
(a Gather out of bounds). With ``burn`` > 0 every token also goes through ``burn`` products with
a 1024x1024 matrix (on the input, so nothing can fold them away): runs then take long enough, in
proportion to their tokens, for a test to act while work is queued. The repository it writes is
what ``reward-service export`` writes: a valid manifest whose reference examples the graph
reproduces, so the parity gate passes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

NAN_WORD, INF_WORD, RAISE_WORD = "poison", "infinity", "explode"
BURN_WIDTH = 1024


def build_graph(vocab_size: int, ids: dict[str, int], burn: int):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.ones(vocab_size, dtype=np.float32)
    table[ids[NAN_WORD]] = -1.0  # log(-1) = NaN
    table[ids[INF_WORD]] = 0.0  # log(0) = -inf
    inits = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.zeros(1, dtype=np.float32), "tiny_table"),
        numpy_helper.from_array(np.array(ids[RAISE_WORD], dtype=np.int64), "raise_id"),
        numpy_helper.from_array(np.array(10**6, dtype=np.int64), "far"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero_i"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(np.array(0.001, dtype=np.float32), "token_weight"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["value"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_b"], to=TensorProto.BOOL),
        helper.make_node("Where", ["mask_b", "value", "one"], ["masked"]),
        helper.make_node("ReduceMin", ["masked"], ["lowest"], axes=[1], keepdims=0),
        helper.make_node("Log", ["lowest"], ["log_lowest"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["mask_f", "axis1"], ["count"], keepdims=0),
        helper.make_node("Mul", ["count", "token_weight"], ["length_term"]),
        # the raising branch: index 10**6 into a table of one row wherever the word appears
        helper.make_node("Equal", ["input_ids", "raise_id"], ["is_raise"]),
        helper.make_node("Where", ["is_raise", "far", "zero_i"], ["raise_index"]),
        helper.make_node("Gather", ["tiny_table", "raise_index"], ["raise_value"]),
        helper.make_node("ReduceSum", ["raise_value", "axis1"], ["raise_term"], keepdims=0),
        helper.make_node("Add", ["log_lowest", "length_term"], ["partial"]),
        helper.make_node("Add", ["partial", "raise_term"], ["unburnt"]),
    ]
    last = "unburnt"
    if burn:
        # (tokens, W) @ (W, W), burn times: work in proportion to the tokens, like a real model.
        rng = np.random.default_rng(0)
        weight = (rng.standard_normal((BURN_WIDTH, BURN_WIDTH)) / BURN_WIDTH).astype(np.float32)
        inits += [
            numpy_helper.from_array(weight, "burn_weight"),
            numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), "column"),
            numpy_helper.from_array(np.array([1, BURN_WIDTH], dtype=np.int64), "row"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "nothing"),
        ]
        nodes += [
            helper.make_node("Reshape", ["mask_f", "column"], ["per_token"]),  # (B*T, 1)
            helper.make_node("Tile", ["per_token", "row"], ["m0"]),  # (B*T, W)
        ]
        for k in range(burn):
            nodes.append(helper.make_node("MatMul", [f"m{k}", "burn_weight"], [f"m{k + 1}"]))
        nodes += [
            helper.make_node("ReduceSum", [f"m{burn}"], ["burnt"], keepdims=0),
            helper.make_node("Mul", ["burnt", "nothing"], ["zero_burn"]),
            helper.make_node("Add", ["unburnt", "zero_burn"], ["with_burn"]),
        ]
        last = "with_burn"
    nodes.append(helper.make_node("Identity", [last], ["score"]))
    batch = ["batch", "tokens"]
    graph = helper.make_graph(
        nodes,
        "faulty_reward_model",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, batch),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, batch),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def make_faulty_repo(
    repo: Path, tokenizer_json: Path, name: str = "faulty", burn: int = 0, max_length: int = 64
) -> Path:
    """``repo/<name>/1/`` with the misbehaving graph, the tokenizer and a valid manifest."""
    import onnx

    from reward_service.backends import load_backend
    from reward_service.repository import (
        MODEL_FILE,
        TOKENIZER_FILE,
        Manifest,
        Normalization,
        Parity,
        ReferenceExample,
        now_iso,
        sha256_file,
        write_manifest,
    )
    from reward_service.scorer import LoadedModel
    from reward_service.template import InputTemplate, load_tokenizer

    folder = repo / name / "1"
    folder.mkdir(parents=True)
    shutil.copy(tokenizer_json, folder / TOKENIZER_FILE)
    tokenizer = load_tokenizer(folder / TOKENIZER_FILE)
    ids = {w: tokenizer.token_to_id(w) for w in (NAN_WORD, INF_WORD, RAISE_WORD)}
    assert all(i is not None for i in ids.values()), ids
    onnx.save(build_graph(tokenizer.get_vocab_size(), ids, burn), folder / MODEL_FILE)
    pad_id = tokenizer.token_to_id("[PAD]") or 0
    manifest = Manifest(
        name=name,
        version=1,
        base_model="built by tests/serve/faulty_model.py",
        architecture="FaultyRewardModel",
        created=now_iso(),
        template=InputTemplate(max_length=max_length),
        pad_token_id=pad_id,
        inputs=["input_ids", "attention_mask"],
        opset=17,
        sha256=sha256_file(folder / MODEL_FILE),
        tokenizer_sha256=sha256_file(folder / TOKENIZER_FILE),
        normalization=Normalization(),
        parity=[Parity(reference="onnx-fp32", n_examples=0, max_abs_diff=0.0)],
    )
    write_manifest(folder, manifest)
    examples = [(f"prompt number {i}", " ".join(["word"] * (i + 1))) for i in range(8)]
    # The reference scores come from the graph itself, run without the gate they will feed.
    runtime = load_backend(folder / MODEL_FILE, "onnxruntime", threads=1)
    scores = LoadedModel(folder, manifest, tokenizer, runtime).score(examples)
    manifest.reference = [
        ReferenceExample(prompt=p, response=r, score=float(s))
        for (p, r), s in zip(examples, scores, strict=True)
    ]
    write_manifest(folder, manifest)
    json.loads((folder / "manifest.json").read_text())
    return folder
