"""Every torchaudio call lives here (mel filterbanks, Griffin-Lim, GPU resampling), so it can be swapped out."""

from __future__ import annotations

import functools

import torch
import torchaudio

GRIFFIN_LIM_ITERATIONS = 32  # the mel family's synthesis, in Python and in its export (audiovae.nn.spectral)


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


def log_mel(
    wave: torch.Tensor,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    log_floor: float = 1e-5,
) -> torch.Tensor:
    """Natural-log mel magnitude: wave (..., time) -> (..., n_mels, frames), frames = time // hop_length + 1."""
    magnitude = power_spectrogram(wave, n_fft, hop_length).clamp_min(1e-12).sqrt()
    return log_mel_of_magnitude(magnitude, sample_rate, n_mels, f_min, f_max, log_floor)


def log_mel_of_magnitude(
    magnitude: torch.Tensor,
    sample_rate: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    log_floor: float = 1e-5,
) -> torch.Tensor:
    """Natural-log mel magnitude of STFT magnitudes: (..., n_fft // 2 + 1, frames) -> (..., n_mels, frames)."""
    n_fft = 2 * (magnitude.shape[-2] - 1)
    fb = mel_filterbank(n_fft, n_mels, sample_rate, f_min, f_max).to(magnitude.device, magnitude.dtype)
    mel = torch.matmul(magnitude.transpose(-1, -2), fb).transpose(-1, -2)
    return torch.log(mel.clamp_min(log_floor))


def griffin_lim_from_log_mel(
    log_mel_frames: torch.Tensor,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    iterations: int = GRIFFIN_LIM_ITERATIONS,
) -> torch.Tensor:
    """Invert natural-log mel magnitudes to a waveform: (..., n_mels, frames) -> (..., frames * hop_length).

    The mel magnitudes are mapped back to linear frequencies by non-negative least squares
    (torchaudio's InverseMelScale) and the phase is estimated by Griffin-Lim.
    """
    n_mels = log_mel_frames.shape[-2]
    f_max = float(sample_rate) / 2 if f_max is None else float(f_max)
    device = log_mel_frames.device
    inverse = torchaudio.transforms.InverseMelScale(
        n_stft=n_fft // 2 + 1, n_mels=n_mels, sample_rate=sample_rate, f_min=f_min, f_max=f_max,
        norm="slaney", mel_scale="slaney",
    ).to(device)
    # Our frames drop the last centred frame (frames = samples // hop_length); repeating the final frame
    # restores it, so the inversion spans exactly frames * hop_length samples.
    frames = log_mel_frames.shape[-1]
    log_mel_frames = torch.cat([log_mel_frames, log_mel_frames[..., -1:]], dim=-1)
    griffin_lim = torchaudio.transforms.GriffinLim(
        n_fft=n_fft, hop_length=hop_length, power=1.0, n_iter=iterations, rand_init=False,
        length=frames * hop_length,
    ).to(device)
    magnitude = inverse(torch.exp(log_mel_frames.float())).clamp_min(0.0)
    return griffin_lim(magnitude)


def resample(wave: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """Band-limited resampling on the tensor's device: wave (..., time)."""
    if from_rate == to_rate:
        return wave
    return torchaudio.functional.resample(wave, from_rate, to_rate)
