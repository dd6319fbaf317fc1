"""Input representations: what one step of model input is, and how audio becomes it and back.

A recipe's `data.features` names one. `wave` stores and models the waveform itself (one sample per
step; a PQMF front end, when a model has one, is part of that model). `mel` stores natural-log mel frames
computed at prepare time and turns model output back into audio by the recipe's synthesis method
(audiovae.dsp.inversion); `spectrogram` does the same with natural-log STFT magnitudes (no filterbank). Everything that
depends on that choice (item shapes, crops and gains of stored items, padding, the validation score,
conversion to and from audio) lives here; a new representation is one class and one registry line.

torch is imported inside the methods that need it, so `prepare`'s worker processes stay light.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from audiovae.config.schema import require

if TYPE_CHECKING:
    import torch

    from audiovae.config.data import DataConfig
    from audiovae.config.recipe import Recipe
    from audiovae.dsp.inversion import SynthesisConfig


class Representation:
    """How audio is stored and fed to a model. Items are (channels, steps); audio is (batch, samples)."""

    name: ClassVar[str]
    is_waveform: ClassVar[bool]  # whether model input and output are themselves audio
    score_name: ClassVar[str]  # the validation score (lower is better) that picks the best checkpoint
    # A recipe's `synthesis:` section when it gives none (audiovae.config.recipe resolves it, and the resolved
    # recipe and every checkpoint store it): synthesis_default for a new recipe (free to change between
    # versions), synthesis_legacy for a run or checkpoint saved without the section (made before 0.3, which
    # synthesized as written there; never to change). None: model output is audio, nothing to synthesize.
    synthesis_default: ClassVar[Mapping[str, Any] | None] = None
    synthesis_legacy: ClassVar[Mapping[str, Any] | None] = None

    def __init__(self, data: DataConfig):
        self.data = data

    @property
    def samples_per_step(self) -> int:
        """Waveform samples per step of model input."""
        raise NotImplementedError

    @property
    def channels(self) -> int:
        """Channels of model input."""
        raise NotImplementedError

    @property
    def item_shape(self) -> tuple[int, ...]:
        """Shape of one stored segment."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The audio settings a dataset must share with a recipe for training to make sense."""
        return {"sample_rate": self.data.sample_rate, "features": self.name,
                "segment_samples": self.data.segment_samples}

    def check_data(self) -> None:
        """Raise ConfigError (keys relative to the data section) for data settings it cannot serve."""

    def check(self, recipe: Recipe) -> None:
        """Raise ConfigError for recipe values this representation cannot serve."""

    def items_from_audio(self, segments: np.ndarray) -> np.ndarray:
        """Stored items of waveform segments: (count, segment_samples) -> (count, *item_shape)."""
        raise NotImplementedError

    def item(self, stored: np.ndarray) -> torch.Tensor:
        """A stored item as a float tensor (channels, steps)."""
        raise NotImplementedError

    def with_gain(self, item: torch.Tensor, gain_db: float) -> torch.Tensor:
        """The item of the same audio `gain_db` louder."""
        raise NotImplementedError

    def transposed(self, item: torch.Tensor, ratio: float) -> torch.Tensor:
        """The item of the same audio with every frequency times `ratio` (train.transpose_semitones)."""
        raise NotImplementedError

    def from_audio(self, wave: torch.Tensor) -> torch.Tensor:
        """Model input of audio: (batch, samples) -> (batch, channels, samples // samples_per_step)."""
        raise NotImplementedError

    def to_audio(self, output: torch.Tensor, synthesis: SynthesisConfig | None, first_step: int = 0) -> torch.Tensor:
        """Audio of model output: (batch, channels, steps) -> (batch, steps * samples_per_step), by the recipe's
        synthesis method (None for waveforms). first_step: the index of output's first step in the whole sound,
        when it is a chunk of one (synth's chunked synthesis)."""
        raise NotImplementedError

    def pad_value(self, x: torch.Tensor) -> float:
        """What pads model input on the right up to a whole latent frame: silence in this representation."""
        return 0.0

    def validation_scores(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Validation distances of output y to input x (same shape); includes `score_name`."""
        raise NotImplementedError


class Waveform(Representation):
    """The waveform, one sample per step, in [-1, 1]."""

    name = "wave"
    is_waveform = True
    score_name = "mel_distance"

    @property
    def samples_per_step(self) -> int:
        return 1

    @property
    def channels(self) -> int:
        return 1

    @property
    def item_shape(self) -> tuple[int, ...]:
        return (self.data.segment_samples,)

    def check(self, recipe: Recipe) -> None:
        require(self.data.segment_samples >= 512, "data.segment_samples",
                "must be at least 512 for the validation mel distance")
        require(recipe.train.transpose_semitones == 0, "train.transpose_semitones",
                "applies to frame features (data.features: mel or spectrogram), not to waveforms")

    def items_from_audio(self, segments: np.ndarray) -> np.ndarray:
        return segments

    def item(self, stored: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.array(stored, dtype=np.float32))[None]  # (1, samples)

    def with_gain(self, item: torch.Tensor, gain_db: float) -> torch.Tensor:
        return item * (10.0 ** (gain_db / 20.0))

    def from_audio(self, wave: torch.Tensor) -> torch.Tensor:
        return wave[:, None]

    def to_audio(self, output: torch.Tensor, synthesis: SynthesisConfig | None, first_step: int = 0) -> torch.Tensor:
        return output[:, 0]

    def validation_scores(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        from audiovae.dsp.distances import mel_distance

        return {"mel_distance": mel_distance(x, y.float(), self.data.sample_rate).item()}


class LogMel(Representation):
    """Natural-log mel magnitudes (n_mels, frames), one frame per `data.mel.hop_length` samples.

    The last centred frame of a segment is dropped, so a segment of N samples is N // hop_length frames.
    """

    name = "mel"
    is_waveform = False
    score_name = "frame_l1"
    synthesis_default = MappingProxyType({"method": "zeros", "iterations": 32, "momentum": 0.99})
    synthesis_legacy = MappingProxyType({"method": "zeros", "iterations": 32, "momentum": 0.99})  # 0.1 and 0.2

    @property
    def samples_per_step(self) -> int:
        return self.data.mel.hop_length

    @property
    def channels(self) -> int:
        return self.data.mel.n_mels

    @property
    def item_shape(self) -> tuple[int, ...]:
        return (self.channels, self.data.segment_samples // self.data.mel.hop_length)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "mel": dataclasses.asdict(self.data.mel)}

    def check_data(self) -> None:
        hop = self.data.mel.hop_length
        require(self.data.segment_samples % hop == 0, "segment_samples",
                f"must be a multiple of mel.hop_length ({hop}) for {self.name} features")

    def check(self, recipe: Recipe) -> None:
        hop = self.data.mel.hop_length
        require(recipe.train.crop_samples is None or recipe.train.crop_samples % hop == 0,
                "train.crop_samples", "must be a multiple of data.mel.hop_length")

    def items_from_audio(self, segments: np.ndarray) -> np.ndarray:
        import torch

        torch.set_num_threads(1)  # called in prepare's worker processes: one thread each
        with torch.no_grad():
            frames = self.from_audio(torch.from_numpy(segments))
        return frames.numpy()

    def item(self, stored: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.array(stored, dtype=np.float32))

    def with_gain(self, item: torch.Tensor, gain_db: float) -> torch.Tensor:
        return item + gain_db * math.log(10.0) / 20.0  # a gain is an offset of natural-log magnitudes

    @functools.cached_property
    def channel_hz(self) -> np.ndarray:
        """The centre frequency of each channel, rising: (channels,) hertz (once: transposed asks per item)."""
        import librosa

        mel = self.data.mel
        f_max = self.data.sample_rate / 2 if mel.f_max is None else mel.f_max
        return librosa.mel_frequencies(mel.n_mels + 2, fmin=mel.f_min, fmax=f_max)[1:-1]  # slaney, as the filterbank

    def transposed(self, item: torch.Tensor, ratio: float) -> torch.Tensor:
        import torch

        # each channel reads the log magnitude at its frequency / ratio, linearly between the two channels around it:
        # a partial keeps its height and moves, and the edge channels repeat past the ends. index_select and lerp take
        # a third of the time of indexing and arithmetic, paid per training item.
        hz = self.channel_hz
        position = np.interp(hz / ratio, hz, np.arange(len(hz), dtype=np.float64))  # >= 0: truncation is floor
        low = np.minimum(position.astype(np.int64), len(hz) - 2)
        weight = torch.from_numpy((position - low).astype(np.float32)).to(item.dtype)[:, None]
        low = torch.from_numpy(low)
        item = item.contiguous()
        return torch.lerp(item.index_select(0, low), item.index_select(0, low + 1), weight)

    def from_audio(self, wave: torch.Tensor) -> torch.Tensor:
        frames = self.log_frames(self.analysable(wave))
        return frames[..., : max(1, wave.shape[-1] // self.data.mel.hop_length)]

    def log_frames(self, wave: torch.Tensor) -> torch.Tensor:
        """The analysis of from_audio: wave (..., time) -> (..., channels, time // hop_length + 1)."""
        from audiovae.dsp.transforms import log_mel

        mel = self.data.mel
        return log_mel(wave, self.data.sample_rate, mel.n_fft, mel.hop_length, mel.n_mels, mel.f_min, mel.f_max,
                       mel.log_floor)

    def analysable(self, wave: torch.Tensor) -> torch.Tensor:
        """wave (..., time), with silence after it when it is too short for the STFT's reflect padding."""
        import torch

        short = self.data.mel.n_fft // 2 + 1 - wave.shape[-1]
        return torch.nn.functional.pad(wave, (0, short)) if short > 0 else wave

    def to_audio(self, output: torch.Tensor, synthesis: SynthesisConfig | None, first_step: int = 0) -> torch.Tensor:
        from audiovae.dsp.transforms import griffin_lim_from_log_mel

        mel = self.data.mel
        return griffin_lim_from_log_mel(output.float(), self.data.sample_rate, mel.n_fft, mel.hop_length, synthesis,
                                        mel.f_min, mel.f_max, first_step)

    def pad_value(self, x: torch.Tensor) -> float:
        return float(x.min())  # the floor (silence), not zero, which is loud in log units

    def validation_scores(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return {"frame_l1": (x - y.float()).abs().mean().item()}

    def filterbank(self) -> torch.Tensor:
        """(n_fft // 2 + 1, channels): STFT magnitudes -> frame magnitudes (the export path's front and back)."""
        from audiovae.dsp.transforms import mel_filterbank

        mel = self.data.mel
        return mel_filterbank(mel.n_fft, mel.n_mels, self.data.sample_rate, mel.f_min, mel.f_max)


class LogSpectrogram(LogMel):
    """Natural-log STFT magnitudes (n_fft // 2 + 1, frames): the log-mel analysis (data.mel's n_fft, hop_length
    and log_floor; n_mels, f_min and f_max do not apply) without the filterbank. Each harmonic of a voice
    keeps its own bins, and synthesis puts phases locked to the peaks of the model's magnitudes under them
    (synthesis method `peaks`, audiovae.dsp.inversion.peaks), with nothing to invert first. From true magnitudes at n_fft 1024,
    hop 256, 16 kHz, 32 Griffin-Lim iterations give PESQ-WB 3.5 and STOI 0.99 on the demo corpus, where 80 mel
    bands lose the harmonics (docs/quality.md). Phases made from magnitudes cannot place energy inside a
    window, so recipes/spectrogram.yaml takes 32-ms windows (n_fft 512 at 16 kHz): on true magnitudes,
    peak-locked phases score PESQ 2.35 there against 1.87 with 64-ms windows.
    """

    name = "spectrogram"
    # On a model's magnitudes (which no signal has exactly), Griffin-Lim's iterations trade the harmonics'
    # continuity for consistency: with the true phases as its start, 8 iterations took a model's STOI from 0.849
    # to 0.787 and PESQ from 1.88 to 1.40. Phases locked to the magnitudes' peaks, no iterations, against 8 from
    # phases advancing at bin centres (docs/quality.md): STOI 0.801 / 0.777, DNSMOS 1.89 / 1.53 on the demo
    # corpus; 0.590 / 0.563, DNSMOS 1.83 / 1.56 on real voices; the mel distance, taken at other FFT sizes, lost.
    synthesis_default = MappingProxyType({"method": "peaks", "iterations": 0, "momentum": 0.99})
    synthesis_legacy = MappingProxyType({"method": "peaks", "iterations": 0, "momentum": 0.99})  # 0.2

    @property
    def channels(self) -> int:
        return self.data.mel.n_fft // 2 + 1

    @functools.cached_property
    def channel_hz(self) -> np.ndarray:
        return np.linspace(0.0, self.data.sample_rate / 2, self.channels)

    def settings(self) -> dict[str, Any]:
        mel = self.data.mel  # the keys that apply, so a dataset does not go stale when n_mels changes
        analysis = {"n_fft": mel.n_fft, "hop_length": mel.hop_length, "log_floor": mel.log_floor}
        return {**Representation.settings(self), "mel": analysis}

    def log_frames(self, wave: torch.Tensor) -> torch.Tensor:
        from audiovae.dsp.transforms import log_spectrogram

        mel = self.data.mel
        return log_spectrogram(wave, mel.n_fft, mel.hop_length, mel.log_floor)

    def to_audio(self, output: torch.Tensor, synthesis: SynthesisConfig | None, first_step: int = 0) -> torch.Tensor:
        from audiovae.dsp.transforms import griffin_lim_from_log_magnitude

        mel = self.data.mel
        return griffin_lim_from_log_magnitude(output.float(), mel.n_fft, mel.hop_length, synthesis,
                                              first_frame=first_step)

    def filterbank(self) -> torch.Tensor:
        import torch

        return torch.eye(self.channels)


# data.features -> representation class
REPRESENTATIONS: dict[str, type[Representation]] = {"wave": Waveform, "mel": LogMel, "spectrogram": LogSpectrogram}


def representation_for(data: DataConfig) -> Representation:
    """The representation a recipe's data section asks for."""
    return REPRESENTATIONS[data.features](data)
