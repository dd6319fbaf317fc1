"""Recipes: YAML read with safe_load into nested frozen dataclasses, every key checked and named on error.

The only place where a recipe's text becomes typed values. Derived quantities (hop, frames, latent rate)
are properties, never keys, so each fact lives in one place.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from audiovae.config.data import DataConfig
from audiovae.config.safe_yaml import load_yaml, read_small_text
from audiovae.config.schema import ConfigError, build_dataclass, choice, require, to_plain
from audiovae.dsp.inversion import SynthesisConfig
from audiovae.errors import UserError
from audiovae.models import FAMILIES, Family, get_family
from audiovae.priors.learned import PriorConfig
from audiovae.training.losses import LOSS_TERMS

LOSS_ALIASES = ("reconstruction", "stft_weight", "mel_weight")  # the 0.1 keys, folded into `terms`


@dataclass(frozen=True)
class LossConfig:
    """Named reconstruction terms and their weights, the KL weight schedule and free bits.

    `terms` maps names registered in audiovae/training/losses.py (stft, log_mel, mse, l1) to weights. The 0.1 keys still
    work: `reconstruction: spectral` with `stft_weight` / `mel_weight` means {stft: .., log_mel: ..}, and
    `reconstruction: mse` (or l1) means {mse: 1}.
    """

    terms: dict[str, float] | None = None  # None: {stft: 1.0, log_mel: 1.0}
    stft_windows: tuple[int, ...] = (2048, 1024, 512, 256, 128)
    mel_windows: tuple[int, ...] = (2048, 1024, 512)
    beta: float = 0.1  # KL weight after warm-up
    beta_warmup_steps: int = 1000  # linear ramp of the KL weight from 0 to beta
    free_bits: float = 0.0  # nats per latent dimension (per frame) below which the KL is not penalized
    reconstruction: str | None = None  # 0.1 alias: spectral | mse | l1
    stft_weight: float | None = None  # 0.1 alias: weight of the stft term
    mel_weight: float | None = None  # 0.1 alias: weight of the mel term

    def __post_init__(self):

        if any(getattr(self, key) is not None for key in LOSS_ALIASES):
            require(self.terms is None, "terms", "give either terms or the 0.1 keys "
                    "(reconstruction, stft_weight, mel_weight), not both")
            object.__setattr__(self, "terms", self._terms_from_aliases())
            for key in LOSS_ALIASES:
                object.__setattr__(self, key, None)
        elif self.terms is None:
            object.__setattr__(self, "terms", {"stft": 1.0, "log_mel": 1.0})
        require(bool(self.terms), "terms", f"needs at least one of {', '.join(LOSS_TERMS)}")
        for name, weight in self.terms.items():
            require(name in LOSS_TERMS, f"terms.{name}", f"unknown loss term (known: {', '.join(LOSS_TERMS)})")
            require(weight >= 0, f"terms.{name}", "weights must be >= 0")
        require(all(w >= 16 for w in self.stft_windows), "stft_windows", "windows must be >= 16 samples")
        require(all(w >= 64 for w in self.mel_windows), "mel_windows", "windows must be >= 64 samples")
        require(self.beta >= 0, "beta", "must be >= 0")
        require(self.beta_warmup_steps >= 0, "beta_warmup_steps", "must be >= 0")
        require(self.free_bits >= 0, "free_bits", "must be >= 0")

    def _terms_from_aliases(self) -> dict[str, float]:
        reconstruction = self.reconstruction or "spectral"
        choice("reconstruction", reconstruction, ("spectral", "mse", "l1"))
        if reconstruction != "spectral":
            return {reconstruction: 1.0}
        terms = {}
        for key, name in (("stft_weight", "stft"), ("mel_weight", "log_mel")):
            weight = getattr(self, key)
            weight = 1.0 if weight is None else weight
            require(weight >= 0, key, "must be >= 0")
            terms[name] = weight
        return terms


@dataclass(frozen=True)
class TrainConfig:
    """Optimization, validation, checkpoints and augmentation."""

    optimizer: str = "adamw"  # adamw | adam
    learning_rate: float = 1e-3
    # the last fraction of the budget (max_steps or max_minutes, whichever comes first) over which the
    # learning rate falls linearly to lr_final x learning_rate; 0 keeps it constant
    lr_decay_fraction: float = 0.0
    lr_final: float = 0.05
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
    num_threads: int | None = None  # torch threads; None: the cores other processes leave free (resume: the run's)
    gain_db: float = 0.0  # random gain in [-gain_db, +gain_db] dB per example; 0 disables
    crop_samples: int | None = None  # random crop of this length from each training segment
    # random transposition in [-transpose_semitones, +transpose_semitones] per example (frame features only: every
    # frequency of the item moved by the same ratio); 0 disables
    transpose_semitones: float = 0.0
    device: str = "auto"  # auto | cpu | cuda
    # the forward pass's arithmetic while training (synthesis always runs float32 on the CPU): auto is bf16
    # autocast on CUDA and on a CPU with bf16 units (AMX, AVX-512 BF16; a frame model trains 1.2-1.6x the steps a
    # minute), kept only if one step on a validation batch agrees with float32's; float32 elsewhere. A resumed
    # run keeps its own.
    precision: str = "auto"  # auto | float32 | bfloat16

    def __post_init__(self):
        choice("optimizer", self.optimizer, ("adamw", "adam"))
        require(self.learning_rate > 0, "learning_rate", "must be positive")
        require(0 <= self.lr_decay_fraction <= 1, "lr_decay_fraction", "must be in [0, 1]")
        require(0 <= self.lr_final <= 1, "lr_final", "must be in [0, 1]")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(self.batch_size >= 1, "batch_size", "must be positive")
        require(self.max_steps >= 1, "max_steps", "must be positive")
        require(self.max_minutes is None or self.max_minutes > 0, "max_minutes", "must be positive")
        require(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        require(0 <= self.ema_decay < 1, "ema_decay", "must be in [0, 1)")
        for name in ("valid_every", "valid_batches", "checkpoint_every", "log_every"):
            require(getattr(self, name) >= 1, name, "must be positive")
        require(self.num_workers >= 0, "num_workers", "must be >= 0")
        require(self.num_threads is None or self.num_threads >= 1, "num_threads", "must be positive (or null)")
        require(self.gain_db >= 0, "gain_db", "must be >= 0")
        require(self.crop_samples is None or self.crop_samples >= 64, "crop_samples", "must be at least 64")
        require(0 <= self.transpose_semitones <= 12, "transpose_semitones", "must be in [0, 12]")
        choice("device", self.device, ("auto", "cpu", "cuda"))
        choice("precision", self.precision, ("auto", "float32", "bfloat16"))


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
        require(self.start_step >= 0, "start_step", "must be >= 0")
        require(self.weight >= 0 and self.feature_weight >= 0, "weight", "weights must be >= 0")
        require(self.learning_rate > 0, "learning_rate", "must be positive")
        require(len(self.windows) >= 1 and all(w >= 16 for w in self.windows), "windows",
                 "needs at least one window of >= 16 samples")
        require(self.channels >= 1, "channels", "must be positive")


@dataclass(frozen=True)
class Recipe:
    """A whole recipe. `name` comes from the file name and names the run folder."""

    name: str
    data: DataConfig
    model: Any  # the config dataclass of the model family it names (audiovae/models/)
    loss: LossConfig
    train: TrainConfig
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    prior: Any = None  # audiovae.priors.learned.PriorConfig: a learned prior trained as the run's last stage
    # how frames become sound (audiovae.dsp.inversion); None for waveform models, which have nothing to synthesize
    synthesis: SynthesisConfig | None = None

    def __post_init__(self):

        family = get_family(self.model.family)
        representation = self.data.representation
        require(not self.adversarial.enabled or representation.is_waveform, "adversarial.enabled",
                "the adversarial stage is for waveform models (data.features: wave)")
        require(not self.adversarial.enabled or max(self.adversarial.windows) <= self.training_samples,
                "adversarial.windows", f"must not exceed the training length ({self.training_samples} samples)")
        require(self.train.crop_samples is None or self.train.crop_samples <= self.data.segment_samples,
                "train.crop_samples", "must not exceed data.segment_samples")
        check_features(family, self.data)
        require((self.synthesis is None) == representation.is_waveform, "synthesis",
                "waveform models (data.features: wave) have no synthesis method; remove the section"
                if representation.is_waveform else f"{self.data.features} features need a synthesis method")
        require(self.prior is None or self.prior.kind != "flow" or not getattr(self.model, "conditional", False),
                "prior.kind", "the flow prior is not conditional: a recipe with model.conditional needs prior.kind "
                "gru or conv")
        representation.check(self)
        for name in self.loss.terms:
            LOSS_TERMS[name].check(self)
        family.check(self)

    @property
    def training_samples(self) -> int:
        """Waveform samples per training example after cropping."""
        return self.train.crop_samples or self.data.segment_samples

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, numbers, strings), as saved in runs and checkpoints."""
        plain = to_plain(dataclasses.asdict(self))
        for key in LOSS_ALIASES:  # always folded into loss.terms by now
            del plain["loss"][key]
        if not plain["model"].get("conditional", True):  # unconditional runs keep the recipe they had before conditioning
            del plain["model"]["conditional"], plain["model"]["labels"]
        return plain


def check_features(family: Family, data: DataConfig) -> None:
    """ConfigError unless the model family reads data.features (checked before the synthesis section, whose
    rules depend on them)."""
    require(data.features in family.features, "data.features",
            f"the '{family.name}' model family needs features: {' or '.join(family.features)}")


def recipe_from_dict(raw: Any, name: str, saved: bool = False) -> Recipe:
    """Build a Recipe from plain data; raises ConfigError with the key path. saved: the data is a run's or a
    checkpoint's resolved recipe, so a missing synthesis section means the one it was made with (_synthesis_section)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("(top level)", "a recipe must be a mapping with data, model, loss and train sections")
    sections = {"data": DataConfig, "model": None, "loss": LossConfig, "train": TrainConfig,
                "adversarial": AdversarialConfig, "prior": None, "synthesis": SynthesisConfig}
    for key in raw:
        if key not in sections:
            close = difflib.get_close_matches(str(key), list(sections), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (valid sections: {', '.join(sections)})"
            raise ConfigError(str(key), f"unknown key{hint}")
    model_raw = raw.get("model") or {}
    if not isinstance(model_raw, dict):
        raise ConfigError("model", "must be a mapping")
    family = model_raw.get("family", "conv")
    if family not in FAMILIES:
        raise ConfigError("model.family", f"must be one of {', '.join(FAMILIES)} (got {family!r})")
    try:
        data = build_dataclass(DataConfig, raw.get("data"), "data")
        check_features(FAMILIES[family], data)
        return Recipe(
            name=name,
            data=data,
            model=build_dataclass(FAMILIES[family].config, model_raw, "model"),
            loss=build_dataclass(LossConfig, raw.get("loss"), "loss"),
            train=build_dataclass(TrainConfig, raw.get("train"), "train"),
            adversarial=build_dataclass(AdversarialConfig, raw.get("adversarial"), "adversarial"),
            prior=_prior_section(raw.get("prior")),
            synthesis=_synthesis_section(raw.get("synthesis"), data, saved),
        )
    except ConfigError as error:
        raise error from None


def _prior_section(raw: Any) -> Any:
    """The `prior:` section (absent or null: no learned prior)."""
    if raw is None:
        return None
    return build_dataclass(PriorConfig, raw, "prior")


def _synthesis_section(raw: Any, data: DataConfig, saved: bool) -> SynthesisConfig | None:
    """The `synthesis:` section. Absent or null: the representation's default for a new recipe, and for a saved
    one (written before the section existed) the representation's legacy method, so that old runs keep their
    sound whatever the default becomes. A section without `method` takes the default's method."""
    representation = data.representation
    if representation.is_waveform:
        require(raw is None, "synthesis", "waveform models (data.features: wave) have no synthesis method; "
                "remove the section")
        return None
    if raw is None:
        raw = representation.synthesis_legacy if saved else representation.synthesis_default
    if isinstance(raw, dict) and "method" not in raw:
        raw = {"method": representation.synthesis_default["method"], **raw}
    return build_dataclass(SynthesisConfig, dict(raw) if isinstance(raw, Mapping) else raw, "synthesis")


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
        text = read_small_text(path)
    except FileNotFoundError:
        raise UserError(f"{path}: recipe not found (the shipped ones are in recipes/)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read recipe ({error})") from None
    raw = load_yaml(text, path)  # a repeated key is an error naming both lines, not silently the last
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
    return recipe_from_dict(plain, name, saved=True)
