"""The PPO loop: ``PPOTrainer(config).train()``.

One step reads top to bottom in numbered phases: 1. rollout, 2. reward, 3. KL shaping,
4. advantages, 5. PPO epochs over minibatches, 6. log and checkpoint. The math lives in
:mod:`ppo_client.ppo_math`, the token plumbing in :mod:`ppo_client.rollout`; this file is the
order of operations plus the boilerplate (distribution, checkpoints, logs) kept apart below it.

Under ``torchrun`` each rank generates and scores its own slice of the prompts, whitening and
the KL controller use statistics over all ranks, and DDP averages the gradients (gloo on CPU,
NCCL on GPU).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ppo_client import ppo_math as pm
from ppo_client.checkpoint import latest_checkpoint, write_checkpoint
from ppo_client.config import ConfigError, PPOConfig
from ppo_client.rollout import (
    PolicyWithValueHead,
    Rollout,
    decode_responses,
    disable_dropout,
    encode_prompts,
    gather_logprobs,
    response_logits,
    sample,
    truncate_after_stop,
)

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
    def __init__(self, config: PPOConfig, reward_fn: RewardFn | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = cfg = config.validate()
        if reward_fn is None and not cfg.reward_url:
            raise ConfigError("reward_url is required (or pass reward_fn to PPOTrainer)")
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.rank, self.world = _init_distributed()
        if cfg.rollout_batch_size % self.world:
            raise ConfigError(f"rollout_batch_size must be a multiple of {self.world} ranks")
        self.local_batch = cfg.rollout_batch_size // self.world
        if self.local_batch % cfg.num_minibatches:
            raise ConfigError("rollout_batch_size / ranks must be a multiple of num_minibatches")
        self.device = torch.device(
            f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        )
        self.output = Path(cfg.output)
        torch.manual_seed(cfg.seed)

        self.tokenizer = AutoTokenizer.from_pretrained(cfg.policy)
        self.pad_id, self.stop_id = _special_ids(self.tokenizer, cfg.stop_token)
        lm = AutoModelForCausalLM.from_pretrained(cfg.policy, dtype=torch.float32)
        self.ref = AutoModelForCausalLM.from_pretrained(cfg.policy, dtype=torch.float32)
        for model in (lm, self.ref):
            disable_dropout(model)
            model.eval()  # eval mode everywhere: no dropout, same numerics in every forward
        self.ref.requires_grad_(False)
        self.policy = PolicyWithValueHead(lm).to(self.device)
        self.ref.to(self.device)
        self.model: torch.nn.Module = self.policy
        if self.world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(self.policy)
        self.optimizer = torch.optim.AdamW(
            self.policy.parameters(),
            lr=cfg.learning_rate,
            eps=cfg.adam_eps,
            weight_decay=cfg.weight_decay,
        )
        self.kl_ctl: pm.AdaptiveKLController | pm.FixedKLController = (
            pm.AdaptiveKLController(
                cfg.kl_coef,
                cfg.kl_target,
                cfg.kl_horizon
                or pm.run_kl_horizon(cfg.steps * cfg.rollout_batch_size, cfg.rollout_batch_size),
            )
            if cfg.adaptive_kl
            else pm.FixedKLController(cfg.kl_coef)
        )
        self.prompts, self.held_out = split_prompts(cfg)
        # On the model's device: torch.multinomial refuses a CPU generator for CUDA probabilities.
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed * 1000 + self.rank)
        self.step = 0
        self.scorer = _CallableScorer(reward_fn) if reward_fn else self._reward_client()
        if cfg.resume:
            self.load_checkpoint()

    def _reward_client(self) -> Any:
        from ppo_client.reward_client import RewardClient

        cfg = self.cfg
        return RewardClient(
            cfg.reward_url,
            cfg.reward_model,
            api_key=cfg.reward_api_key,
            chunk_size=max(cfg.score_chunk_size, 16),
            timeout=cfg.reward_timeout,
            max_retries=cfg.reward_max_retries,
            normalize=cfg.reward_normalize,
        )

    # ------------------------------------------------------------------------------------------
    # The algorithm
    # ------------------------------------------------------------------------------------------

    def train(self) -> list[dict[str, float]]:
        """Run from ``self.step`` to ``cfg.steps``; returns the per-step logs of this call."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        history: list[dict[str, float]] = []
        if self.step == 0 and self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
        eval_prompts = self.held_out[: cfg.num_eval_samples]
        if self.step == 0 and eval_prompts:
            self._write_samples(eval_prompts, "samples_before.jsonl")
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
                rollout, scores, error = self.collect(self.step)
                # Every rank learns whether any rank failed before anyone enters another
                # collective: a rank alone in all_gather while the others all-reduce hangs.
                if self._any_rank(error is not None):
                    self.save_checkpoint(rng_at_start)
                    reason = error or "another rank could not get its rewards"
                    raise RunStopped(
                        f"step {self.step}: {reason}; checkpoint saved at step {self.step}, "
                        "rerun with --resume to continue"
                    ) from error
                stats = self.update(rollout, scores)
                self.step += 1
                stats["step"] = self.step
                history.append(stats)
                if self.is_main:
                    self._log(stats)
                    bar.update()
                    bar.set_postfix(
                        reward=f"{stats['reward/raw']:.3f}",
                        kl=f"{stats['kl']:.2f}",
                        wait=f"{stats['time/reward_wait_share']:.0%}",
                    )
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save_checkpoint(self._rng_state())
        finally:
            bar.close()
        self.save_policy(self.output)
        if eval_prompts:
            self._write_samples(eval_prompts, "samples_after.jsonl")
        if self.is_main:
            from ppo_client.plots import plot_run, write_sample_table

            plot_run(self.output / "log.jsonl", self.output / "plot.png")
            if eval_prompts:
                write_sample_table(self.output, self.output / "samples.md")
        return history

    def collect(self, step: int) -> tuple[Rollout, Tensor, Exception | None]:
        """Phases 1–2: generate this rank's prompts chunk by chunk, scoring in the background.

        A reward-service failure comes back as the third value instead of being raised, so the
        caller can agree with the other ranks before anyone stops.
        """
        cfg = self.cfg
        idx = prompt_indices(len(self.prompts), step, cfg.rollout_batch_size, cfg.seed)
        prompts = [self.prompts[i] for i in idx][self.rank * self.local_batch :][: self.local_batch]
        timer = _Timer()

        # 1. rollout: one left-padded query block, generated in chunks; each chunk is sent for
        #    scoring as soon as it is decoded, so the service works while the next one generates.
        query, query_mask = encode_prompts(self.tokenizer, prompts, cfg.prompt_max_tokens)
        query, query_mask = query.to(self.device), query_mask.to(self.device)
        responses, texts, futures = [], [], []
        with timer("generate"):
            for start in range(0, len(prompts), cfg.score_chunk_size):
                chunk = slice(start, start + cfg.score_chunk_size)
                raw = sample(
                    self.policy.lm,
                    query[chunk],
                    query_mask[chunk],
                    cfg.response_length,
                    cfg.temperature,
                    self.stop_id,
                    self.pad_id,
                    self.generator,
                )
                response, mask, _ = truncate_after_stop(raw.cpu(), self.stop_id, self.pad_id)
                chunk_texts = decode_responses(self.tokenizer, response, mask, self.stop_id)
                if cfg.overlap_scoring:
                    futures.append(self.scorer.submit(prompts[chunk], chunk_texts))
                responses.append(raw)
                texts.extend(chunk_texts)
        if not cfg.overlap_scoring:
            with timer("reward_wait"):
                futures.append(self.scorer.submit(prompts, texts))
                concurrent.futures.wait(futures)
        response, response_mask, has_stop = truncate_after_stop(
            torch.cat(responses), self.stop_id, self.pad_id
        )
        # Old logprobs and values from the very function the update calls (ratio ≡ 1 at lr 0);
        # these forwards also overlap the scoring of the last chunk.
        with timer("forward"), torch.no_grad():
            logprobs, values, entropy = self.policy(
                query, query_mask, response, response_mask, cfg.temperature
            )
            ref_logits, _ = response_logits(
                self.ref, query, query_mask, response, response_mask, cfg.temperature
            )
            ref_logprobs = gather_logprobs(ref_logits, response)

        # 2. reward: the service's scores; a response that never stopped gets a fixed low score.
        with timer("reward_wait"):
            raw_scores, error = _await_scores(futures)
        scores = torch.tensor(raw_scores, dtype=torch.float32, device=self.device)
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
        )
        return rollout, scores, error

    def update(self, r: Rollout, raw_scores: Tensor) -> dict[str, float]:
        """Phases 3–6 on one rollout."""
        cfg = self.cfg
        timer = _Timer()
        timer.seconds.update(self._timings)
        mask = r.response_mask
        scores = raw_scores.clone()
        if cfg.missing_eos_score is not None:
            scores = torch.where(r.has_stop, scores, torch.full_like(scores, cfg.missing_eos_score))

        # 3. KL shaping: −β·KL on every token, the score on the last real one.
        kl = pm.kl_penalty(r.logprobs, r.ref_logprobs, cfg.kl_estimator) * mask
        rewards, non_score = pm.shaped_rewards(scores, kl, mask, self.kl_ctl.value)
        if cfg.whiten_rewards:
            rewards = self._whiten(rewards, mask, shift_mean=False)

        # 4. advantages: GAE over response tokens (γ, λ), whitened with centring.
        advantages, returns = pm.gae(rewards, r.values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = self._whiten(advantages, mask, shift_mean=True)

        # 5. PPO epochs over shuffled minibatches.
        mb_stats: list[dict[str, Tensor]] = []
        mb_size = self.local_batch // cfg.num_minibatches
        with timer("train"):
            self.model.train()
            for _ in range(cfg.ppo_epochs):
                order = torch.randperm(
                    self.local_batch, generator=self.generator, device=self.device
                )
                for start in range(0, self.local_batch, mb_size):
                    mb = order[start : start + mb_size]
                    mb_stats.append(self._minibatch_step(r, mb, advantages, returns))
            self.model.eval()

        # 6. log: statistics over all ranks, then let β react to the measured KL.
        seq_kl = (pm.kl_penalty(r.logprobs, r.ref_logprobs, "k1") * mask).sum(1)
        stats = {
            "reward/raw": raw_scores.mean(),
            "reward/raw_std": raw_scores.std(correction=0),
            "reward/score": scores.mean(),
            "reward/normalized": (rewards * mask).sum(1).mean(),
            "reward/non_score": non_score.sum(1).mean(),
            "kl": seq_kl.mean(),
            "entropy": pm.masked_mean(r.entropy, mask),
            "response_length": mask.sum(1).mean(),
            "eos_rate": r.has_stop.float().mean(),
            "value/explained_variance": pm.explained_variance(r.values, returns, mask),
            **{k: torch.stack([s[k] for s in mb_stats]).mean() for k in mb_stats[0]},
        }
        out = {
            k: float(v)
            for k, v in zip(stats, self._all_mean(torch.stack(list(stats.values()))), strict=True)
        }
        out["kl_coef"] = self.kl_ctl.value
        self.kl_ctl.update(out["kl"], cfg.rollout_batch_size)
        seconds = timer.seconds
        step_time = sum(seconds.values())
        for name in ("generate", "forward", "reward_wait", "train"):
            out[f"time/{name}"] = seconds.get(name, 0.0)
        out["time/step"] = step_time
        out["time/reward_wait_share"] = seconds.get("reward_wait", 0.0) / max(step_time, 1e-9)
        return out

    def _minibatch_step(
        self, r: Rollout, mb: Tensor, advantages: Tensor, returns: Tensor
    ) -> dict[str, Tensor]:
        cfg = self.cfg
        mask = r.response_mask[mb]
        logprobs, values, entropy = self.model(
            r.query[mb],
            r.query_mask[mb],
            r.response[mb],
            r.response_mask[mb].long(),
            cfg.temperature,
        )
        pg_loss, pg_stats = pm.policy_loss(
            logprobs, r.logprobs[mb], advantages[mb], mask, cfg.cliprange
        )
        vf_loss, vf_clipfrac = pm.value_loss(
            values, r.values[mb], returns[mb], mask, cfg.cliprange_value
        )
        loss = pg_loss + cfg.vf_coef * vf_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        return {
            "loss/policy": pg_loss.detach(),
            "loss/value": vf_loss.detach(),
            "policy/clipfrac": pg_stats["clipfrac"],
            "policy/approx_kl": pg_stats["approx_kl"],
            "policy/ratio": pg_stats["ratio"],
            "value/clipfrac": vf_clipfrac,
            "policy/entropy_new": pm.masked_mean(entropy.detach(), mask),
        }

    # ------------------------------------------------------------------------------------------
    # Boilerplate: distribution, checkpoints, samples, logs
    # ------------------------------------------------------------------------------------------

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _all_mean(self, x: Tensor) -> Tensor:
        if self.world > 1:
            x = x.clone()
            dist.all_reduce(x)
            x /= self.world
        return x

    def _any_rank(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any."""
        if self.world == 1:
            return flag
        x = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return bool(x.item())

    def _whiten(self, x: Tensor, mask: Tensor, shift_mean: bool) -> Tensor:
        """Masked whitening with mean and variance over every rank's tokens."""
        if self.world == 1:
            return pm.masked_whiten(x, mask, shift_mean=shift_mean)
        m = mask.float()
        sums = torch.stack([(x * m).sum(), (x * x * m).sum(), m.sum()])
        dist.all_reduce(sums)
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
        """A plain Hugging Face directory (what ``sample`` loads) plus the value head."""
        if not self.is_main:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.policy.lm.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        torch.save(self.policy.value_head.state_dict(), folder / "value_head.pt")

    def save_checkpoint(self, rng: dict[str, Any]) -> None:
        """Everything a resume needs, in a folder that a crash at any instant leaves usable."""
        rngs = [rng]
        if self.world > 1:
            rngs = [None] * self.world
            dist.all_gather_object(rngs, rng)
        if not self.is_main:
            return

        def write(folder: Path) -> None:
            self.save_policy(folder / "policy")
            torch.save(
                {
                    "step": self.step,
                    "optimizer": self.optimizer.state_dict(),
                    "kl_ctl": self.kl_ctl.state_dict(),
                    "rng": rngs,
                    "config": self.cfg.to_dict(),
                },
                folder / "trainer_state.pt",
            )

        write_checkpoint(self.output, self.step, write)

    def load_checkpoint(self) -> None:
        from transformers import AutoModelForCausalLM

        folder = latest_checkpoint(self.output)
        if folder is None:
            raise ConfigError(f"--resume: no complete checkpoint in {self.output}")
        state = torch.load(folder / "trainer_state.pt", weights_only=False)
        if len(state["rng"]) != self.world:
            raise ConfigError(
                f"--resume: checkpoint was written by {len(state['rng'])} ranks, now {self.world}"
            )
        saved = AutoModelForCausalLM.from_pretrained(folder / "policy", dtype=torch.float32)
        self.policy.lm.load_state_dict(saved.state_dict())
        self.policy.value_head.load_state_dict(torch.load(folder / "policy" / "value_head.pt"))
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.step = state["step"]
        rng = state["rng"][self.rank]
        self.generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        if self.is_main:
            _truncate_log(self.output / "log.jsonl", self.step)

    def _log(self, stats: dict[str, float]) -> None:
        with open(self.output / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(stats) + "\n")

    def _write_samples(self, prompts: list[str], name: str) -> None:
        """Seeded samples of the current policy on fixed prompts, scored: the before/after table."""
        if not self.is_main:
            return
        query, query_mask = encode_prompts(self.tokenizer, prompts, self.cfg.prompt_max_tokens)
        generator = torch.Generator(self.device).manual_seed(self.cfg.seed)
        raw = sample(
            self.policy.lm,
            query.to(self.device),
            query_mask.to(self.device),
            self.cfg.response_length,
            self.cfg.temperature,
            self.stop_id,
            self.pad_id,
            generator,
        )
        response, mask, _ = truncate_after_stop(raw.cpu(), self.stop_id, self.pad_id)
        texts = decode_responses(self.tokenizer, response, mask, self.stop_id)
        rewards = self.scorer.score(prompts, texts)
        with open(self.output / name, "w", encoding="utf-8") as f:
            for p, t, s in zip(prompts, texts, rewards, strict=True):
                f.write(json.dumps({"prompt": p, "response": t, "reward": s}) + "\n")

    def close(self) -> None:
        self.scorer.close()

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


def _init_distributed() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist.get_rank(), dist.get_world_size()


def _special_ids(tokenizer: Any, stop_token: str) -> tuple[int, int]:
    """(pad id, stop id); PAD must differ from the stop token or every padded row 'stopped'."""
    if tokenizer.pad_token_id is None:
        raise ConfigError("the policy's tokenizer has no PAD token; add one distinct from EOS")
    if stop_token == "eos":
        stop_id = tokenizer.eos_token_id
        if stop_id is None:
            raise ConfigError("the policy's tokenizer has no EOS token; set stop_token")
    else:
        ids = tokenizer(stop_token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ConfigError(f"stop_token {stop_token!r} is {len(ids)} tokens, not one")
        stop_id = ids[0]
    if stop_id == tokenizer.pad_token_id:
        raise ConfigError("PAD and the stop token are the same id; give the tokenizer its own PAD")
    return tokenizer.pad_token_id, stop_id


def _await_scores(futures: list[concurrent.futures.Future]) -> tuple[list[float], Exception | None]:
    """All chunks' scores in order, or the reward service's error (any other error is raised)."""
    from ppo_client.reward_client import RewardServiceError

    try:
        return [s for f in futures for s in f.result()], None
    except RewardServiceError as exc:
        return [], exc


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint, so a resumed run's log has each step once."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
