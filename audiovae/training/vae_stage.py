"""`audiovae train`: the VAE stage of a run, on CPU or CUDA, resumable bit for bit.

Read `train` top to bottom: set up (device, data, run folder, model, training state), maybe restore a
checkpoint, then hand the VAE's objective and validation to the shared loop in audiovae/training/loop.py.
Under `torchrun` the same loop runs data-parallel; rank 0 alone writes logs and checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from audiovae.compute.allocator import keep_freed_memory
from audiovae.compute.device import autocast_for, select_device, training_precision
from audiovae.compute.threads import apply_threads, choose_threads
from audiovae.config.recipe import Recipe, dump_recipe, load_recipe, recipe_from_saved
from audiovae.data.dataset import PreparedDataset, SegmentDataset, dataset_changes, open_dataset
from audiovae.data.labels import manifest_labels, segment_labels
from audiovae.data.manifest import read_manifest
from audiovae.errors import UserError
from audiovae.io.atomic import file_sha256, write_atomic
from audiovae.io.checkpoint import load_checkpoint, weights_sha256
from audiovae.io.outputs import check_new_folder
from audiovae.io.run_folder import DEFAULT_RUNS_ROOT, RunFolder
from audiovae.models import VAE, LabelledVAE, build_model, get_family, trained_vae
from audiovae.training import losses
from audiovae.training.adversarial import Adversary
from audiovae.training.log import RunLog
from audiovae.training.loop import (
    EMA,
    EpochBatches,
    Hooks,
    TrainState,
    adam,
    learning_rate_scale,
    rng_state,
    set_rng_state,
    train_loop,
)
from audiovae.training.losses import LossResult, vae_loss
from audiovae.training.prior_stage import PriorResult, train_prior

__all__ = ["TrainResult", "train", "validate", "vae_objective"]


@dataclass(frozen=True)
class TrainResult:
    """Where a training run ended."""

    run_dir: Path
    step: int
    best_score: float | None
    stopped: str  # finished | time limit | interrupted
    prior: PriorResult | None = None  # the learned prior's stage, when the recipe has one


def vae_objective(recipe: Recipe, net: nn.Module, device: torch.device, adversary: Adversary | None,
                  precision: str = "auto") -> Callable[[TrainState, torch.Tensor], LossResult]:
    """The VAE's loss on a training batch (batch, channels, steps): its named terms, and the adversary's
    from adversarial.start_step on (the discriminator takes its own step inside). The forward pass runs under
    `precision`'s autocast (audiovae.compute.device), the loss in float32."""

    def loss(state: TrainState, batch: torch.Tensor | list[torch.Tensor]) -> LossResult:
        x, label = split_batch(batch, device)
        if not torch.isfinite(x).all():
            raise UserError(f"step {state.step}: a training batch contains NaN or infinite values; check the "
                            f"dataset in {recipe.data.folder} (re-run audiovae prepare)")
        with autocast_for(device, precision):
            out = net(x) if label is None else net(x, label=label)
        result = vae_loss(x, out.reconstruction.float(), out.posterior, recipe.loss, recipe.data.sample_rate,
                          state.step)
        if adversary is not None and state.step >= recipe.adversarial.start_step:
            result = result.plus(*adversary.step(x, out.reconstruction.float()))
        return result

    return loss


@torch.no_grad()
def validate(model: VAE, batches: list[torch.Tensor], recipe: Recipe, step: int, device: torch.device,
             precision: str = "auto") -> dict[str, float]:
    """Mean validation loss terms over fixed batches, and the representation's distances; `score` (lower is
    better, e.g. the mel distance of waveform models) picks the best checkpoint. On a CPU always in float32, the
    arithmetic synthesis uses there; on CUDA under the training's `precision`."""
    representation = recipe.data.representation
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    for batch in batches:
        x, label = split_batch(batch, device)
        with autocast_for(device, precision if device.type == "cuda" else "float32"):
            out = model(x, label=label)
        loss = vae_loss(x, out.reconstruction.float(), out.posterior, recipe.loss, recipe.data.sample_rate, step)
        values = {k: v for k, v in loss.logs().items() if k != "beta"}
        values.update(representation.validation_scores(x, out.reconstruction.float()))
        for key, value in values.items():
            totals[key] = totals.get(key, 0.0) + value / len(batches)
    totals["score"] = totals[representation.score_name]
    model.train(was_training)
    return totals


def bf16_agreement(recipe: Recipe, model: nn.Module, batch: torch.Tensor | list[torch.Tensor], device: torch.device
                   ) -> tuple[float, float]:
    """One forward and backward pass of the training loss on `batch` in float32 and under bf16 autocast, from the
    same weights and random draws: (the losses' relative difference, the gradients' cosine similarity). Leaves the
    weights, their gradients and the random state as they were.

    bf16 rounds, so the two differ a little (frame models: under 1% and a cosine over 0.99); a convolution
    that a CPU's bf16 kernels get wrong (oneDNN's AMX kernels return garbage for some shapes, e.g. a kernel of
    16 taps over 4 channels: the PQMF's synthesis) shows as a large difference."""
    x, label = split_batch(batch, device)
    start = rng_state(device)
    results = []
    for precision in ("float32", "bfloat16"):
        set_rng_state(start, device)
        model.zero_grad(set_to_none=True)
        with autocast_for(device, precision):
            out = model(x) if label is None else model(x, label=label)
        # losses.vae_loss, not this module's name for it: a check, not a training step (tests count the steps' calls)
        loss = losses.vae_loss(x, out.reconstruction.float(), out.posterior, recipe.loss, recipe.data.sample_rate, 0)
        loss.total.backward()
        grads = [p.grad.flatten().float() for p in model.parameters() if p.grad is not None]
        results.append((loss.total.item(), torch.cat(grads) if grads else torch.zeros(1)))
    model.zero_grad(set_to_none=True)
    set_rng_state(start, device)
    (loss32, grad32), (loss16, grad16) = results
    difference = abs(loss16 - loss32) / max(abs(loss32), 1e-12)
    cosine = torch.nn.functional.cosine_similarity(grad32, grad16, dim=0).item()
    return (difference if math.isfinite(loss16) else math.inf), (cosine if math.isfinite(cosine) else -1.0)


BF16_LOSS_TOLERANCE, BF16_MIN_COSINE = 0.02, 0.99  # what bf16_agreement must show for 'auto' to keep bf16


def bf16_agrees(difference: float, cosine: float) -> bool:
    """Whether bf16_agreement's figures are close enough for `train.precision: auto` to keep bf16."""
    return difference <= BF16_LOSS_TOLERANCE and cosine >= BF16_MIN_COSINE


def choose_precision(recipe: Recipe, model: nn.Module, batch, device: torch.device, saved: dict | None
                     ) -> tuple[str, str]:
    """The run's training arithmetic and why: its own on resume; a named train.precision as named; 'auto' where the
    hardware has bf16 units (on a CPU: for the families that gain from it, Family.cpu_bf16): bf16 if bf16_agreement
    on a validation batch shows it computes this model's loss and gradient as float32 does, else float32. (The
    waveform family trains in float32 on a CPU: on this machine's AMX it gained 1.08x, quickstart's bf16 gradient
    sat at a cosine of 0.89-0.998 from float32's, and a small PQMF's convolution came out wrong altogether.)"""
    if saved is not None and saved.get("precision"):
        return saved["precision"], "the run's own"
    precision = training_precision(recipe.train.precision, device, get_family(recipe.model.family).cpu_bf16)
    if recipe.train.precision != "auto" or precision == "float32":
        return precision, ""
    difference, cosine = bf16_agreement(recipe, model, batch, device)
    if bf16_agrees(difference, cosine):
        return "bfloat16", ""
    return "float32", (f"bf16 autocast computed this model's loss {difference:.1%} apart from float32's, gradient "
                       f"cosine {cosine:.3f}")


def split_batch(batch: torch.Tensor | list[torch.Tensor], device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A batch of the training set on `device`: (inputs, None), or a labelled dataset's (inputs, label indices)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True), None
    x, label = batch
    return x.to(device, non_blocking=True), label.to(device)


def with_dataset_labels(recipe: Recipe) -> Recipe:
    """A conditional recipe with its dataset's label names as model.labels (what the run's recipe and checkpoints
    store, so synthesis needs nothing else); other recipes as they are. UserError when the dataset has no labels."""
    if not getattr(recipe.model, "conditional", False):
        return recipe
    folder = recipe.data.folder
    names = manifest_labels(read_manifest(folder))
    if not names:
        raise UserError(f"{folder}: model.conditional needs a labelled dataset; prepare it with: audiovae prepare "
                        f"AUDIO_DIR --labels folders --recipe RECIPE.yaml --force (or --labels FILE.csv)")
    if len(names) < 2:
        raise UserError(f"{folder}: the dataset has one label ({names[0]}); conditioning needs two or more")
    if recipe.model.labels and tuple(recipe.model.labels) != names:
        raise UserError(f"{folder}: its labels ({', '.join(names)}) are not the recipe's model.labels "
                        f"({', '.join(recipe.model.labels)}); leave model.labels out (train writes it)")
    return dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, labels=names))


def _prepare_run_dir(recipe: Recipe, runs_root: Path, run_dir: Path | None, resume: bool, inputs=()
                     ) -> tuple[RunFolder, Path | None]:
    """(run folder, checkpoint to resume from or None). A new --run-dir must not be a file, hold one of `inputs`
    (the recipe, the dataset) or be unwritable: each is one line before any work."""
    if resume:
        run = RunFolder(run_dir) if run_dir is not None else RunFolder.latest_of(runs_root, recipe.name)
        saved = run.newest_checkpoint() if run is not None else None
        if saved is None:
            where = run or runs_root / recipe.name
            raise UserError(f"{where}: no checkpoint to resume from (start without --resume)")
        return run, saved
    if run_dir is not None:
        check_new_folder(run_dir, inputs)
        if any(run_dir.iterdir()):
            raise UserError(f"{run_dir}: run folder exists; pass --resume to continue it or choose another")
    return RunFolder(run_dir) if run_dir is not None else RunFolder.new(runs_root, recipe.name), None


def model_changes(before, after) -> str:
    """'model.key: old -> new, ...' for the fields that differ between two model sections."""
    if type(before) is not type(after):
        return f"model.family: {before.family} -> {after.family}"
    return ", ".join(f"model.{f.name}: {getattr(before, f.name)} -> {getattr(after, f.name)}"
                     for f in dataclasses.fields(before) if getattr(before, f.name) != getattr(after, f.name))


def train(recipe: Recipe | str | Path, *, overrides: tuple[str, ...] = (), run_dir: str | Path | None = None,
          resume: bool = False, runs_root: str | Path = DEFAULT_RUNS_ROOT, progress: bool = True) -> TrainResult:
    """Train the model a recipe describes; see the module docstring. Returns where the run ended."""
    recipe_path = None
    if not isinstance(recipe, Recipe):
        recipe_path = str(recipe)
        recipe = load_recipe(recipe, overrides)
    recipe = with_dataset_labels(recipe)
    run_dir = Path(run_dir) if run_dir is not None else None
    # torchrun sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    device = select_device(recipe.train.device)
    with _process_group(world > 1, device):
        result, best_weights = _train(recipe, recipe_path, run_dir, resume, Path(runs_root), progress, device, rank,
                                      world)
    # the learned prior's stage: small, so rank 0 alone trains it once the ranks are done; it takes the run
    # folder's lock itself
    if recipe.prior is None or result.stopped == "interrupted" or rank != 0:
        return result
    if world > 1:
        apply_threads(choose_threads(None))  # the ranks' cores are free again
    run = RunFolder(result.run_dir)
    resume_prior = resume and run.prior.newest_checkpoint() is not None
    checkpoint = run.checkpoint_to_load("best")  # what `audiovae generate` will load: best.pt, else last.pt
    if best_weights is None:  # no new best in this process (a resumed run): the one on disk
        saved = load_checkpoint(checkpoint)
        best_weights = saved.get("ema") or saved.get("model")
    vae = trained_vae(recipe, best_weights).cpu()  # the prior is small: the CPU does it well
    prior = train_prior(run, vae, recipe, file_sha256(checkpoint), recipe.prior, resume=resume_prior,
                        progress=progress, vae_weights_sha256=weights_sha256(best_weights))
    return dataclasses.replace(result, prior=prior)


@contextlib.contextmanager
def _process_group(distributed: bool, device: torch.device):
    """Join torchrun's process group for the run and leave it before the interpreter exits: a gloo group
    left to the interpreter's teardown can abort the process after training finished (pytorch#190489)."""
    owned = distributed and not torch.distributed.is_initialized()
    if owned:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    yield  # on an error the group is left as it is: NCCL's teardown could wait for a rank that died
    if owned:
        torch.distributed.destroy_process_group()


def _train(recipe: Recipe, recipe_path: str | None, run_dir: Path | None, resume: bool, runs_root: Path,
           progress: bool, device: torch.device, rank: int, world: int) -> tuple[TrainResult, dict | None]:
    """The VAE's loop; returns where it ended and the best weights saved in this process (None if none were)."""
    cfg, distributed, is_main = recipe.train, world > 1, rank == 0

    # ---- data -----------------------------------------------------------------------------------------------
    dataset = open_dataset(recipe.data.folder, recipe.data, recipe_path)
    trained_on = dataset.fingerprint()  # stored in every checkpoint; a resume on other data is refused
    train_set, valid_batches = _datasets(recipe, dataset, is_main)
    epochs = EpochBatches(len(train_set), cfg.batch_size, cfg.seed, rank, world)

    def batches(step: int) -> torch.utils.data.DataLoader:
        epoch, offset = divmod(step, epochs.steps_per_epoch)
        train_set.epoch = epoch
        # its own generator: the loader's worker seeds must not draw from (and shift) the global RNG
        return torch.utils.data.DataLoader(train_set, batch_sampler=epochs.epoch(epoch, offset),
                                           num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                                           generator=torch.Generator().manual_seed(cfg.seed + epoch))

    # ---- run folder, model, training state ------------------------------------------------------------------
    inputs = [p for p in (recipe_path, recipe.data.folder) if p]
    run, resume_from = _prepare_run_dir(recipe, runs_root, run_dir, resume, inputs) if is_main else (None, None)
    if distributed:
        shared = [str(run) if run else None, str(resume_from) if resume_from else None]
        torch.distributed.broadcast_object_list(shared, src=0)
        run, resume_from = RunFolder(shared[0]), Path(shared[1]) if shared[1] else None
    saved = load_checkpoint(resume_from, map_location=device) if resume_from is not None else None
    # the free cores, or the run's own count on resume: another count sums floats in another order
    threads = cfg.num_threads or (saved or {}).get("num_threads") or max(
        1, choose_threads(None) // int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    apply_threads(threads)
    keep_freed_memory()  # for callers of train() outside the command line (bench/, notebooks)
    with run.lock() if is_main else contextlib.nullcontext():  # one trainer per run folder
        torch.manual_seed(cfg.seed + rank)
        model = build_model(recipe).to(device)
        optimizer = adam(model.parameters(), cfg.learning_rate, cfg.weight_decay, decoupled=cfg.optimizer == "adamw")
        state = TrainState(model, optimizer,
                           ema=EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None,
                           adversary=Adversary(recipe.adversarial, device) if recipe.adversarial.enabled else None)
        if saved is not None:
            before = recipe_from_saved(saved["recipe"]).model
            if before != recipe.model:
                raise UserError(f"{resume_from}: the recipe's model section changed since this run started "
                                f"({model_changes(before, recipe.model)}); resume with the original recipe "
                                "(or --set those keys back) or start a new run")
            changes = dataset_changes(saved["dataset"], trained_on) if "dataset" in saved else []
            if changes:
                raise UserError(f"{recipe.data.folder}: the dataset changed since this run started ({'; '.join(changes)}); "
                                "restore it, or train a new run on it without --resume")
            state.load_state_dict(saved, device, rank)
        # the run's own arithmetic on resume, as with threads: a run started in bf16 goes on in bf16
        precision, why = choose_precision(recipe, model, valid_batches[0], device, saved)
        if distributed:  # the ranks' weights differ until DDP broadcasts rank 0's: rank 0's choice holds for all
            chosen = [precision, why]
            torch.distributed.broadcast_object_list(chosen, src=0)
            precision, why = chosen
        if is_main and progress:
            print(f"training on {device} with {threads} thread{'s' * (threads > 1)}, "
                  f"{'bf16 autocast' if precision == 'bfloat16' else 'float32'}{f' ({why})' if why else ''}",
                  file=sys.stderr)
        if is_main:
            run.clear_stale_checkpoint_files()  # left by a run killed mid-write
            write_atomic(run.recipe_path, lambda tmp: tmp.write_text(dump_recipe(recipe)))
        net: nn.Module = nn.parallel.DistributedDataParallel(model) if distributed else model
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        # ---- the loop -------------------------------------------------------------------------------------------
        log = RunLog(run, is_main, state.step if resume_from else None)
        best_weights: dict | None = None

        def save(name: str) -> None:
            nonlocal best_weights
            state.save(run.checkpoint(name), device, {"recipe": recipe.to_dict(), "dataset": trained_on,
                                                      "num_threads": threads, "precision": precision},
                       write=is_main)
            if name == "best" and is_main:  # what synthesis loads, kept for the prior's stage
                weights = state.ema.state if state.ema is not None else state.model.state_dict()
                best_weights = {key: value.detach().cpu().clone() for key, value in weights.items()}

        def run_validation(state: TrainState) -> dict[str, float]:
            evaluated = state.eval_model()
            scores = validate(evaluated, valid_batches, recipe, state.step, device, precision)
            first = valid_batches[0]
            if isinstance(first, torch.Tensor):
                log.listen(evaluated, first[0], state.step, recipe, cfg.seed)
            else:  # a conditional model, heard under the example's label
                log.listen(LabelledVAE(evaluated, int(first[1][0])), first[0][0], state.step, recipe, cfg.seed)
            return scores

        hooks = Hooks(
            batches=batches, loss=vae_objective(recipe, net, device, state.adversary, precision),
            validate=run_validation,
            save=save,
            log=log.write,
            rates={"audio_seconds_per_second": recipe.training_samples * cfg.batch_size * world / recipe.data.sample_rate},
            failure_hint=f"lower train.learning_rate or check the data; the last good checkpoint is "
                         f"{run.checkpoint('last')}",
            learning_rate=lambda progress: cfg.learning_rate * learning_rate_scale(progress, cfg.lr_decay_fraction,
                                                                                   cfg.lr_final),
        )
        stopped = train_loop(state, cfg, hooks, f"train {recipe.name}", progress and is_main, announce=is_main)
        if distributed:
            _record_rank_checksums(model, log, state.step)
        log.close()
        if is_main and stopped == "interrupted":
            print(f"interrupted at step {state.step}; checkpoint saved. Resume with: audiovae train "
                  f"{recipe_path or recipe.name} --resume", file=sys.stderr)
    return TrainResult(run.path, state.step, state.best_score, stopped), best_weights


def _datasets(recipe: Recipe, dataset: PreparedDataset, is_main: bool
              ) -> tuple[SegmentDataset, list[torch.Tensor]]:
    """(the train split with the recipe's crop, gain and transposition, fixed validation batches)."""
    cfg, representation = recipe.train, recipe.data.representation
    train_array, valid_array = dataset.arrays["train"], dataset.arrays["valid"]
    names = tuple(getattr(recipe.model, "labels", ()))  # a conditional model's: each segment comes with its label
    train_labels = segment_labels(dataset.manifest, "train", names) if names else None
    valid_labels = segment_labels(dataset.manifest, "valid", names) if names else None
    if len(train_array) == 0:
        raise UserError(f"{recipe.data.folder}: the train split is empty; prepare more audio")
    train_set = SegmentDataset(train_array, representation, cfg.crop_samples, cfg.gain_db, cfg.seed, train_labels,
                               cfg.transpose_semitones)
    if len(valid_array) == 0:
        if is_main:
            print(f"warning: {recipe.data.folder} has no valid split; validating on training segments",
                  file=sys.stderr)
        valid_array, valid_labels = train_array, train_labels
    valid_set = SegmentDataset(valid_array, representation, labels=valid_labels)
    count = min(len(valid_set), cfg.valid_batches * cfg.batch_size)
    collate = torch.utils.data.default_collate
    return train_set, [collate([valid_set[i] for i in range(s, min(s + cfg.batch_size, count))])
                       for s in range(0, count, cfg.batch_size)]


def _record_rank_checksums(model: nn.Module, log: RunLog, step: int) -> None:
    """Gather a checksum of every rank's weights into the log, so a test can see that they agree."""
    checksum = torch.tensor([sum(p.detach().double().sum().item() * (i + 1) for i, p in
                                 enumerate(model.parameters()))], dtype=torch.float64)
    gathered = [torch.zeros_like(checksum) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, checksum)
    log.write("ranks", step, {f"weights_checksum_rank{i}": g.item() for i, g in enumerate(gathered)})


