"""`audiovae train`: one training loop for every model family, on CPU or CUDA, resumable bit for bit.

Read it top to bottom: set up (device, data, run folder, model, optimizer), maybe restore a checkpoint,
then loop: batch -> loss -> step, validating and checkpointing every N steps. Under `torchrun` the same
loop runs data-parallel; rank 0 alone writes logs and checkpoints.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from audiovae.adversarial import Adversary
from audiovae.checkpoint import load_checkpoint, save_checkpoint
from audiovae.config import Recipe, dump_recipe, load_recipe, recipe_from_saved
from audiovae.dataset import SegmentDataset, open_dataset
from audiovae.errors import UserError
from audiovae.fileio import write_atomic
from audiovae.losses import mel_distance, vae_loss
from audiovae.models import VAE, build_model
from audiovae.runlog import RunLog
from audiovae.runs import DEFAULT_RUNS, latest_run_of, new_run_dir, newest_checkpoint


@dataclass(frozen=True)
class TrainResult:
    """Where a training run ended."""

    run_dir: Path
    step: int
    best_score: float | None
    stopped: str  # finished | time limit | interrupted


def select_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU; 'cuda' without a GPU is a UserError."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    return torch.device("cuda", local_rank)


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


def _unwrap(model: nn.Module) -> VAE:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _to_model_input(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    return batch.to(device, non_blocking=True)


@torch.no_grad()
def validate(model: VAE, batches: list[torch.Tensor], recipe: Recipe, step: int, device: torch.device,
             autocast) -> dict[str, float]:
    """Mean validation loss terms over fixed batches; `score` (lower is better) picks the best checkpoint.

    score: multi-scale mel distance for waveform models, L1 of log-mel frames for the mel model.
    """
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    for batch in batches:
        x = _to_model_input(batch, device)
        with autocast():
            out = model(x)
        loss = vae_loss(x, out.reconstruction.float(), out.posterior, recipe.loss, recipe.data.sample_rate, step)
        terms = {"loss": loss.total.item(), "reconstruction": loss.reconstruction.item(), "kl": loss.kl.item()}
        if model.features == "wave":
            terms["mel_distance"] = mel_distance(x, out.reconstruction.float(), recipe.data.sample_rate).item()
        else:
            terms["frame_l1"] = (x - out.reconstruction.float()).abs().mean().item()
        for key, value in terms.items():
            totals[key] = totals.get(key, 0.0) + value / len(batches)
    totals["score"] = totals.get("mel_distance", totals.get("frame_l1"))
    model.train(was_training)
    return totals


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _prepare_run_dir(recipe: Recipe, runs_root: Path, run_dir: Path | None, resume: bool) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to resume from or None)."""
    if resume:
        run_dir = run_dir or latest_run_of(runs_root, recipe.name)
        saved = newest_checkpoint(run_dir) if run_dir is not None else None
        if saved is None:
            where = run_dir or runs_root / recipe.name
            raise UserError(f"{where}: no checkpoint to resume from (start without --resume)")
        return run_dir, saved
    if run_dir is not None and run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(f"{run_dir}: run folder exists; pass --resume to continue it or choose another")
    return run_dir or new_run_dir(runs_root, recipe.name), None


def train(recipe: Recipe | str | Path, *, overrides: tuple[str, ...] = (), run_dir: str | Path | None = None,
          resume: bool = False, runs_root: str | Path = DEFAULT_RUNS, progress: bool = True) -> TrainResult:
    """Train the model a recipe describes; see the module docstring. Returns where the run ended."""
    from tqdm import tqdm

    recipe_path = None
    if not isinstance(recipe, Recipe):
        recipe_path = str(recipe)
        recipe = load_recipe(recipe, overrides)
    run_dir = Path(run_dir) if run_dir is not None else None
    runs_root = Path(runs_root)
    cfg = recipe.train

    # ---- distributed setup (torchrun sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT) ----------------
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = select_device(cfg.device)
    distributed = world > 1
    if distributed and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    is_main = rank == 0

    # ---- data -----------------------------------------------------------------------------------------------
    dataset = open_dataset(recipe.data.folder, recipe.data, recipe_path)
    train_array, valid_array = dataset.arrays["train"], dataset.arrays["valid"]
    if len(train_array) == 0:
        raise UserError(f"{recipe.data.folder}: the train split is empty; prepare more audio")
    hop_length = recipe.data.mel.hop_length if recipe.data.features == "mel" else 1
    train_set = SegmentDataset(train_array, recipe.data.features, cfg.crop_samples, cfg.gain_db, cfg.seed, hop_length)
    if len(valid_array) == 0:
        if is_main:
            print(f"warning: {recipe.data.folder} has no valid split; validating on training segments",
                  file=sys.stderr)
        valid_array = train_array
    valid_set = SegmentDataset(valid_array, recipe.data.features)
    valid_count = min(len(valid_set), cfg.valid_batches * cfg.batch_size)
    valid_batches = [torch.stack([valid_set[i] for i in range(s, min(s + cfg.batch_size, valid_count))])
                     for s in range(0, valid_count, cfg.batch_size)]
    batches = EpochBatches(len(train_set), cfg.batch_size, cfg.seed, rank, world)

    # ---- run folder, model, optimizer -----------------------------------------------------------------------
    run_dir, resume_from = _prepare_run_dir(recipe, runs_root, run_dir, resume) if is_main else (None, None)
    if distributed:
        shared = [str(run_dir) if run_dir else None, str(resume_from) if resume_from else None]
        torch.distributed.broadcast_object_list(shared, src=0)
        run_dir, resume_from = Path(shared[0]), Path(shared[1]) if shared[1] else None
    torch.manual_seed(cfg.seed + rank)
    model = build_model(recipe).to(device)
    optimizer_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    adversary = Adversary(recipe.adversarial, device) if recipe.adversarial.enabled else None
    step, best_score = 0, None
    if resume_from is not None:
        state = load_checkpoint(resume_from, map_location=device)
        saved = state["recipe"]
        if recipe_from_saved(saved).model != recipe.model:
            raise UserError(f"{resume_from}: the recipe's model section changed since this run started; "
                            "resume with the original recipe or start a new run")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None and state.get("ema") is not None:
            ema.state = {k: v.to(device) for k, v in state["ema"].items()}
        if adversary is not None and state.get("adversary") is not None:
            adversary.load_state_dict(state["adversary"])
        step, best_score = int(state["step"]), state.get("best_score")
        _set_rng_state(state["rng"], device)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        for stale in (run_dir / "checkpoints").glob(".*.tmp"):  # left by a run killed mid-write
            stale.unlink()
        write_atomic(run_dir / "recipe.yaml", lambda tmp: tmp.write_text(dump_recipe(recipe)))
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if distributed else model
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    def autocast():
        if device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def checkpoint(name: str, extra: dict[str, Any] | None = None) -> None:
        if not is_main:
            return
        save_checkpoint(run_dir / "checkpoints" / f"{name}.pt", {
            "recipe": recipe.to_dict(), "step": step, "model": model.state_dict(),
            "ema": ema.state if ema is not None else None, "optimizer": optimizer.state_dict(),
            "rng": _rng_state(device), "best_score": best_score,
            "adversary": adversary.state_dict() if adversary is not None else None, **(extra or {}),
        })

    shadow = None
    if ema is not None:  # built once, here, so validating never draws from the random state mid-run
        with torch.random.fork_rng(devices=[]):
            shadow = build_model(recipe).to(device)

    def eval_model() -> VAE:
        if shadow is None:
            return model
        shadow.load_state_dict(ema.state)
        return shadow

    # ---- the loop -------------------------------------------------------------------------------------------
    log = RunLog(run_dir, is_main, step if resume_from else None)

    def run_validation() -> None:
        nonlocal best_score
        evaluated = eval_model()
        scores = validate(evaluated, valid_batches, recipe, step, device, autocast)
        log.write("valid", step, scores)
        log.listen(evaluated, valid_batches[0][0], step, recipe.data.sample_rate, cfg.seed)
        if is_main:
            bar.write(f"step {step}: valid loss {scores['loss']:.4f}, score {scores['score']:.4f}", file=sys.stderr)
        if best_score is None or scores["score"] < best_score:
            best_score = scores["score"]
            checkpoint("best")

    started = time.monotonic()
    logged_step, logged_time = step, started
    stopped = "finished"
    bar = tqdm(total=cfg.max_steps, initial=step, unit="step", desc=f"train {recipe.name}",
               disable=not (progress and is_main), file=sys.stderr, dynamic_ncols=True)
    samples_per_step = recipe.training_samples * cfg.batch_size * world
    net.train()
    with StopFlag() as stop:
        while step < cfg.max_steps and stopped == "finished":
            epoch, offset = divmod(step, batches.steps_per_epoch)
            train_set.epoch = epoch
            # its own generator: the loader's worker seeds must not draw from (and shift) the global RNG
            loader = torch.utils.data.DataLoader(train_set, batch_sampler=batches.epoch(epoch, offset),
                                                 num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                                                 generator=torch.Generator().manual_seed(cfg.seed + epoch))
            for batch in loader:
                x = _to_model_input(batch, device)
                if not torch.isfinite(x).all():
                    raise UserError(f"step {step}: a training batch contains NaN or infinite values; check the "
                                    f"dataset in {recipe.data.folder} (re-run audiovae prepare)")
                with autocast():
                    out = net(x)
                loss = vae_loss(x, out.reconstruction.float(), out.posterior, recipe.loss, recipe.data.sample_rate,
                                step)
                adversarial_logs: dict[str, float] = {}
                if adversary is not None and step >= recipe.adversarial.start_step:
                    extra, adversarial_logs = adversary.step(x, out.reconstruction.float())
                    loss.total = loss.total + extra
                if not torch.isfinite(loss.total):
                    last = run_dir / "checkpoints" / "last.pt" if run_dir else None
                    raise UserError(f"step {step}: the loss became {loss.total.item()} (reconstruction "
                                    f"{loss.reconstruction.item():.4g}, KL {loss.kl.item():.4g}); lower "
                                    f"train.learning_rate or check the data; the last good checkpoint is {last}")
                optimizer.zero_grad(set_to_none=True)
                loss.total.backward()
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
                optimizer.step()
                if ema is not None:
                    ema.update(model)
                step += 1
                bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.max_steps:
                    now = time.monotonic()
                    rate = (step - logged_step) / max(now - logged_time, 1e-9)  # steps/s since the last log
                    logged_step, logged_time = step, now
                    values = {"loss": loss.total.item(), "reconstruction": loss.reconstruction.item(),
                              "kl": loss.kl.item(), "beta": loss.beta, "grad_norm": float(grad_norm),
                              "steps_per_second": rate,
                              "audio_seconds_per_second": rate * samples_per_step / recipe.data.sample_rate,
                              **adversarial_logs}
                    log.write("train", step, values)
                    bar.set_postfix(loss=f"{values['loss']:.3f}", kl=f"{values['kl']:.2f}", it_s=f"{rate:.2f}")
                if step % cfg.valid_every == 0 or step == cfg.max_steps:
                    run_validation()
                if step % cfg.checkpoint_every == 0:
                    checkpoint("last")
                timed_out = cfg.max_minutes is not None and time.monotonic() - started > cfg.max_minutes * 60
                if stop.requested or timed_out or step >= cfg.max_steps:
                    stopped = "interrupted" if stop.requested else "time limit" if timed_out else "finished"
                    break
    bar.close()
    if step % cfg.valid_every and step != cfg.max_steps and step > 0:
        run_validation()  # stopped between validations (time limit, Ctrl-C): score the final weights too
    checkpoint("last")
    if distributed:
        _record_rank_checksums(model, log, step)
    log.close()
    if is_main and stopped == "interrupted":
        print(f"interrupted at step {step}; checkpoint saved. Resume with: audiovae train "
              f"{recipe_path or recipe.name} --resume", file=sys.stderr)
    return TrainResult(run_dir, step, best_score, stopped)


def _record_rank_checksums(model: nn.Module, log: RunLog, step: int) -> None:
    """Gather a checksum of every rank's weights into the log, so a test can see that they agree."""
    checksum = torch.tensor([sum(p.detach().double().sum().item() * (i + 1) for i, p in
                                 enumerate(model.parameters()))], dtype=torch.float64)
    gathered = [torch.zeros_like(checksum) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, checksum)
    log.write("ranks", step, {f"weights_checksum_rank{i}": g.item() for i, g in enumerate(gathered)})


