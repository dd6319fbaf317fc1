"""Recipes: YAML read with safe_load into nested frozen dataclasses, every key checked and named on error.

The only place where a recipe's text becomes typed values. Derived quantities (hop, frames, latent rate)
are properties, never keys, so each fact lives in one place.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from audiovae.errors import UserError
from audiovae.schema import ConfigError, build_dataclass, to_plain


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(key, message)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, name, f"must be one of {', '.join(choices)} (got {value!r})")


@dataclass(frozen=True)
class MelConfig:
    """Log-mel analysis; recorded at prepare time so synthesis can invert it."""

    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None  # None: half the sample rate
    log_floor: float = 1e-5

    def __post_init__(self):
        _require(self.n_fft >= 16, "n_fft", "must be at least 16")
        _require(0 < self.hop_length <= self.n_fft, "hop_length", "must be in 1..n_fft")
        _require(self.n_mels >= 1, "n_mels", "must be positive")
        _require(self.f_min >= 0, "f_min", "must be >= 0")
        _require(self.f_max is None or self.f_max > self.f_min, "f_max", "must be above f_min")
        _require(self.log_floor > 0, "log_floor", "must be positive")


@dataclass(frozen=True)
class DataConfig:
    """Where the prepared data lives and how prepare makes it (sample rate, segments, features)."""

    folder: str = "data/prepared"
    sample_rate: int = 16000
    features: str = "wave"  # wave: waveform segments; mel: log-mel frames
    segment_samples: int = 16384
    hop_samples: int | None = None  # hop between segment starts; None: segment_samples (no overlap)
    normalization: str = "peak"  # peak | rms | none, per file
    target_db: float | None = None  # peak or RMS level after normalization, dBFS; None: -1 (peak), -20 (rms)
    silence_db: float = -60.0  # segments whose RMS is below this (dBFS) are dropped
    valid_fraction: float = 0.1  # share of source files held out for validation
    split_seed: int = 0
    mel: MelConfig = field(default_factory=MelConfig)

    def __post_init__(self):
        _require(4000 <= self.sample_rate <= 192000, "sample_rate", "must be in 4000..192000 Hz")
        _choice("features", self.features, ("wave", "mel"))
        _require(self.segment_samples >= 64, "segment_samples", "must be at least 64")
        _require(
            self.hop_samples is None or 0 < self.hop_samples <= self.segment_samples,
            "hop_samples", "must be in 1..segment_samples",
        )
        _choice("normalization", self.normalization, ("peak", "rms", "none"))
        _require(self.target_db is None or self.target_db <= 0, "target_db", "must be <= 0 dBFS")
        _require(0.0 <= self.valid_fraction < 1.0, "valid_fraction", "must be in [0, 1)")
        if self.features == "mel":
            _require(
                self.segment_samples % self.mel.hop_length == 0,
                "segment_samples", f"must be a multiple of mel.hop_length ({self.mel.hop_length}) for mel features",
            )

    @property
    def level_db(self) -> float:
        """The normalization target in dBFS: target_db, or the method's default (-1 peak, -20 RMS)."""
        if self.target_db is not None:
            return self.target_db
        return -20.0 if self.normalization == "rms" else -1.0

    @property
    def segment_hop(self) -> int:
        return self.hop_samples or self.segment_samples

    @property
    def mel_frames(self) -> int:
        """Frames per segment for mel features (the last centered frame is dropped)."""
        return self.segment_samples // self.mel.hop_length

    @property
    def item_shape(self) -> tuple[int, ...]:
        """Shape of one stored segment: (segment_samples,) or (n_mels, mel_frames)."""
        if self.features == "mel":
            return (self.mel.n_mels, self.mel_frames)
        return (self.segment_samples,)

    def audio_settings(self) -> dict[str, Any]:
        """The settings a dataset must share with a recipe for training to make sense."""
        settings = {"sample_rate": self.sample_rate, "features": self.features, "segment_samples": self.segment_samples}
        if self.features == "mel":
            settings["mel"] = dataclasses.asdict(self.mel)
        return settings


@dataclass(frozen=True)
class ConvModelConfig:
    """1-D convolutional encoder/decoder over waveforms (family 'conv') or log-mel frames (family 'mel')."""

    family: str = "conv"
    channels: int = 32  # width after the input convolution; doubles at each downsampling
    max_channels: int = 256
    strides: tuple[int, ...] = (4, 4, 4, 4)
    latent_size: int = 16
    residual_layers: int = 3  # dilated residual units per block, dilations 1, 3, 9, ...
    kernel_size: int = 7
    activation: str = "snake"  # snake | leaky_relu
    bands: int = 1  # PQMF sub-bands for waveform models (1: off); the convolutions run bands x slower
    causal: bool = False  # left padding only: the model streams block by block (docs/realtime.md)

    def __post_init__(self):
        _require(self.channels >= 1, "channels", "must be positive")
        _require(self.max_channels >= self.channels, "max_channels", "must be >= channels")
        _require(len(self.strides) >= 1, "strides", "needs at least one stride")
        _require(all(s >= 1 for s in self.strides), "strides", "must all be positive")
        _require(self.latent_size >= 1, "latent_size", "must be positive")
        _require(self.residual_layers >= 0, "residual_layers", "must be >= 0")
        _require(self.kernel_size % 2 == 1 and self.kernel_size >= 1, "kernel_size", "must be odd and positive")
        _choice("activation", self.activation, ("snake", "leaky_relu"))
        _require(self.bands >= 1 and (self.bands & (self.bands - 1)) == 0, "bands", "must be a power of two")
        _require(self.family != "mel" or self.bands == 1, "bands", "sub-bands apply to waveform models only")

    @property
    def total_stride(self) -> int:
        """Input samples (or frames) per latent frame."""
        total = self.bands
        for stride in self.strides:
            total *= stride
        return total


@dataclass(frozen=True)
class DenseModelConfig:
    """Fully connected VAE over whole fixed-length segments (the documents' example)."""

    family: str = "dense"
    hidden: tuple[int, ...] = (256, 128)
    latent_size: int = 16

    def __post_init__(self):
        _require(all(h >= 1 for h in self.hidden), "hidden", "sizes must be positive")
        _require(self.latent_size >= 1, "latent_size", "must be positive")


MODEL_CONFIGS: dict[str, type] = {"conv": ConvModelConfig, "mel": ConvModelConfig, "dense": DenseModelConfig}


@dataclass(frozen=True)
class LossConfig:
    """Reconstruction terms, the KL weight schedule and free bits."""

    reconstruction: str = "spectral"  # spectral (multi-resolution STFT + mel) | mse | l1
    stft_weight: float = 1.0
    mel_weight: float = 1.0
    stft_windows: tuple[int, ...] = (2048, 1024, 512, 256, 128)
    mel_windows: tuple[int, ...] = (2048, 1024, 512)
    beta: float = 0.1  # KL weight after warm-up
    beta_warmup_steps: int = 1000  # linear ramp of the KL weight from 0 to beta
    free_bits: float = 0.0  # nats per latent dimension (per frame) below which the KL is not penalized

    def __post_init__(self):
        _choice("reconstruction", self.reconstruction, ("spectral", "mse", "l1"))
        _require(self.stft_weight >= 0 and self.mel_weight >= 0, "stft_weight", "weights must be >= 0")
        _require(all(w >= 16 for w in self.stft_windows), "stft_windows", "windows must be >= 16 samples")
        _require(all(w >= 64 for w in self.mel_windows), "mel_windows", "windows must be >= 64 samples")
        _require(self.beta >= 0, "beta", "must be >= 0")
        _require(self.beta_warmup_steps >= 0, "beta_warmup_steps", "must be >= 0")
        _require(self.free_bits >= 0, "free_bits", "must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """Optimization, validation, checkpoints and augmentation."""

    optimizer: str = "adamw"  # adamw | adam
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    max_steps: int = 10000
    max_minutes: float | None = None  # stop after this much wall time (a checkpoint is written)
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    ema_decay: float = 0.0  # exponential moving average of weights; 0 disables
    valid_every: int = 500
    valid_batches: int = 8
    checkpoint_every: int = 500
    log_every: int = 25
    seed: int = 0
    num_workers: int = 0  # DataLoader worker processes
    gain_db: float = 0.0  # random gain in [-gain_db, +gain_db] dB per example; 0 disables
    crop_samples: int | None = None  # random crop of this length from each training segment
    device: str = "auto"  # auto | cpu | cuda

    def __post_init__(self):
        _choice("optimizer", self.optimizer, ("adamw", "adam"))
        _require(self.learning_rate > 0, "learning_rate", "must be positive")
        _require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _require(self.batch_size >= 1, "batch_size", "must be positive")
        _require(self.max_steps >= 1, "max_steps", "must be positive")
        _require(self.max_minutes is None or self.max_minutes > 0, "max_minutes", "must be positive")
        _require(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        _require(0 <= self.ema_decay < 1, "ema_decay", "must be in [0, 1)")
        for name in ("valid_every", "valid_batches", "checkpoint_every", "log_every"):
            _require(getattr(self, name) >= 1, name, "must be positive")
        _require(self.num_workers >= 0, "num_workers", "must be >= 0")
        _require(self.gain_db >= 0, "gain_db", "must be >= 0")
        _require(self.crop_samples is None or self.crop_samples >= 64, "crop_samples", "must be at least 64")
        _choice("device", self.device, ("auto", "cpu", "cuda"))


@dataclass(frozen=True)
class AdversarialConfig:
    """The optional second stage: a multi-scale STFT discriminator with feature matching (waveform models)."""

    enabled: bool = False
    start_step: int = 0  # first step of the adversarial stage, usually once the VAE reconstructs well
    weight: float = 0.1  # of the generator's hinge loss
    feature_weight: float = 1.0  # of the relative feature-matching distance
    learning_rate: float = 1e-4  # of the discriminator (Adam, betas 0.5 / 0.9)
    windows: tuple[int, ...] = (2048, 1024, 512)  # one sub-discriminator per STFT window
    channels: int = 16

    def __post_init__(self):
        _require(self.start_step >= 0, "start_step", "must be >= 0")
        _require(self.weight >= 0 and self.feature_weight >= 0, "weight", "weights must be >= 0")
        _require(self.learning_rate > 0, "learning_rate", "must be positive")
        _require(len(self.windows) >= 1 and all(w >= 16 for w in self.windows), "windows",
                 "needs at least one window of >= 16 samples")
        _require(self.channels >= 1, "channels", "must be positive")


@dataclass(frozen=True)
class Recipe:
    """A whole recipe. `name` comes from the file name and names the run folder."""

    name: str
    data: DataConfig
    model: ConvModelConfig | DenseModelConfig
    loss: LossConfig
    train: TrainConfig
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)

    def __post_init__(self):
        family = self.model.family
        _require(not self.adversarial.enabled or family != "mel", "adversarial.enabled",
                 "the adversarial stage is for waveform models (conv, dense)")
        _require(not self.adversarial.enabled or max(self.adversarial.windows) <= self.training_samples,
                 "adversarial.windows", f"must not exceed the training length ({self.training_samples} samples)")
        _require(self.train.crop_samples is None or self.train.crop_samples <= self.data.segment_samples,
                 "train.crop_samples", "must not exceed data.segment_samples")
        if family == "mel":
            _require(self.data.features == "mel", "data.features", "the 'mel' model family needs features: mel")
            frames = self.training_samples
            _require(
                (frames // self.data.mel.hop_length) % self.model.total_stride == 0,
                "model.strides",
                f"product {self.model.total_stride} must divide the mel frames per segment "
                f"({frames // self.data.mel.hop_length})",
            )
            _require(self.train.crop_samples is None or self.train.crop_samples % self.data.mel.hop_length == 0,
                     "train.crop_samples", "must be a multiple of data.mel.hop_length")
            return
        _require(self.data.features == "wave", "data.features", f"the '{family}' model family needs features: wave")
        length = self.training_samples
        if self.loss.reconstruction == "spectral":
            for key in ("stft_windows", "mel_windows"):
                windows = getattr(self.loss, key)
                _require(bool(windows) and min(windows) <= length, f"loss.{key}",
                         f"needs a window no longer than the training length ({length} samples)")
            _require(self.data.segment_samples >= 512, "data.segment_samples",
                     "must be at least 512 for the validation mel distance")
        if family == "conv":
            _require(
                length % self.model.total_stride == 0, "model.strides",
                f"total stride {self.model.total_stride} (strides x bands) must divide the training length {length}",
            )
        if family == "dense":
            _require(self.train.crop_samples is None, "train.crop_samples", "the dense model needs whole segments")
            _require(self.loss.reconstruction in ("mse", "l1", "spectral"), "loss.reconstruction", "unsupported")

    @property
    def training_samples(self) -> int:
        """Waveform samples per training example after cropping."""
        return self.train.crop_samples or self.data.segment_samples

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, numbers, strings), as saved in runs and checkpoints."""
        return to_plain(dataclasses.asdict(self))


def recipe_from_dict(raw: Any, name: str) -> Recipe:
    """Build a Recipe from plain data; raises ConfigError with the key path."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("(top level)", "a recipe must be a mapping with data, model, loss and train sections")
    sections = {"data": DataConfig, "model": None, "loss": LossConfig, "train": TrainConfig,
                "adversarial": AdversarialConfig}
    for key in raw:
        if key not in sections:
            close = difflib.get_close_matches(str(key), list(sections), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (valid sections: {', '.join(sections)})"
            raise ConfigError(str(key), f"unknown key{hint}")
    model_raw = raw.get("model") or {}
    if not isinstance(model_raw, dict):
        raise ConfigError("model", "must be a mapping")
    family = model_raw.get("family", "conv")
    if family not in MODEL_CONFIGS:
        raise ConfigError("model.family", f"must be one of {', '.join(MODEL_CONFIGS)} (got {family!r})")
    try:
        return Recipe(
            name=name,
            data=build_dataclass(DataConfig, raw.get("data"), "data"),
            model=build_dataclass(MODEL_CONFIGS[family], model_raw, "model"),
            loss=build_dataclass(LossConfig, raw.get("loss"), "loss"),
            train=build_dataclass(TrainConfig, raw.get("train"), "train"),
            adversarial=build_dataclass(AdversarialConfig, raw.get("adversarial"), "adversarial"),
        )
    except ConfigError as error:
        raise error from None


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply `key.path=value` strings (values parsed as YAML) to a copy of the raw recipe."""
    import copy

    raw = copy.deepcopy(raw) if raw else {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "an override must look like key.path=value (e.g. train.max_steps=200)")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:  # a missing or empty section
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(key, f"'{part}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return raw


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read and validate a recipe file; every mistake becomes a UserError naming the file and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: recipe not found (the shipped ones are in recipes/)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read recipe ({error})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
    try:
        if overrides and isinstance(raw, dict | None):
            raw = apply_overrides(raw, overrides)
        return recipe_from_dict(raw, name=path.stem)
    except ConfigError as error:
        raise UserError(f"{path}: {error.key}: {error.message}") from None


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML that load_recipe reads back to an equal Recipe."""
    plain = recipe.to_dict()
    plain.pop("name")
    return yaml.safe_dump(plain, sort_keys=False)


def recipe_from_saved(plain: dict[str, Any]) -> Recipe:
    """Rebuild the Recipe saved in a checkpoint by Recipe.to_dict()."""
    plain = dict(plain)
    name = str(plain.pop("name", "model"))
    return recipe_from_dict(plain, name)
