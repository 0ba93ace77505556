"""Stage 1 for offline machines: pretrain a tiny GPT-2-style causal LM on a local text corpus.

No causal LM ships offline, so we train one: a byte-level BPE (exact round trip, unlike the
MiniLM WordPiece that lowercases) with a PAD token distinct from EOS — PPO masks everything after
the first EOS, and a PAD that *is* EOS would make every padded response look finished. The result
is an ordinary Hugging Face directory that ``AutoModelForCausalLM`` and ``AutoTokenizer`` load,
so any other causal LM directory can stand in for it.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"


@dataclass
class PretrainConfig:
    vocab_size: int = 4096
    n_layer: int = 4
    n_embd: int = 192
    n_head: int = 4
    block_size: int = 128
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_steps: int = 20
    max_steps: int = 2000
    max_seconds: float = 300.0
    bf16: bool = True
    seed: int = 1


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with EOS and PAD as special tokens; left padding for generation."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD, padding_side="left"
    )


def build_model(cfg: PretrainConfig, tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    """GPT-2 with every dropout at 0: PPO needs the same logprobs from the same weights."""
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=max(cfg.block_size, 256),
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def pack_blocks(token_lists: list[list[int]], eos_id: int, block_size: int) -> torch.Tensor:
    """Concatenate documents, each followed by EOS, and cut into (N, block_size + 1) rows."""
    stream = [t for ids in token_lists for t in [*ids, eos_id]]
    n = (len(stream) - 1) // block_size
    rows = [stream[i * block_size : i * block_size + block_size + 1] for i in range(n)]
    return torch.tensor(rows, dtype=torch.long)


def _lr(step: int, cfg: PretrainConfig, total: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def pretrain(texts: list[str], output: Path, cfg: PretrainConfig) -> dict[str, float]:
    """Train tokenizer and model, save both to ``output``; returns a few summary figures."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    texts = texts[:]
    rng.shuffle(texts)
    n_val = max(1, len(texts) // 50)
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    encode = tokenizer(texts, add_special_tokens=False)["input_ids"]
    val = pack_blocks(encode[:n_val], tokenizer.eos_token_id, cfg.block_size)
    train = pack_blocks(encode[n_val:], tokenizer.eos_token_id, cfg.block_size)
    model = build_model(cfg, tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.1)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16)

    start, step, loss_ema = time.perf_counter(), 0, float("nan")
    bar = tqdm(total=cfg.max_steps, desc="pretrain", unit="step")
    model.train()
    while step < cfg.max_steps and time.perf_counter() - start < cfg.max_seconds:
        for g in optimizer.param_groups:
            g["lr"] = _lr(step, cfg, cfg.max_steps)
        batch = train[torch.randint(len(train), (cfg.batch_size,))]
        with autocast:
            logits = model(batch[:, :-1]).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), batch[:, 1:].flatten()
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_ema = loss.item() if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * loss.item()
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{loss_ema:.3f}")
    bar.close()
    seconds = time.perf_counter() - start

    model.eval()
    with torch.no_grad(), autocast:
        val_logits = model(val[:64, :-1]).logits.float()
    val_loss = torch.nn.functional.cross_entropy(val_logits.flatten(0, 1), val[:64, 1:].flatten())
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return {
        "steps": step,
        "seconds": seconds,
        "tokens_per_second": step * cfg.batch_size * cfg.block_size / seconds,
        "train_loss": loss_ema,
        "val_loss": val_loss.item(),
        "params": sum(p.numel() for p in model.parameters()),
    }
