"""The PPO loop: ``PPOTrainer(config).train()``.

One step reads top to bottom in numbered phases: 1. rollout, 2. reward, 3. KL shaping,
4. advantages, 5. PPO epochs over minibatches, 6. evaluate, log and checkpoint. The math lives
in :mod:`ppo_client.ppo_math`, the token plumbing in :mod:`ppo_client.rollout`, the networks in
:mod:`ppo_client.models`; this file is the order of operations plus the boilerplate
(distribution, checkpoints, logs) kept apart below it.

Under ``torchrun`` each rank generates and scores its own slice of the prompts, whitening and
the KL controller use statistics over all ranks, and DDP averages the gradients (gloo on CPU,
NCCL on GPU) or FSDP shards weights, gradients and optimizer state.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ppo_client import ppo_math as pm
from ppo_client.checkpoint import latest_checkpoint, write_checkpoint
from ppo_client.config import ConfigError, PPOConfig
from ppo_client.distributed import (
    Dist,
    full_state_dict,
    load_optimizer_state,
    no_grad_sync,
    optimizer_state,
    shard,
    wrap_for_training,
)
from ppo_client.evaluation import eval_stats
from ppo_client.models import DTYPES, build_networks, save_networks, stop_and_pad_ids
from ppo_client.rollout import (
    Rollout,
    all_done_here,
    decode_responses,
    encode_prompts,
    sample,
    truncate_after_stop,
)
from ppo_client.runlog import RunLog
from ppo_client.safety import LagrangeMultiplier

RewardFn = Callable[[list[str], list[str]], list[float]]


class RunStopped(RuntimeError):
    """The run stopped (e.g. the reward service went away); a checkpoint was written first."""


def load_prompts(path: str | Path) -> list[str]:
    """JSONL with a ``prompt`` field, or plain text lines; blank lines are skipped."""
    path = Path(path)
    prompts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                prompt = json.loads(line)["prompt"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConfigError(f"{path}:{n}: expected a JSON object with a 'prompt'") from None
            if not isinstance(prompt, str):
                raise ConfigError(f"{path}:{n}: 'prompt' must be a string")
            prompts.append(prompt)
        else:
            prompts.append(line)
    if not prompts:
        raise ConfigError(f"{path} holds no prompts")
    return prompts


def split_prompts(cfg: PPOConfig) -> tuple[list[str], list[str]]:
    """(training prompts, held-out prompts): samples shown before/after never come from training.

    Without ``eval_prompts``, the last ``num_eval_samples`` prompts of the file are held out.
    """
    prompts = load_prompts(cfg.prompts)
    if cfg.eval_prompts:
        return prompts, load_prompts(cfg.eval_prompts)
    n = cfg.num_eval_samples
    if n == 0:
        return prompts, []
    if n >= len(prompts):
        raise ConfigError(
            f"num_eval_samples={n} would hold out all {len(prompts)} prompts; "
            "pass --eval-prompts or lower it"
        )
    return prompts[:-n], prompts[-n:]


def prompt_indices(n_prompts: int, step: int, batch: int, seed: int) -> list[int]:
    """The prompts of ``step``: a fresh seeded permutation per pass over the prompt set.

    A pure function of the step, so a resumed run draws exactly the prompts it would have.
    """
    indices = []
    for i in range(step * batch, (step + 1) * batch):
        epoch, offset = divmod(i, n_prompts)
        perm = np.random.default_rng([seed, epoch]).permutation(n_prompts)
        indices.append(int(perm[offset]))
    return indices


class _CallableScorer:
    """An in-process reward function behind the RewardClient's ``submit``/``score`` interface."""

    def __init__(self, fn: RewardFn) -> None:
        self.fn = fn

    def submit(self, prompts: list[str], responses: list[str]) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result([float(s) for s in self.fn(prompts, responses)])
        except Exception as exc:
            future.set_exception(exc)
        return future

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return self.submit(prompts, responses).result()

    def close(self) -> None:
        return None


class PPOTrainer:
    def __init__(
        self,
        config: PPOConfig,
        reward_fn: RewardFn | None = None,
        cost_fn: RewardFn | None = None,
    ) -> None:
        self.cfg = cfg = config.validate()
        if reward_fn is None and not cfg.reward_url:
            raise ConfigError("reward_url is required (or pass reward_fn to PPOTrainer)")
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.dist = Dist()
        self.rank, self.world, self.device = self.dist.rank, self.dist.world, self.dist.device
        if cfg.rollout_batch_size % self.world:
            raise ConfigError(f"rollout_batch_size must be a multiple of {self.world} ranks")
        self.local_batch = cfg.rollout_batch_size // self.world
        if self.local_batch % cfg.num_minibatches:
            raise ConfigError("rollout_batch_size / ranks must be a multiple of num_minibatches")
        self.mb_size = self.local_batch // cfg.num_minibatches
        self.output = Path(cfg.output)
        self.prompts, self.held_out = split_prompts(cfg)
        resume_from = None
        if cfg.resume:
            resume_from = latest_checkpoint(self.output)
            if resume_from is None:
                raise ConfigError(f"--resume: no complete checkpoint in {self.output}")
        torch.manual_seed(cfg.seed)

        self.nets = build_networks(cfg, resume_from / "policy" if resume_from else None)
        self.tokenizer = self.nets.tokenizer
        self.chat_template = cfg.chat_template and self.tokenizer.chat_template is not None
        stop_ids, self.pad_id = stop_and_pad_ids(
            self.tokenizer, self.nets.policy.lm, cfg.stop_token
        )
        self.stop_ids = torch.tensor(stop_ids, device=self.device)
        self.policy = self.nets.policy.to(self.device)
        if self.nets.reference is not None:
            self.nets.reference.to(self.device)
        self.sharded = self.world > 1 and cfg.distributed == "fsdp"
        self.model = wrap_for_training(self.policy, cfg.distributed, self.world)
        if self.sharded and self.nets.reference is not None:
            shard(self.nets.reference)
        # Under FSDP every forward is a collective: all ranks stop generating together.
        self.all_done = self.dist.all_done if self.sharded else all_done_here
        self.trainable = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=cfg.learning_rate, eps=cfg.adam_eps, weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            functools.partial(
                pm.lr_factor, warmup=cfg.lr_warmup_steps, total=cfg.steps, schedule=cfg.lr_schedule
            ),
        )
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.kl_ctl: pm.AdaptiveKLController | pm.FixedKLController = (
            pm.AdaptiveKLController(
                cfg.kl_coef,
                cfg.kl_target,
                horizon=cfg.kl_horizon or cfg.rollout_batch_size,
                floor=cfg.kl_coef,
            )
            if cfg.adaptive_kl
            else pm.FixedKLController(cfg.kl_coef)
        )
        # On the model's device: torch.multinomial refuses a CPU generator for CUDA probabilities.
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed * 1000 + self.rank)
        self.step = 0
        self.scorer = _CallableScorer(reward_fn) if reward_fn else self._reward_client()
        # Safe RLHF: a cost model scores the same responses, raw (its sign means unsafe).
        self.cost_scorer = None
        self.lagrange: LagrangeMultiplier | None = None
        if cfg.cost_model or cost_fn:
            self.cost_scorer = (
                _CallableScorer(cost_fn)
                if cost_fn
                else self._reward_client(cfg.cost_model, normalize=False)
            )
            self.lagrange = LagrangeMultiplier(
                cfg.lambda_init, cfg.lambda_lr, cfg.cost_threshold, cfg.lambda_kp, cfg.lambda_kd
            )
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        self.runlog: RunLog | None = None

    def _reward_client(self, model: str | None = None, normalize: bool | None = None) -> Any:
        from ppo_client.reward_client import RewardClient

        cfg = self.cfg
        return RewardClient(
            cfg.reward_url,
            model or cfg.reward_model,
            api_key=cfg.reward_api_key,
            chunk_size=max(cfg.score_chunk_size, 16),
            timeout=cfg.reward_timeout,
            retry_budget=cfg.reward_retry_budget,
            normalize=cfg.reward_normalize if normalize is None else normalize,
        )

    # ------------------------------------------------------------------------------------------
    # The algorithm
    # ------------------------------------------------------------------------------------------

    def train(self) -> list[dict[str, float]]:
        """Run from ``self.step`` to ``cfg.steps``; returns the per-step logs of this call."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        history: list[dict[str, float]] = []
        if self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            self.runlog = RunLog(self.output, cfg.tensorboard, self.step if cfg.resume else None)
        if self.step == 0 and self.held_out:
            self._log({"step": 0, **self._evaluate("samples_before.jsonl", self._rng_state())})
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc="ppo",
            unit="step",
            disable=not (cfg.progress and self.is_main),
        )
        try:
            while self.step < cfg.steps:
                rng_at_start = self._rng_state()
                # 1–2. rollout and reward; all ranks agree on a scoring failure before anyone
                #      enters another collective (a rank alone in all_gather would hang).
                rollout, scores, error = self.collect(self.step)
                self._stop_if_any_rank_failed(error, rng_at_start)
                # 3–5. KL shaping, advantages, PPO epochs.
                stats = self.update(rollout, scores)
                self.step += 1
                stats["step"] = self.step
                stats["episode"] = self.step * cfg.rollout_batch_size
                # 6. evaluate on held-out prompts, log, checkpoint.
                last = self.step == cfg.steps
                if self.held_out and (last or (cfg.eval_every and self.step % cfg.eval_every == 0)):
                    samples = "samples_after.jsonl" if last else None
                    stats.update(self._evaluate(samples, self._rng_state(), stats))
                history.append(stats)
                self._log(stats)
                if self.is_main:
                    bar.update()
                    bar.set_postfix(
                        reward=f"{stats['reward/raw']:.3f}",
                        kl=f"{stats['objective/kl']:.2f}",
                        wait=f"{stats['time/reward_wait_share']:.0%}",
                    )
                if self.step % cfg.checkpoint_every == 0 or last:
                    self.save_checkpoint(self._rng_state())
        finally:
            bar.close()
        self.save_policy(self.output)
        if self.is_main:
            from ppo_client.plots import plot_run, write_sample_table

            plot_run(self.output / "log.jsonl", self.output / "plot.png")
            if (self.output / "samples_after.jsonl").is_file() and cfg.num_eval_samples:
                write_sample_table(self.output, self.output / "samples.md")
        return history

    def collect(self, step: int) -> tuple[Rollout, Tensor, Exception | None]:
        """Phases 1–2: generate this rank's prompts chunk by chunk, scoring in the background.

        A reward-service failure comes back as the third value instead of being raised, so the
        caller can agree with the other ranks before anyone stops.
        """
        cfg = self.cfg
        k = cfg.samples_per_prompt
        idx = prompt_indices(len(self.prompts), step, cfg.rollout_batch_size // k, cfg.seed)
        completions = [self.prompts[i] for i in idx for _ in range(k)]
        prompts = completions[self.rank * self.local_batch :][: self.local_batch]
        timer = _Timer()

        # 1. rollout: one left-padded query block, generated in chunks; each chunk is sent for
        #    scoring as soon as it is decoded, so the service works while the next one generates.
        query, query_mask = self._encode(prompts)
        responses, texts, futures, cost_futures = [], [], [], []
        with timer("generate"):
            for start in range(0, len(prompts), cfg.score_chunk_size):
                chunk = slice(start, start + cfg.score_chunk_size)
                response, mask, has_stop = self._generate(query[chunk], query_mask[chunk])
                chunk_texts = decode_responses(
                    self.tokenizer, response.cpu(), mask.cpu(), has_stop.cpu()
                )
                if cfg.overlap_scoring:
                    futures.append(self.scorer.submit(prompts[chunk], chunk_texts))
                    if self.cost_scorer:
                        cost_futures.append(self.cost_scorer.submit(prompts[chunk], chunk_texts))
                responses.append(response)
                texts.extend(chunk_texts)
        if not cfg.overlap_scoring:
            with timer("reward_wait"):
                futures.append(self.scorer.submit(prompts, texts))
                if self.cost_scorer:
                    cost_futures.append(self.cost_scorer.submit(prompts, texts))
                concurrent.futures.wait(futures + cost_futures)
        response, response_mask, has_stop = truncate_after_stop(
            torch.cat(responses), self.stop_ids, self.pad_id
        )
        # Old logprobs and values from the very function the update calls (ratio ≡ 1 at lr 0);
        # these forwards also overlap the scoring of the last chunk.
        with timer("forward"):
            logprobs, values, entropy, ref_logprobs = self._rollout_forward(
                query, query_mask, response, response_mask
            )

        # 2. reward: the service's scores, and the cost model's under a safety constraint (a
        #    response that never stopped is handled in 3.).
        with timer("reward_wait"):
            raw_scores, error = _await_scores(futures)
            raw_costs, cost_error = _await_scores(cost_futures)
        scores = torch.tensor(raw_scores, dtype=torch.float32, device=self.device)
        # The constraint sees P(unsafe) = σ(cost), not the raw cost (ppo_client/safety.py: why).
        costs = torch.sigmoid(torch.tensor(raw_costs, dtype=torch.float32, device=self.device))
        self._timings = timer.seconds
        rollout = Rollout(
            query=query,
            query_mask=query_mask,
            response=response,
            response_mask=response_mask.float(),
            has_stop=has_stop,
            logprobs=logprobs,
            ref_logprobs=ref_logprobs,
            values=values,
            entropy=entropy,
            prompts=prompts,
            texts=texts,
            costs=costs if self.cost_scorer else None,
        )
        return rollout, scores, error or cost_error

    def update(self, r: Rollout, raw_scores: Tensor) -> dict[str, float]:
        """Phases 3–5 on one rollout, and the step's statistics over all ranks."""
        cfg = self.cfg
        timer = _Timer()
        timer.seconds.update(self._timings)
        mask = r.response_mask
        scores = raw_scores.clone()
        if cfg.missing_eos_score is not None:
            scores = torch.where(r.has_stop, scores, torch.full_like(scores, cfg.missing_eos_score))
        if self.lagrange is not None:
            # Safe RLHF: PPO maximizes r − λ·σ(c); λ is fixed within the step, updated below.
            scores = scores - self.lagrange.value * r.costs

        # 3. KL shaping: −β·KL on every token, the score on the last real one.
        kl = pm.kl_penalty(r.logprobs, r.ref_logprobs, cfg.kl_estimator) * mask
        rewards, non_score = pm.shaped_rewards(scores, kl, mask, self.kl_ctl.value)
        if cfg.whiten_rewards:
            rewards = self._whiten(rewards, mask, shift_mean=False)

        # 4. advantages: GAE over response tokens (γ, λ), whitened with centring.
        advantages, returns = pm.gae(rewards, r.values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = self._whiten(advantages, mask, shift_mean=True)

        # 5. PPO epochs over shuffled minibatches; optionally stop once an epoch moved the
        #    policy further than target_approx_kl from the one that sampled the rollout.
        mb_stats: list[dict[str, Tensor]] = []
        lr = self.scheduler.get_last_lr()[0]
        epochs = 0
        with timer("train"):
            self.model.train()
            for _ in range(cfg.ppo_epochs):
                order = torch.randperm(
                    self.local_batch, generator=self.generator, device=self.device
                )
                epoch = [
                    self._minibatch_step(
                        r, order[start : start + self.mb_size], advantages, returns
                    )
                    for start in range(0, self.local_batch, self.mb_size)
                ]
                mb_stats += epoch
                epochs += 1
                if cfg.target_approx_kl is not None:
                    approx_kl = torch.stack([s["policy/approxkl_avg"] for s in epoch]).mean()
                    if float(self.dist.all_mean(approx_kl)) > cfg.target_approx_kl:
                        break
            self.model.eval()
        self.scheduler.step()

        # Statistics over all ranks (TRL's names where it logs the same quantity), then let β
        # react to the measured KL.
        seq_kl = (pm.kl_penalty(r.logprobs, r.ref_logprobs, "k1") * mask).sum(1)
        stats = {
            "objective/scores": scores.mean(),
            "objective/kl": seq_kl.mean(),
            "objective/entropy": (-r.logprobs * mask).sum(1).mean(),
            "objective/non_score_reward": non_score.sum(1).mean(),
            "objective/rlhf_reward": scores.mean() + non_score.sum(1).mean(),
            "reward/raw": raw_scores.mean(),
            "reward/raw_std": raw_scores.std(correction=0),
            "response_length": mask.sum(1).mean(),
            "eos_rate": r.has_stop.float().mean(),
            "val/explained_variance": pm.explained_variance(r.values, returns, mask),
            **_safety_stats(r),
            **{k: torch.stack([s[k] for s in mb_stats]).mean() for k in mb_stats[0]},
        }
        values = self.dist.all_mean(torch.stack([v.float() for v in stats.values()]))
        out = {k: float(v) for k, v in zip(stats, values, strict=True)}
        out["val/num_eos_tokens"] = out["eos_rate"] * cfg.rollout_batch_size
        out["objective/kl_coef"] = self.kl_ctl.value
        out["policy/epochs"] = epochs
        out["lr"] = lr
        self.kl_ctl.update(out["objective/kl"], cfg.rollout_batch_size)
        if self.lagrange is not None:
            out["safety/lambda"] = self.lagrange.value  # the λ this step's scores used
            self.lagrange.update(out["safety/cost"])
            out["safety/lambda_integral"] = self.lagrange.integral  # the PID's I, after it
        seconds = timer.seconds
        step_time = sum(seconds.values())
        for name in ("generate", "forward", "reward_wait", "train"):
            out[f"time/{name}"] = seconds.get(name, 0.0)
        out["time/step"] = step_time
        out["time/reward_wait_share"] = seconds.get("reward_wait", 0.0) / max(step_time, 1e-9)
        out["eps"] = cfg.rollout_batch_size / max(step_time, 1e-9)
        return out

    def _minibatch_step(
        self, r: Rollout, mb: Tensor, advantages: Tensor, returns: Tensor
    ) -> dict[str, Tensor]:
        """One optimizer step on a minibatch, accumulated over micro-batches.

        Each micro-batch's loss is weighted by its share of the minibatch's tokens, so the sum
        equals the token mean over the whole minibatch whatever micro_batch_size is.
        """
        cfg = self.cfg
        size = cfg.micro_batch_size or len(mb)
        micro = [mb[start : start + size] for start in range(0, len(mb), size)]
        n_tokens = r.response_mask[mb].sum().clamp(min=1.0)
        totals: dict[str, Tensor] = {}
        self.optimizer.zero_grad(set_to_none=True)
        for i, idx in enumerate(micro):
            mask = r.response_mask[idx]
            weight = mask.sum() / n_tokens
            with no_grad_sync(self.model, last=i == len(micro) - 1):
                with self.autocast():
                    logprobs, values, entropy = self.model(
                        r.query[idx],
                        r.query_mask[idx],
                        r.response[idx],
                        r.response_mask[idx].long(),
                        cfg.temperature,
                        entropy_grad=cfg.entropy_coef > 0,
                    )
                pg_loss, pg_stats = pm.policy_loss(
                    logprobs, r.logprobs[idx], advantages[idx], mask, cfg.cliprange
                )
                vf_loss, vf_clipfrac = pm.value_loss(
                    values, r.values[idx], returns[idx], mask, cfg.cliprange_value
                )
                entropy_mean = pm.masked_mean(entropy, mask)
                loss = pg_loss + cfg.vf_coef * vf_loss - cfg.entropy_coef * entropy_mean
                self.scaler.scale(loss * weight).backward()
            parts = {
                "loss/policy_avg": pg_loss,
                "loss/value_avg": vf_loss,
                "policy/clipfrac_avg": pg_stats["clipfrac"],
                "policy/approxkl_avg": pg_stats["approx_kl"],
                "policy/entropy_avg": entropy_mean,
                "val/ratio": pg_stats["ratio"],
                "val/ratio_var": pg_stats["ratio_var"],
                "val/clipfrac_avg": vf_clipfrac,
            }
            for name, value in parts.items():
                totals[name] = totals.get(name, 0.0) + value.detach() * weight
        self.scaler.unscale_(self.optimizer)
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, cfg.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return totals

    # ------------------------------------------------------------------------------------------
    # Generation and forwards
    # ------------------------------------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager:
        precision = self.cfg.precision
        return torch.autocast(
            self.device.type, dtype=DTYPES[precision], enabled=precision != "fp32"
        )

    def _encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        query, mask = encode_prompts(
            self.tokenizer,
            prompts,
            self.cfg.prompt_max_tokens,
            self.pad_id,
            chat_template=self.chat_template,
        )
        return query.to(self.device), mask.to(self.device)

    def _generate(
        self, query: Tensor, query_mask: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Sampled responses of the current policy, truncated after their stop token."""
        cfg = self.cfg
        with self.autocast():
            raw = sample(
                self.policy.lm,
                query,
                query_mask,
                cfg.response_length,
                cfg.temperature,
                self.stop_ids,
                self.pad_id,
                generator or self.generator,
                self.all_done,
            )
        return truncate_after_stop(raw, self.stop_ids, self.pad_id)

    @torch.no_grad()
    def _rollout_forward(
        self, query: Tensor, query_mask: Tensor, response: Tensor, response_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(logprobs, values, entropy, reference logprobs) in micro-batches: memory follows
        micro_batch_size (or the minibatch size), not the rollout size."""
        size = self.cfg.micro_batch_size or self.mb_size
        parts = []
        for start in range(0, query.shape[0], size):
            rows = slice(start, start + size)
            args = (query[rows], query_mask[rows], response[rows], response_mask[rows])
            with self.autocast():
                logprobs, values, entropy = self.policy(*args, self.cfg.temperature)
                ref_logprobs = self.nets.reference_logprobs(*args, self.cfg.temperature)
            parts.append((logprobs, values, entropy, ref_logprobs))
        return tuple(torch.cat(x) for x in zip(*parts, strict=True))  # type: ignore[return-value]

    def evaluate(self) -> tuple[list[dict[str, Any]], Exception | None]:
        """The current policy on the held-out prompts: each rank samples a slice (same draws at
        every evaluation), scores it and measures its KL to the reference; every rank gets all
        rows, in prompt order, or the scoring failure of this rank."""
        cfg = self.cfg
        per_rank = -(-len(self.held_out) // self.world)
        mine = self.held_out[self.rank * per_rank :][:per_rank]
        # Equal slices: under FSDP every rank must run the same forwards.
        padded = mine + [self.held_out[0]] * (per_rank - len(mine))
        generator = torch.Generator(self.device).manual_seed(cfg.seed * 1000 + 999 - self.rank)
        query, query_mask = self._encode(padded)
        chunks = [
            self._generate(query[rows], query_mask[rows], generator)
            for rows in (
                slice(start, start + cfg.score_chunk_size)
                for start in range(0, per_rank, cfg.score_chunk_size)
            )
        ]
        response, mask, has_stop = (torch.cat(x) for x in zip(*chunks, strict=True))
        logprobs, _, _, ref_logprobs = self._rollout_forward(query, query_mask, response, mask)
        kl = ((logprobs - ref_logprobs) * mask).sum(1).tolist()
        texts = decode_responses(self.tokenizer, response.cpu(), mask.cpu(), has_stop.cpu())
        n = len(mine)
        rewards, error = _await_scores([self.scorer.submit(mine, texts[:n])] if n else [])
        rows = [
            {
                "prompt": p,
                "response": t,
                "reward": rewards[i] if error is None else float("nan"),
                "kl": kl[i],
                "tokens": int(mask[i].sum()),
                "stopped": bool(has_stop[i]),
            }
            for i, (p, t) in enumerate(zip(mine, texts, strict=False))
        ]
        return [row for part in self.dist.gather(rows) for row in part], error

    def _evaluate(
        self, samples: str | None, rng: dict[str, Any], record: dict[str, float] | None = None
    ) -> dict[str, float]:
        """``eval/*`` statistics (and the before/after samples file); stops the run on a
        scoring failure of any rank, logging ``record`` and checkpointing first."""
        rows, error = self.evaluate()
        self._stop_if_any_rank_failed(error, rng, record)
        if samples and self.is_main and self.cfg.num_eval_samples:
            with open(self.output / samples, "w", encoding="utf-8") as f:
                for row in rows[: self.cfg.num_eval_samples]:
                    f.write(json.dumps(row) + "\n")
        return eval_stats(rows)

    # ------------------------------------------------------------------------------------------
    # Boilerplate: distribution, checkpoints, logs
    # ------------------------------------------------------------------------------------------

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _stop_if_any_rank_failed(
        self,
        error: Exception | None,
        rng: dict[str, Any],
        record: dict[str, float] | None = None,
    ) -> None:
        """Every rank learns whether any rank failed; if so all checkpoint and stop together."""
        if not self.dist.any(error is not None):
            return
        if record is not None:
            self._log(record)
        self.save_checkpoint(rng)
        reason = error or "another rank could not get its rewards"
        raise RunStopped(
            f"step {self.step}: {reason}; checkpoint saved at step {self.step}, "
            "rerun with --resume to continue"
        ) from error

    def _whiten(self, x: Tensor, mask: Tensor, shift_mean: bool) -> Tensor:
        """Masked whitening with mean and variance over every rank's tokens."""
        if self.world == 1:
            return pm.masked_whiten(x, mask, shift_mean=shift_mean)
        m = mask.float()
        sums = self.dist.all_sum(torch.stack([(x * m).sum(), (x * x * m).sum(), m.sum()]))
        n = sums[2]
        mean = sums[0] / n
        var = (sums[1] / n - mean**2) * n / (n - 1)
        whitened = (x - mean) * torch.rsqrt(var + 1e-8)
        return whitened if shift_mean else whitened + mean

    def _rng_state(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": np.random.get_state(),
        }

    def save_policy(self, folder: Path) -> None:
        """The trained policy as a plain Hugging Face directory (merged, with LoRA, beside its
        adapter), the value head and the tokenizer: what ``ppo-client sample`` loads."""
        state = full_state_dict(self.policy, sharded=True) if self.sharded else None
        if self.is_main:
            save_networks(self.nets, folder, state, merged=bool(self.nets.adapters))

    def save_checkpoint(self, rng: dict[str, Any]) -> None:
        """Everything a resume needs, in a folder that a crash at any instant leaves usable."""
        rngs = self.dist.gather(rng)
        state = full_state_dict(self.policy, sharded=True) if self.sharded else None
        optimizer = optimizer_state(self.policy, self.optimizer, self.sharded)
        if not self.is_main:
            return

        def write(folder: Path) -> None:
            save_networks(self.nets, folder / "policy", state)
            torch.save(
                {
                    "step": self.step,
                    "optimizer": optimizer,
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "kl_ctl": self.kl_ctl.state_dict(),
                    "lagrange": self.lagrange.state_dict() if self.lagrange else None,
                    "rng": rngs,
                    "config": self.cfg.to_dict(),
                },
                folder / "trainer_state.pt",
            )

        write_checkpoint(self.output, self.step, write)

    def load_checkpoint(self, folder: Path) -> None:
        """The trainer's state from a checkpoint whose networks :func:`build_networks` loaded."""
        state = torch.load(folder / "trainer_state.pt", weights_only=False)
        if len(state["rng"]) != self.world:
            raise ConfigError(
                f"--resume: checkpoint was written by {len(state['rng'])} ranks, now {self.world}"
            )
        load_optimizer_state(self.policy, self.optimizer, state["optimizer"], self.sharded)
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        if self.lagrange is not None and state.get("lagrange"):
            self.lagrange.load_state_dict(state["lagrange"])
        self.step = state["step"]
        rng = state["rng"][self.rank]
        self.generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])

    def _log(self, stats: dict[str, float]) -> None:
        if self.runlog is not None:
            self.runlog.write(stats)

    def close(self) -> None:
        self.scorer.close()
        if self.cost_scorer:
            self.cost_scorer.close()
        if self.runlog is not None:
            self.runlog.close()

    def __enter__(self) -> PPOTrainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Timer:
    """Accumulates wall seconds per phase name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> _Phase:
        return _Phase(self, name)


class _Phase:
    def __init__(self, timer: _Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.start
        self.timer.seconds[self.name] = self.timer.seconds.get(self.name, 0.0) + elapsed


def _safety_stats(r: Rollout) -> dict[str, Tensor]:
    if r.costs is None:
        return {}
    return {
        "safety/cost": r.costs.mean(),
        "safety/unsafe_share": (r.costs > 0.5).float().mean(),  # the cost model's sign
    }


def _await_scores(futures: list[concurrent.futures.Future]) -> tuple[list[float], Exception | None]:
    """All chunks' scores in order, or the reward service's error (any other error is raised)."""
    from ppo_client.reward_client import RewardServiceError

    try:
        return [s for f in futures for s in f.result()], None
    except RewardServiceError as exc:
        return [], exc
