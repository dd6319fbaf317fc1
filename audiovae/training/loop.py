"""The training machinery every trainable model shares: state, one step, the loop, checkpoints.

`TrainState` holds everything that changes while a model trains and alone knows the checkpoint layout.
`train_step` is one optimizer step of any objective that returns a `LossResult`; `train_loop` runs steps
with a progress bar, logging, validation, checkpoints, a step and a time budget, and Ctrl-C. The VAE
(audiovae/training/vae_stage.py) and the learned prior use the same pieces with their own objective and data.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from audiovae.errors import UserError
from audiovae.io.checkpoint import save_checkpoint
from audiovae.training.losses import LossResult


class EpochBatches:
    """Deterministic batches: epoch e shuffles with seed (seed, e); rank r takes every world-th index.

    Knowing only the step, a resumed run draws exactly the batches the interrupted one would have.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.size, self.batch_size, self.seed, self.rank, self.world = size, batch_size, seed, rank, world
        self.per_step = batch_size * world
        self.steps_per_epoch = max(1, size // self.per_step)

    def epoch(self, epoch: int, start: int = 0) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        repeats = math.ceil(self.steps_per_epoch * self.per_step / self.size)
        order = torch.cat([torch.randperm(self.size, generator=generator) for _ in range(repeats)]).tolist()
        return [order[s * self.per_step : (s + 1) * self.per_step][self.rank :: self.world]
                for s in range(start, self.steps_per_epoch)]


class StopFlag:
    """SIGINT/SIGTERM ask the loop to stop at the next step boundary; a second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class EMA:
    """Exponential moving average of a model's floating-point state (weights and buffers)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                self.state[key].lerp_(value, 1.0 - self.decay)
            else:
                self.state[key].copy_(value)


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> Any: ...


def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def adam(parameters: Iterable[nn.Parameter], learning_rate: float, weight_decay: float = 0.0,
         decoupled: bool = False, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """Adam, or AdamW when `decoupled`, in PyTorch's fused form: one kernel over every parameter instead of a
    Python loop over tensors (quickstart's 96 small tensors: 0.9 ms a step instead of 7 ms on 2 CPU cores)."""
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    return kind(parameters, lr=learning_rate, betas=betas, weight_decay=weight_decay, fused=True)


@dataclass
class TrainState:
    """Everything that changes while one model trains. The only code that knows the checkpoint layout:

    {"step", "best_score", "model", "ema", "optimizer", "adversary", "rng", "rng_ranks"} (+ what the caller
    adds, e.g. the recipe). `rng` is this process's random state (rank 0's when saved by rank 0, the 0.1
    layout); `rng_ranks` holds every rank's under torchrun.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    ema: EMA | None = None
    adversary: Stateful | None = None
    step: int = 0
    best_score: float | None = None
    _shadow: nn.Module | None = None

    def state_dict(self, device: torch.device) -> dict[str, Any]:
        """The checkpoint payload. Under torchrun every rank must call it (it gathers the random states)."""
        rng = rng_state(device)
        ranks = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(ranks, {k: v.cpu() for k, v in rng.items()})
        return {"step": self.step, "best_score": self.best_score, "model": self.model.state_dict(),
                "ema": self.ema.state if self.ema is not None else None, "optimizer": self.optimizer.state_dict(),
                "adversary": self.adversary.state_dict() if self.adversary is not None else None,
                "rng": rng, "rng_ranks": ranks}

    def load_state_dict(self, saved: dict[str, Any], device: torch.device, rank: int = 0) -> None:
        """Restore from a checkpoint payload (0.1 checkpoints included: they lack `rng_ranks`)."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.ema is not None and saved.get("ema") is not None:
            self.ema.state = {k: v.to(device) for k, v in saved["ema"].items()}
        if self.adversary is not None and saved.get("adversary") is not None:
            self.adversary.load_state_dict(saved["adversary"])
        self.step, self.best_score = int(saved["step"]), saved.get("best_score")
        ranks = saved.get("rng_ranks")
        set_rng_state(ranks[rank] if ranks and rank < len(ranks) else saved["rng"], device)

    def save(self, path: Path, device: torch.device, extra: dict[str, Any], write: bool = True) -> None:
        """Write the state (and `extra`, e.g. the recipe) to `path` atomically; `write=False` on ranks > 0."""
        payload = self.state_dict(device)
        if write:
            save_checkpoint(path, {**extra, **payload})

    def eval_model(self) -> nn.Module:
        """The weights to validate and synthesize with: the EMA's when there is one."""
        if self.ema is None:
            return self.model
        if self._shadow is None:
            self._shadow = copy.deepcopy(self.model)  # draws no random numbers
        self._shadow.load_state_dict(self.ema.state)
        return self._shadow


def train_step(state: TrainState, batch: Any, loss_fn: Callable[[TrainState, Any], LossResult],
               grad_clip: float) -> tuple[LossResult, float]:
    """One optimizer step of `loss_fn(state, batch)`; returns the loss and the gradient norm.

    A non-finite loss raises NonFiniteLoss before any weight changes.
    """
    loss = loss_fn(state, batch)
    if not torch.isfinite(loss.total):
        raise NonFiniteLoss(state.step, loss)
    state.optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    grad_norm = nn.utils.clip_grad_norm_(state.model.parameters(), grad_clip or float("inf"))
    state.optimizer.step()
    if state.ema is not None:
        state.ema.update(state.model)
    state.step += 1
    return loss, float(grad_norm)


class NonFiniteLoss(Exception):
    def __init__(self, step: int, loss: LossResult):
        terms = ", ".join(f"{name} {value.item():.4g}" for name, value in loss.terms.items())
        super().__init__(f"step {step}: the loss became {loss.total.item()} ({terms})")


class Schedule(Protocol):
    """What train_loop reads of a config (TrainConfig, PriorConfig)."""

    max_steps: int
    max_minutes: float | None
    valid_every: int
    checkpoint_every: int
    log_every: int
    grad_clip: float


@dataclass
class Hooks:
    """What one model's training supplies to train_loop.

    batches(step): the training batches from `step` to the end of its epoch; loss(state, batch);
    validate(state) -> scores with 'score' (lower is better); save(name) writes checkpoints/<name>;
    log(split, step, values); rates: per-step amounts logged per second (e.g. audio seconds).
    """

    batches: Callable[[int], Iterable[Any]]
    loss: Callable[[TrainState, Any], LossResult]
    validate: Callable[[TrainState], dict[str, float]]
    save: Callable[[str], None]
    log: Callable[[str, int, dict[str, float]], None]
    rates: dict[str, float]
    failure_hint: str  # appended to the error when the loss turns non-finite
    # the learning rate at a progress through the budget (0-1, steps or minutes, whichever is further);
    # None leaves the optimizer's own
    learning_rate: Callable[[float], float] | None = None


def learning_rate_scale(progress: float, decay_fraction: float, final: float) -> float:
    """Hold, then fall linearly to `final` over the last `decay_fraction` of the budget. A budget of minutes
    ends at a step no one knows in advance, so the decay follows whichever of steps or time is further."""
    start = 1.0 - decay_fraction
    if decay_fraction <= 0 or progress <= start:
        return 1.0
    return 1.0 - (1.0 - final) * min(1.0, (progress - start) / decay_fraction)


def train_loop(state: TrainState, schedule: Schedule, hooks: Hooks, description: str, show_progress: bool,
               announce: bool = True) -> str:
    """Train until max_steps, the time budget or Ctrl-C; returns 'finished', 'time limit' or 'interrupted'.

    `announce`: print each validation's score (rank 0). Validates every valid_every steps (keeping checkpoints/best), checkpoints every checkpoint_every, and
    on the way out validates the final weights (when it stopped between validations) and writes `last`.
    """
    from tqdm import tqdm

    def validate() -> None:
        scores = hooks.validate(state)
        hooks.log("valid", state.step, scores)
        if announce:
            bar.write(f"step {state.step}: valid loss {scores['loss']:.4f}, score {scores['score']:.4f}",
                      file=sys.stderr)
        if state.best_score is None or scores["score"] < state.best_score:
            state.best_score = scores["score"]
            hooks.save("best")

    started = time.monotonic()
    logged_step, logged_time = state.step, started
    stopped = "finished"
    bar = tqdm(total=schedule.max_steps, initial=state.step, unit="step", desc=description,
               disable=not show_progress, file=sys.stderr, dynamic_ncols=True)
    state.model.train()
    with StopFlag() as stop:
        while state.step < schedule.max_steps and stopped == "finished":
            for batch in hooks.batches(state.step):
                if hooks.learning_rate is not None:
                    progress = (state.step + 1) / schedule.max_steps
                    if schedule.max_minutes is not None:
                        progress = max(progress, (time.monotonic() - started) / (schedule.max_minutes * 60))
                    for group in state.optimizer.param_groups:
                        group["lr"] = hooks.learning_rate(progress)
                try:
                    loss, grad_norm = train_step(state, batch, hooks.loss, schedule.grad_clip)
                except NonFiniteLoss as error:
                    raise UserError(f"{error}; {hooks.failure_hint}") from None
                step = state.step
                bar.update(1)
                if step % schedule.log_every == 0 or step == schedule.max_steps:
                    now = time.monotonic()
                    rate = (step - logged_step) / max(now - logged_time, 1e-9)  # steps/s since the last log
                    logged_step, logged_time = step, now
                    values = {**loss.logs(), "grad_norm": grad_norm, "steps_per_second": rate,
                              "learning_rate": state.optimizer.param_groups[0]["lr"],
                              **{name: rate * amount for name, amount in hooks.rates.items()}}
                    hooks.log("train", step, values)
                    bar.set_postfix(loss=f"{values['loss']:.3f}", it_s=f"{rate:.2f}")
                if step % schedule.valid_every == 0 or step == schedule.max_steps:
                    validate()
                if step % schedule.checkpoint_every == 0:
                    hooks.save("last")
                timed_out = schedule.max_minutes is not None and time.monotonic() - started > schedule.max_minutes * 60
                if stop.requested or timed_out or step >= schedule.max_steps:
                    stopped = "interrupted" if stop.requested else "time limit" if timed_out else "finished"
                    break
    bar.close()
    if state.step % schedule.valid_every and state.step != schedule.max_steps and state.step > 0:
        validate()  # stopped between validations (time limit, Ctrl-C): score the final weights too
    hooks.save("last")
    return stopped
