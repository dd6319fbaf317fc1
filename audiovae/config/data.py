"""The data section of a recipe: where prepared data lives and how prepare makes it (rate, segments, features).

Prepare and the dataset read this section alone; audiovae.config.recipe builds the whole recipe on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from audiovae.config.schema import choice, require
from audiovae.data.representations import REPRESENTATIONS, Representation, representation_for


@dataclass(frozen=True)
class MelConfig:
    """The STFT (and, for features: mel, mel-band) analysis of frame features; recorded at prepare time so
    synthesis can invert it."""

    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None  # None: half the sample rate
    log_floor: float = 1e-5

    def __post_init__(self):
        require(self.n_fft >= 16, "n_fft", "must be at least 16")
        require(0 < self.hop_length <= self.n_fft, "hop_length", "must be in 1..n_fft")
        require(self.n_mels >= 1, "n_mels", "must be positive")
        require(self.f_min >= 0, "f_min", "must be >= 0")
        require(self.f_max is None or self.f_max > self.f_min, "f_max", "must be above f_min")
        require(self.log_floor > 0, "log_floor", "must be positive")


@dataclass(frozen=True)
class DataConfig:
    """Where the prepared data lives and how prepare makes it (sample rate, segments, features)."""

    folder: str = "data/prepared"
    sample_rate: int = 16000
    features: str = "wave"  # the input representation (audiovae/data/representations.py): wave | mel | spectrogram | spectrogram_phase
    segment_samples: int = 16384
    hop_samples: int | None = None  # hop between segment starts; None: segment_samples (no overlap)
    normalization: str = "peak"  # peak | rms | none, per file
    target_db: float | None = None  # peak or RMS level after normalization, dBFS; None: -1 (peak), -20 (rms)
    silence_db: float = -60.0  # segments whose RMS is below this (dBFS) are dropped
    valid_fraction: float = 0.1  # share of source files held out for validation
    split_seed: int = 0
    mel: MelConfig = field(default_factory=MelConfig)

    def __post_init__(self):
        require(4000 <= self.sample_rate <= 192000, "sample_rate", "must be in 4000..192000 Hz")
        choice("features", self.features, tuple(REPRESENTATIONS))
        require(self.segment_samples >= 64, "segment_samples", "must be at least 64")
        require(
            self.hop_samples is None or 0 < self.hop_samples <= self.segment_samples,
            "hop_samples", "must be in 1..segment_samples",
        )
        choice("normalization", self.normalization, ("peak", "rms", "none"))
        require(self.target_db is None or self.target_db <= 0, "target_db", "must be <= 0 dBFS")
        require(0.0 <= self.valid_fraction < 1.0, "valid_fraction", "must be in [0, 1)")
        self.representation.check_data()

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
    def representation(self) -> Representation:
        """The input representation `features` names (audiovae.data.representations.Representation)."""
        return representation_for(self)

    @property
    def item_shape(self) -> tuple[int, ...]:
        """Shape of one stored segment, e.g. (segment_samples,) or (n_mels, mel_frames)."""
        return self.representation.item_shape

    def audio_settings(self) -> dict[str, Any]:
        """The settings a dataset must share with a recipe for training to make sense."""
        return self.representation.settings()
