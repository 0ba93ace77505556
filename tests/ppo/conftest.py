"""PPO fixtures: a tiny causal LM pretrained here in seconds, prompts, and a real reward service.

The reward service runs ``reward-service serve`` on the shared ``tiny_model_repo`` (a BERT
reward model with a WordPiece tokenizer): the client sends text, so the policy's BPE and the
reward model's tokenizer never need to match.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_process import running_server

from ppo_client.config import PPOConfig

POSITIVE = ["the", "day", "is", "bright", "and", "kind", "a", "wonderful", "friend", "lovely"]
NEGATIVE = ["the", "night", "is", "cold", "and", "cruel", "a", "terrible", "storm", "sad"]
WORDS = [*POSITIVE, *NEGATIVE, ",", ".", "news", "brings"]


def tiny_texts(n: int = 400) -> list[str]:
    """A small synthetic corpus: no dependence on the fortunes package in tests."""
    import random

    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 (~70k parameters) with its own byte-level BPE, PAD distinct from EOS."""
    from ppo_client.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("tiny-policy")
    cfg = PretrainConfig(
        vocab_size=300,
        n_layer=2,
        n_embd=32,
        n_head=2,
        block_size=32,
        batch_size=8,
        max_steps=60,
        warmup_steps=5,
        learning_rate=5e-3,
        bf16=False,
    )
    pretrain(tiny_texts(), out, cfg)
    return out


@pytest.fixture(scope="session")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    starts = ["the day", "a friend", "the night", "news", "a storm", "kind", "the", "sad"]
    path.write_text("".join(f'{{"prompt": "{s}"}}\n' for s in starts))
    return path


def make_config(policy: Path, prompts: Path, output: Path, **overrides) -> PPOConfig:
    """Small but complete: two chunks per rank so the overlap path runs, two minibatches."""
    values = dict(
        policy=str(policy),
        prompts=str(prompts),
        output=str(output),
        steps=2,
        rollout_batch_size=8,
        num_minibatches=2,
        ppo_epochs=2,
        score_chunk_size=4,
        response_length=8,
        prompt_max_tokens=8,
        num_eval_samples=0,
        progress=False,
        learning_rate=1e-3,
    )
    values.update(overrides)
    return PPOConfig(**values)


@contextlib.contextmanager
def start_service(model_repo: Path, workdir: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``reward-service serve`` in a subprocess on a free loopback port, stopped on exit."""
    with running_server(model_repo, workdir, "--backend", "onnxruntime") as server:
        yield server.url, server.process


@pytest.fixture(scope="session")
def reward_url(tiny_model_repo: Path, tmp_path_factory) -> Iterator[str]:
    with start_service(tiny_model_repo, tmp_path_factory.mktemp("serve")) as (url, _):
        yield url


# --- tiny random chat models of the architectures people bring ---------------------------------

#: Our own minimal chat templates in the two common shapes (ChatML, Llama 3 headers); the
#: Llama one writes its BOS itself, as Llama 3's does.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
#: arch → (special tokens, bos, eos (= PAD), turn end, template). Every tokenizer has PAD == EOS,
#: as Llama 3 and Qwen ship; the turn end is an extra EOS id in the generation config.
TINY_ARCHS = {
    "qwen2": (
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        None,
        "<|endoftext|>",
        "<|im_end|>",
        CHATML,
    ),
    "llama": (
        [
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
        ],
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|eot_id|>",
        LLAMA3,
    ),
    "gpt2": (
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        None,
        "<|endoftext|>",
        "<|im_end|>",
        CHATML,
    ),
}


def build_tiny_chat_model(arch: str, folder: Path) -> Path:
    """A random 2-layer model of ``arch`` with a byte-level BPE, a chat template, PAD == EOS and
    two EOS ids in its generation config; a directory AutoModelForCausalLM loads."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import (
        GenerationConfig,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    specials, bos, eos, turn_end, template = TINY_ARCHS[arch]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        tiny_texts(),
        trainers.BpeTrainer(
            vocab_size=320,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    if bos:  # Llama's tokenizer puts BOS before plain text itself
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=eos, chat_template=template
    )
    ids = {name: tok.token_to_id(name) for name in (eos, turn_end)}
    common = dict(vocab_size=len(tokenizer), eos_token_id=ids[eos], pad_token_id=ids[eos])
    if arch == "gpt2":
        config = GPT2Config(
            n_embd=32, n_layer=2, n_head=2, n_positions=128, bos_token_id=ids[eos], **common
        )
        model_class = GPT2LMHeadModel
    else:
        config_class, model_class = {
            "qwen2": (Qwen2Config, Qwen2ForCausalLM),
            "llama": (LlamaConfig, LlamaForCausalLM),
        }[arch]
        config = config_class(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            tie_word_embeddings=arch == "qwen2",
            bos_token_id=tok.token_to_id(bos) if bos else None,
            **common,
        )
    torch.manual_seed(0)
    model = model_class(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[ids[eos], ids[turn_end]], pad_token_id=ids[eos]
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_chat_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("chat-models")
    return {arch: build_tiny_chat_model(arch, root / arch) for arch in TINY_ARCHS}
