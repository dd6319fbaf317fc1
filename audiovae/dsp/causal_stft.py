"""The causal STFT pair of the live frame model: frames that end at their hop, and their overlap-add back.

The offline analysis (audiovae.dsp.transforms) centres frame t on sample t * hop and reflect-pads the start,
which reads up to n_fft / 2 samples ahead. A live analysis cannot, so frame t covers the n_fft samples that
end at (t + 1) * hop, with zeros before the first sample (no reflection: the start is silence):

    input     0 0 0 0 0 | x0 ........ x127 | x128 ........ x255 | ...      n_fft 512, hop 128
    frame 0   [------- 384 zeros -------][ x0 .. x127 ]
    frame 1                 [-- 256 zeros --][ x0 ............ x255 ]

Frame t is the centred frame t + 1 - n_fft / (2 hop) with zeros where the offline path reflects. The
synthesis lays frame t's windowed inverse DFT over the same samples; a stream cannot emit a sample until every
frame over it has arrived, so it hears each frame's samples from (t + 1) * hop on: n_fft - hop samples later
(audiovae.nn.streaming_frames). These functions are the offline reference the stream is tested against, written
with torch's FFT (the stream computes the same transforms as convolutions, for ONNX).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from audiovae.dsp.inversion import PhaseAdvance


def overlap_gain(n_fft: int, hop_length: int) -> float:
    """The sum of the squared periodic Hann windows over any sample of a steady overlap-add (3 n_fft / (8 hop)).

    It is the same for every sample only when the hop divides n_fft at least three times, so a causal frame
    model requires that (audiovae.models.mel): the stream then divides by one number, no running envelope."""
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    envelope = window.square().reshape(-1, hop_length).sum(0)  # (hop,): every frame's contribution to a sample
    if n_fft % hop_length or n_fft // hop_length < 3 or float(envelope.max() - envelope.min()) > 1e-9:
        raise ValueError(f"n_fft {n_fft} must be a multiple of at least 3 hops ({hop_length}) for a steady overlap-add")
    return float(envelope.mean())


def causal_log_spectrogram(wave: torch.Tensor, n_fft: int, hop_length: int, log_floor: float) -> torch.Tensor:
    """wave (batch, time), time a multiple of hop_length -> natural-log magnitudes (batch, bins, time // hop_length),
    frame t over samples [(t + 1) * hop - n_fft, (t + 1) * hop), zeros before the first sample."""
    window = torch.hann_window(n_fft, periodic=True, dtype=wave.dtype, device=wave.device)
    padded = F.pad(wave, (n_fft - hop_length, 0))
    spectrum = torch.stft(padded, n_fft, hop_length, window=window, center=False, return_complex=True)
    magnitude = (spectrum.real.square() + spectrum.imag.square()).clamp_min(1e-12).sqrt()
    return torch.log(magnitude.clamp_min(log_floor))


def causal_synthesis(log_magnitude: torch.Tensor, advance: PhaseAdvance) -> torch.Tensor:
    """Log magnitudes (batch, bins, frames) -> audio (batch, frames * hop) lined up with causal_log_spectrogram's
    frames (frame t's inverse over samples [(t + 1) * hop - n_fft, (t + 1) * hop)), phases by `advance` running
    from zero in float64 over the whole sound (a stream gives the same output n_fft - hop samples later)."""
    n_fft, hop = advance.n_fft, advance.hop_length
    frames = log_magnitude.shape[-1]
    phase, magnitude, _ = advance.running(log_magnitude, torch.zeros_like(log_magnitude[..., :1]))
    spectrum = torch.polar(magnitude, phase)
    window = torch.hann_window(n_fft, periodic=True, dtype=log_magnitude.dtype, device=log_magnitude.device)
    pieces = torch.fft.irfft(spectrum, n_fft, dim=1) * window[:, None]  # (batch, n_fft, frames)
    length = (frames - 1) * hop + n_fft  # frame t over [t * hop, t * hop + n_fft) of this buffer
    summed = F.fold(pieces, (1, length), (1, n_fft), stride=(1, hop))[:, 0, 0]
    return summed[:, n_fft - hop : n_fft - hop + frames * hop] / overlap_gain(n_fft, hop)
