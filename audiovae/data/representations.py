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

    @property
    def phase_channels(self) -> int:
        """Channels of phases that follow the frames' own in model input and output (split_phase); 0: none."""
        return 0

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

    def split_phase(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Model input or output (batch, channels, steps) -> (its frames, its phases in radians or None): the
        losses and the synthesis read the two apart (features: spectrogram_phase carries phases)."""
        return x, None

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
        require(self.phase_channels or not recipe.synthesis.takes_model_phase, "synthesis.method",
                f"{recipe.synthesis.method!r} needs a model with a phase head (data.features: spectrogram_phase, "
                "recipes/spectrogram-phase.yaml); this one has none")

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


class SpectrogramPhase(LogSpectrogram):
    """LogSpectrogram's frames with their STFT phases after them: (2 * (n_fft // 2 + 1), frames), log magnitudes
    then phases in radians, (-pi, pi]. The encoder reads the magnitudes alone; a mel-family model over these
    grows a phase head (audiovae.models.mel) trained on the phases by anti-wrapping losses (instantaneous phase,
    group delay, instantaneous frequency, audiovae.dsp.distances.phase_distances), and synthesis method `learned`
    puts its phases under its magnitudes (docs/quality.md measures it against peak-locked phases)."""

    name = "spectrogram_phase"
    synthesis_default = MappingProxyType({"method": "learned", "iterations": 0, "momentum": 0.99})
    synthesis_legacy = synthesis_default  # no run of this representation was saved without the section

    @property
    def phase_channels(self) -> int:
        return self.data.mel.n_fft // 2 + 1

    @property
    def channels(self) -> int:
        return 2 * self.phase_channels

    def log_frames(self, wave: torch.Tensor) -> torch.Tensor:
        import torch

        from audiovae.dsp.transforms import log_spectrogram_and_phase

        mel = self.data.mel
        return torch.cat(log_spectrogram_and_phase(wave, mel.n_fft, mel.hop_length, mel.log_floor), dim=-2)

    def split_phase(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        bins = self.phase_channels
        return x[..., :bins, :], x[..., bins:, :]

    def with_gain(self, item: torch.Tensor, gain_db: float) -> torch.Tensor:
        import torch

        frames, phase = self.split_phase(item)
        return torch.cat([super().with_gain(frames, gain_db), phase], dim=-2)  # a gain leaves phases alone

    def pad_value(self, x: torch.Tensor) -> float:
        return float(self.split_phase(x)[0].min())

    def to_audio(self, output: torch.Tensor, synthesis: SynthesisConfig | None, first_step: int = 0) -> torch.Tensor:
        from audiovae.dsp.transforms import griffin_lim_from_log_magnitude

        mel = self.data.mel
        frames, phase = self.split_phase(output.float())
        return griffin_lim_from_log_magnitude(frames, mel.n_fft, mel.hop_length, synthesis, first_frame=first_step,
                                              phase=phase)

    def validation_scores(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        from audiovae.dsp.distances import phase_distances

        (x_frames, x_phase), (y_frames, y_phase) = self.split_phase(x), self.split_phase(y.float())
        scores = {"frame_l1": (x_frames - y_frames).abs().mean().item()}
        return {**scores, **{name: value.item() for name, value in
                             phase_distances(x_phase, y_phase, x_frames).items()}}

    def filterbank(self) -> torch.Tensor:
        import torch

        return torch.eye(self.phase_channels)


# data.features -> representation class
REPRESENTATIONS: dict[str, type[Representation]] = {"wave": Waveform, "mel": LogMel, "spectrogram": LogSpectrogram,
                                                    "spectrogram_phase": SpectrogramPhase}


def representation_for(data: DataConfig) -> Representation:
    """The representation a recipe's data section asks for."""
    return REPRESENTATIONS[data.features](data)
