"""Every torchaudio call lives here (mel filterbanks, inverse mel scale, GPU resampling), so it can be swapped out;
and the FFT-based Griffin-Lim that synthesis in Python runs (the export runs audiovae.nn.spectral.MelInversion)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torchaudio

from audiovae.dsp.inversion import SynthesisConfig


@functools.lru_cache(maxsize=32)
def _mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    # Slaney-normalized triangles on the Slaney mel scale, as librosa's default: (n_freqs, n_mels)
    return torchaudio.functional.melscale_fbanks(
        n_freqs, f_min, f_max, n_mels, sample_rate, norm="slaney", mel_scale="slaney"
    )


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float, f_max: float | None) -> torch.Tensor:
    """Mel filterbank matrix (n_fft // 2 + 1, n_mels), float32, cached."""
    f_max = float(sample_rate) / 2 if f_max is None else float(f_max)
    return _mel_filterbank(n_fft // 2 + 1, float(f_min), f_max, n_mels, sample_rate)


def _stft(wave: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Complex STFT with a Hann window, centered frames: wave (..., time) -> (..., n_fft // 2 + 1, frames)."""
    window = torch.hann_window(n_fft, device=wave.device, dtype=wave.dtype)
    spec = torch.stft(wave.reshape(-1, wave.shape[-1]), n_fft, hop_length, window=window, center=True,
                      return_complex=True)
    return spec.reshape(*wave.shape[:-1], *spec.shape[-2:])


def power_spectrogram(wave: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """|STFT|^2 with a Hann window, centered frames: wave (..., time) -> (..., n_fft // 2 + 1, frames)."""
    spec = _stft(wave, n_fft, hop_length)
    return spec.real.square() + spec.imag.square()


def magnitude_spectrogram(wave: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """|STFT| with a Hann window, centered frames: wave (..., time) -> (..., n_fft // 2 + 1, frames)."""
    return _stft(wave, n_fft, hop_length).abs()


def log_mel(wave: torch.Tensor, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, f_min: float = 0.0,
            f_max: float | None = None, log_floor: float = 1e-5) -> torch.Tensor:
    """Natural-log mel magnitude: wave (..., time) -> (..., n_mels, frames), frames = time // hop_length + 1."""
    magnitude = power_spectrogram(wave, n_fft, hop_length).clamp_min(1e-12).sqrt()
    return log_mel_of_magnitude(magnitude, sample_rate, n_mels, f_min, f_max, log_floor)


def log_mel_of_magnitude(magnitude: torch.Tensor, sample_rate: int, n_mels: int, f_min: float = 0.0,
                         f_max: float | None = None, log_floor: float = 1e-5) -> torch.Tensor:
    """Natural-log mel magnitude of STFT magnitudes: (..., n_fft // 2 + 1, frames) -> (..., n_mels, frames)."""
    n_fft = 2 * (magnitude.shape[-2] - 1)
    fb = mel_filterbank(n_fft, n_mels, sample_rate, f_min, f_max).to(magnitude.device, magnitude.dtype)
    mel = torch.matmul(magnitude.transpose(-1, -2), fb).transpose(-1, -2)
    return torch.log(mel.clamp_min(log_floor))


def log_spectrogram(wave: torch.Tensor, n_fft: int, hop_length: int, log_floor: float = 1e-5) -> torch.Tensor:
    """Natural-log STFT magnitude: wave (..., time) -> (..., n_fft // 2 + 1, frames), frames = time // hop_length + 1.

    The same analysis and floor as log_mel, without the filterbank."""
    magnitude = power_spectrogram(wave, n_fft, hop_length).clamp_min(1e-12).sqrt()
    return torch.log(magnitude.clamp_min(log_floor))


def inverse_stft(spectrum: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor,
                 length: int) -> torch.Tensor:
    """torch.istft(spectrum, n_fft, hop_length, window=window, center=True, length=length) for spectrum (batch,
    bins, frames) -> (batch, length), to float rounding (2e-7 of the peak), in half its time where the hop
    divides n_fft (10-s sounds at 44.1 kHz: 1.8 against 4.4 ms on 2 cores; docs/benchmarks.md): the frames'
    hop-long blocks are added in n_fft / hop shifted passes, and the window-square envelope, which torch.istft
    folds afresh each call, in the same few passes over a window instead of a sound. Other hops: torch.istft."""
    if n_fft % hop_length:
        return torch.istft(spectrum, n_fft, hop_length, window=window, length=length)
    batch, frames, overlap = spectrum.shape[0], spectrum.shape[-1], n_fft // hop_length
    blocks = (torch.fft.irfft(spectrum.transpose(1, 2), n=n_fft, dim=-1) * window).reshape(batch, frames, overlap,
                                                                                          hop_length)
    summed = blocks.new_zeros(batch, frames + overlap - 1, hop_length)
    envelope = blocks.new_zeros(frames + overlap - 1, hop_length)
    square = (window * window).reshape(overlap, hop_length)
    for j in range(overlap):  # block j of frame t lands on hop t + j
        summed[:, j : j + frames] += blocks[:, :, j]
        envelope[j : j + frames] += square[j]
    start = n_fft // 2  # center=True: the first frame is centred on the first sample
    wave = summed.reshape(batch, -1)[:, start : start + length]
    wave = wave / envelope.reshape(-1)[start : start + wave.shape[-1]].clamp_min(1e-11)
    return torch.nn.functional.pad(wave, (0, length - wave.shape[-1])) if wave.shape[-1] < length else wave


def polar(magnitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """torch.polar(magnitude, phase) to float rounding (1e-7), in about a third of its time on a CPU, where PyTorch
    runs polar unvectorized and cos and sin vectorized (10-s sounds at 44.1 kHz: 1.7 against 4.5 ms on 2 cores)."""
    return torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))


def griffin_lim(magnitude: torch.Tensor, n_fft: int, hop_length: int, length: int, synthesis: SynthesisConfig,
                first_frame: int = 0) -> torch.Tensor:
    """A waveform whose STFT magnitude approaches `magnitude` (..., n_fft // 2 + 1, frames) -> (..., length):
    the phases of `synthesis`'s method (audiovae.dsp.inversion; `first_frame`: the index of the first frame in
    the whole sound, for chunks of one) under the magnitudes it starts from (PhaseRule.start), then
    synthesis.iterations of fast Griffin-Lim (Perraudin et al. 2013,
    as torchaudio's) with synthesis.momentum. Peak-locked phases with 0 iterations are a phase-locked vocoder."""
    shape = magnitude.shape
    magnitude = magnitude.reshape(-1, *shape[-2:])
    if magnitude.shape[0] > 1 and magnitude.device.type == "cpu":
        # a sound at a time: the same numbers, and on a CPU half again as fast a sound at batch 8 as together
        # (a batch's temporaries are arrays of tens of MB, which the allocator maps and faults in afresh each time)
        return torch.cat([griffin_lim(row, n_fft, hop_length, length, synthesis, first_frame)
                          for row in magnitude.split(1)]).reshape(*shape[:-2], length)
    window = torch.hann_window(n_fft, device=magnitude.device, dtype=magnitude.dtype)
    phase, under, magnitude = synthesis.phase_rule(n_fft, hop_length).start(magnitude, first_frame)
    if synthesis.iterations == 0:  # the same numbers as under times the unit phasors below, in one pass
        spectrum = polar(under, phase.expand_as(under))
        return inverse_stft(spectrum, n_fft, hop_length, window, length).reshape(*shape[:-2], length)
    angles = polar(torch.ones_like(phase), phase).expand_as(magnitude)
    previous = torch.zeros_like(angles)
    pull = synthesis.momentum / (1 + synthesis.momentum)
    for _ in range(synthesis.iterations):
        wave = inverse_stft(under * angles, n_fft, hop_length, window, length)
        rebuilt = torch.stft(wave, n_fft, hop_length, window=window, return_complex=True)
        angles = torch.sgn(torch.sub(rebuilt, previous, alpha=pull))  # z / |z| (0 at 0); one pass, not two
        previous = rebuilt
        under = magnitude
    wave = inverse_stft(under * angles, n_fft, hop_length, window, length)
    return wave.reshape(*shape[:-2], length)


def inverse_mel_scale(mel_magnitude: torch.Tensor, sample_rate: int, n_fft: int, f_min: float = 0.0,
                      f_max: float | None = None) -> torch.Tensor:
    """Mel magnitudes (..., n_mels, frames) -> the least-norm STFT magnitudes (..., n_fft // 2 + 1, frames) under
    the filterbank, clipped at 0 (torchaudio's InverseMelScale: least squares by LAPACK, which for fewer bands
    than bins is the pseudo-inverse's solution; the export multiplies by the pseudo-inverse itself)."""
    n_mels = mel_magnitude.shape[-2]
    f_max = float(sample_rate) / 2 if f_max is None else float(f_max)
    inverse = torchaudio.transforms.InverseMelScale(
        n_stft=n_fft // 2 + 1, n_mels=n_mels, sample_rate=sample_rate, f_min=f_min, f_max=f_max,
        norm="slaney", mel_scale="slaney",
    ).to(mel_magnitude.device)
    return inverse(mel_magnitude).clamp_min(0.0)


def griffin_lim_from_log_mel(log_mel_frames: torch.Tensor, sample_rate: int, n_fft: int, hop_length: int,
                             synthesis: SynthesisConfig, f_min: float = 0.0, f_max: float | None = None,
                             first_frame: int = 0) -> torch.Tensor:
    """Invert natural-log mel magnitudes to a waveform: (..., n_mels, frames) -> (..., frames * hop_length).

    The mel magnitudes are mapped back to linear frequencies by inverse_mel_scale and the phase comes from
    `synthesis` (griffin_lim).
    """
    return griffin_lim_from_log_magnitude(
        log_mel_frames, n_fft, hop_length, synthesis,
        lambda mel: inverse_mel_scale(mel, sample_rate, n_fft, f_min, f_max), first_frame)


def griffin_lim_from_log_magnitude(log_frames: torch.Tensor, n_fft: int, hop_length: int, synthesis: SynthesisConfig,
                                   to_linear: Callable[[torch.Tensor], torch.Tensor] | None = None,
                                   first_frame: int = 0) -> torch.Tensor:
    """Invert natural-log frames (..., channels, frames) to a waveform (..., frames * hop_length): exp, then
    `to_linear` (frames' magnitudes -> STFT magnitudes; None: they already are), then griffin_lim by `synthesis`.

    Stored frames drop the last centred frame (frames = samples // hop_length); repeating the final frame
    restores it, so the inversion spans exactly frames * hop_length samples. Frames too few for the STFT's
    reflect padding (n_fft / 2 samples) get silent ones after them, cut off again.
    """
    frames = log_frames.shape[-1]
    # a frame's channels side by side in memory from here on, as the inverse STFT's FFTs read them: every
    # elementwise step of the synthesis then runs over contiguous arrays (docs/benchmarks.md, round 16)
    rows = log_frames.float().transpose(-1, -2)
    magnitude = torch.exp(torch.cat([rows, rows[..., -1:, :]], dim=-2)).transpose(-1, -2)
    if to_linear is not None:
        magnitude = to_linear(magnitude)
    extra = max(0, (n_fft // 2) // hop_length + 1 - frames)
    if extra:
        magnitude = torch.nn.functional.pad(magnitude, (0, extra))
    length = (frames + extra) * hop_length
    return griffin_lim(magnitude, n_fft, hop_length, length, synthesis, first_frame)[..., : frames * hop_length]


def resample(wave: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """Band-limited resampling on the tensor's device: wave (..., time)."""
    if from_rate == to_rate:
        return wave
    return torchaudio.functional.resample(wave, from_rate, to_rate)
