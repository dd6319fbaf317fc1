"""The learned prior as a run's last stage: fit p(z_t | z_<t) on the frozen VAE's latents of the train split.

`audiovae train` runs it after the VAE when the recipe has a `prior:` section; `audiovae train-prior RUN`
(re)trains it on an existing run. It uses the shared loop (audiovae/training/loop.py): progress bar, validation
(held-out NLL in nats per frame, next to N(0, I)'s), checkpoints in RUN/prior/, a time budget, Ctrl-C and
a bit-exact --resume. Each step's batch and input noise come from a generator seeded by (seed, step).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from audiovae.config.schema import build_dataclass
from audiovae.data.dataset import open_dataset
from audiovae.data.labels import manifest_labels, segment_labels
from audiovae.data.manifest import split_records
from audiovae.errors import UserError
from audiovae.io.checkpoint import load_checkpoint
from audiovae.io.run_folder import RunFolder
from audiovae.priors.base import GAUSSIAN
from audiovae.priors.learned import (
    LatentPrior,
    PriorConfig,
    PriorModel,
    build_prior,
    prior_loss,
)
from audiovae.training.log import RunLog
from audiovae.training.loop import Hooks, TrainState, adam, train_loop
from audiovae.training.losses import LossResult

if TYPE_CHECKING:
    from audiovae.config.recipe import Recipe
    from audiovae.models import VAE

@dataclass(frozen=True)
class PriorResult:
    """Where a prior stage ended."""

    folder: Path
    step: int
    best_nll: float | None  # held-out nats per frame
    gaussian_nll: float  # N(0, I) on the same latents
    stopped: str


def split_latents(vae: VAE, recipe: Recipe, split: str, batch_size: int = 16) -> list[np.ndarray]:
    """Posterior means of a split, one (latent_size, frames) array per source file: its segments' latents
    joined in order (prepare stores a file's segments consecutively). UserError when the dataset is gone."""
    return encode_split(vae, recipe, split, batch_size)[0]


def encode_split(vae: VAE, recipe: Recipe, split: str, batch_size: int = 16
                 ) -> tuple[list[np.ndarray], list[int] | None]:
    """split_latents, and for a conditional run the label index of each sequence it returns (None otherwise):
    a conditional model encodes each segment under its file's label. One read of the dataset for both."""
    device = next(vae.parameters()).device
    try:
        dataset = open_dataset(recipe.data.folder, recipe.data)
    except UserError as error:
        raise UserError(f"{error} (the learned prior trains on the run's dataset: prepare it again with the "
                        "run's recipe)") from None
    array, representation = dataset.arrays[split], recipe.data.representation
    names = run_labels(recipe)
    check_dataset_labels(dataset.manifest, names, recipe.data.folder)
    labels = torch.from_numpy(segment_labels(dataset.manifest, split, names)) if names else None
    means = []
    with torch.no_grad():
        for start in range(0, len(array), batch_size):
            items = torch.stack([representation.item(row) for row in array[start : start + batch_size]])
            label = None if labels is None else labels[start : start + batch_size].to(device)
            means.append(vae.encode(items.to(device), label).mean.float().cpu().numpy())
    segments = np.concatenate(means) if means else np.zeros((0, vae.latent_size, 0), np.float32)
    files, file_labels = [], []
    for record in split_records(dataset.manifest, split):
        first, count = record.get("first_segment"), int(record.get("segments", 0))
        if first is not None and count:
            files.append(np.concatenate(list(segments[first : first + count]), axis=1))
            file_labels.append(names.index(record["label"]) if names else 0)
    if not files:  # a manifest without segment positions: one sequence per segment
        return list(segments), (labels.tolist() if labels is not None else None)
    return files, (file_labels if names else None)


def check_dataset_labels(manifest: dict[str, Any], names: tuple[str, ...], folder: str) -> None:
    """UserError when a conditional run's dataset no longer has the run's labels (prepared again since)."""
    if names and manifest_labels(manifest) != names:
        raise UserError(f"{folder}: its labels ({', '.join(manifest_labels(manifest)) or 'none'}) are not the run's "
                        f"({', '.join(names)}); prepare it again as the run was, or train the run again")


def run_labels(recipe: Recipe) -> tuple[str, ...]:
    """A conditional recipe's label names (model.labels), else ()."""
    return tuple(getattr(recipe.model, "labels", ()))


def mean_nll(prior: Any, sequences: list[torch.Tensor], labels: list[int] | None = None) -> float:
    """NLL in nats per frame over latent sequences (1, latent_size, frames) of any lengths, weighted by frames;
    labels: a conditional prior's label of each sequence."""
    if labels is not None and isinstance(prior, LatentPrior):
        values = [prior.nll(z, torch.tensor([label])) for z, label in zip(sequences, labels, strict=True)]
    else:
        values = [prior.nll(z) for z in sequences]
    return sum(v * z.shape[-1] for v, z in zip(values, sequences, strict=True)) / sum(z.shape[-1] for z in sequences)


@dataclass(frozen=True)
class FitResult:
    prior: PriorModel  # the weights with the best validation NLL
    steps: int
    best_valid_nll: float | None  # nats per frame
    gaussian_nll: float  # N(0, I) on the same validation latents
    stopped: str


def fit_prior(config: PriorConfig, train_latents: list[np.ndarray], valid_latents: list[np.ndarray], *,
              stage: RunFolder | None = None, saved: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
              progress: bool = False, labels: tuple[list[int], list[int], int] | None = None) -> FitResult:
    """Fit a prior on latent arrays (latent_size, frames) with the shared loop; with `stage` (a run's prior
    folder), log and keep checkpoints there (resuming from `saved`), else keep the best weights in memory (benchmarks, tests).
    labels: a conditional prior's (label of each train array, of each valid array, label count); a training
    sequence takes the label of the file its middle frame lies in."""
    frames = sum(z.shape[1] for z in train_latents)
    if frames < config.sequence_frames:
        raise UserError(f"{frames} latent frames in the train split, fewer than prior.sequence_frames "
                        f"({config.sequence_frames}); prepare more audio or shorten it")
    stream = torch.from_numpy(np.concatenate(train_latents, axis=1).astype(np.float32))  # (latent, frames)
    valid = [torch.from_numpy(np.asarray(z, np.float32))[None] for z in valid_latents]
    gaussian_nll = mean_nll(GAUSSIAN, valid)
    frame_labels, valid_labels = None, None
    if labels is not None:
        frame_labels = torch.from_numpy(np.concatenate([np.full(z.shape[1], label, np.int64)
                                                        for z, label in zip(train_latents, labels[0], strict=True)]))
        valid_labels = labels[1] if len(labels[1]) == len(valid) else labels[0]  # no valid split: the train files

    torch.manual_seed(config.seed)
    prior = build_prior(config, stream.shape[0], train_latents, labels[2] if labels is not None else 0)
    state = TrainState(prior, adam(prior.parameters(), config.learning_rate))
    if saved is not None:
        state.load_state_dict(saved, torch.device("cpu"))

    def batches(step: int):
        while True:  # endless: each step's crops and input noise depend on (seed, step) alone
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
            first = torch.randint(stream.shape[1] - config.sequence_frames + 1, (config.batch_size,),
                                  generator=generator)
            z = torch.stack([stream[:, s : s + config.sequence_frames] for s in first.tolist()])
            if frame_labels is None:
                yield z, generator
            else:
                yield z, generator, frame_labels[first + config.sequence_frames // 2]
            step += 1

    def loss(state: TrainState, batch) -> LossResult:
        nll = prior_loss(state.model, *batch)
        return LossResult(nll, {"nll": nll}, {"nll": 1.0})

    def validate(state: TrainState) -> dict[str, float]:
        value = mean_nll(state.model, valid, valid_labels)
        return {"loss": value, "score": value, "gaussian_nll": gaussian_nll}

    best: dict[str, torch.Tensor] = {}

    def save(name: str) -> None:
        if stage is not None:
            state.save(stage.checkpoint(name), torch.device("cpu"), extra or {})
        elif name == "best":
            best.update({k: v.clone() for k, v in prior.state_dict().items()})

    log = RunLog(stage, True, state.step if saved is not None else None) if stage is not None else None
    hooks = Hooks(batches=batches, loss=loss, validate=validate, save=save,
                  log=log.write if log is not None else lambda *args: None,
                  rates={"frames_per_second": config.batch_size * config.sequence_frames},
                  failure_hint="lower prior.learning_rate" + (f"; the last good checkpoint is {stage.checkpoint('last')}"
                                                               if stage is not None else ""))
    if progress:
        print(f"prior: N(0, I) scores {gaussian_nll:.2f} nats per held-out frame", file=sys.stderr)
    stopped = train_loop(state, config, hooks, "train prior", progress, announce=progress)
    if log is not None:
        log.close()
    if best:
        prior.load_state_dict(best)
    return FitResult(prior.eval(), state.step, state.best_score, gaussian_nll, stopped)


def train_prior(run: RunFolder, vae: VAE, recipe: Recipe, vae_sha256: str, config: PriorConfig | None = None, *,
                resume: bool = False, progress: bool = True, vae_weights_sha256: str | None = None) -> PriorResult:
    """Fit `run`'s learned prior (config: the recipe's `prior:` section, else defaults) into its prior folder, on
    the latents of the trained `vae` (in memory, on the CPU, eval mode; `vae_sha256` names its checkpoint file,
    `vae_weights_sha256` its weights: Model.weights_sha256, what loading matches the prior to)."""
    explicit = config is not None
    config = config or recipe.prior or PriorConfig()
    stage = run.prior
    saved = None
    if resume:
        found = stage.newest_checkpoint()
        if found is None:
            raise UserError(f"{stage}: no prior checkpoint to resume from (start without --resume)")
        saved = load_checkpoint(found)
        started = build_dataclass(PriorConfig, saved["prior_config"], "prior")
        config = config if explicit else started  # given settings may extend the budget (max_steps, minutes)
        shape = ("kind", "hidden_size", "layers", "kernel_size", "dilation_cycle", "mixtures", "couplings",
                 "group_frames")
        if any(getattr(config, k) != getattr(started, k) for k in shape):
            raise UserError(f"{stage}: the prior's model settings changed since it started "
                            f"({', '.join(shape)}); resume with the original ones or train it anew")
    train_latents, train_labels = encode_split(vae, recipe, "train")
    valid_latents, valid_labels = encode_split(vae, recipe, "valid")
    if not valid_latents:  # no held-out files: validate on the training latents, under their labels
        valid_latents, valid_labels = train_latents, train_labels
    names = run_labels(recipe)
    labels = (train_labels, valid_labels, len(names)) if names else None
    extra = {"recipe": recipe.to_dict(), "prior_config": dataclasses.asdict(config),
             "latent_size": vae.latent_size, "vae_checkpoint_sha256": vae_sha256,
             "vae_weights_sha256": vae_weights_sha256}  # what generate matches the prior to
    with run.lock():
        stage.path.mkdir(parents=True, exist_ok=True)
        result = fit_prior(config, train_latents, valid_latents, stage=stage, saved=saved, extra=extra,
                           progress=progress, labels=labels)
    if result.stopped == "interrupted":
        print(f"interrupted at step {result.steps}; checkpoint saved. Resume with: audiovae train-prior {run} "
              "--resume", file=sys.stderr)
    return PriorResult(stage.path, result.steps, result.best_valid_nll, result.gaussian_nll, result.stopped)
