"""Pseudo-QMF filter bank: split a waveform into `bands` critically sampled sub-bands and back.

The convolutions of a multiband model then run at a `bands` times lower rate (and do `bands` times less
work per second of audio), which is the point on a CPU.
Cosine-modulated Kaiser prototype (Lin & Vaidyanathan 1998); the cutoff is chosen so that the
prototype's autocorrelation vanishes at multiples of 2 * bands, which gives near-perfect reconstruction.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.signal.windows import kaiser
from torch import nn

from audiovae.nn.blocks import Interleave, transposed_as_phases


def _prototype(taps: int, cutoff: float, beta: float) -> np.ndarray:
    n = np.arange(taps + 1) - taps / 2
    ideal = cutoff * np.sinc(cutoff * n)  # low-pass with cutoff `cutoff` * pi rad/sample
    return ideal * kaiser(taps + 1, beta)


@functools.lru_cache(maxsize=8)
def design_filters(bands: int, beta: float = 9.0) -> tuple[np.ndarray, np.ndarray]:
    """Analysis and synthesis filters, each (bands, taps + 1)."""
    taps = 16 * bands - 2

    def leakage(cutoff: float) -> float:
        h = _prototype(taps, cutoff, beta)
        auto = np.convolve(h, h[::-1])
        centre = len(auto) // 2
        lags = np.arange(2 * bands, centre + 1, 2 * bands)
        return float(np.max(np.abs(auto[centre + lags]))) if len(lags) else 0.0

    cutoff = minimize_scalar(leakage, bounds=(0.25 / bands, 0.75 / bands), method="bounded").x
    h = _prototype(taps, cutoff, beta)
    n = np.arange(taps + 1) - taps / 2
    k = np.arange(bands)[:, None]
    phase = (2 * k + 1) * np.pi / (2 * bands) * n[None, :]
    sign = ((-1.0) ** k) * np.pi / 4
    analysis = 2 * h[None, :] * np.cos(phase + sign)
    synthesis = 2 * h[None, :] * np.cos(phase - sign)
    return analysis.astype(np.float32), synthesis.astype(np.float32)


class PQMF(nn.Module):
    """analysis: (batch, 1, T) -> (batch, bands, T / bands); synthesis: the inverse. T must divide by bands.

    causal: the analysis pads `taps - bands` zeros on the left only (sub-band frame j reads samples up to
    the end of its own block of `bands`), and the synthesis keeps the first T samples of the full transposed
    convolution (no look-ahead). The pair then delays the signal by `delay` = taps - bands samples
    (15 * bands - 1): the linear-phase filters' group delay, less the block the model reads at once.
    """

    def __init__(self, bands: int, causal: bool = False):
        super().__init__()
        analysis, synthesis = design_filters(bands)
        self.bands, self.causal = bands, causal
        self.taps = analysis.shape[-1]  # 16 * bands - 1
        self.padding = (self.taps - 1) // 2
        self.delay = self.taps - bands if causal else 0
        self.register_buffer("analysis_filter", torch.from_numpy(analysis).unsqueeze(1), persistent=False)
        # a transposed convolution upsamples and filters in one step, never touching the zero-stuffed signal;
        # it is computed as `bands` phases of a plain convolution, interleaved (transposed_as_phases)
        self.register_buffer("synthesis_filter", torch.from_numpy(np.ascontiguousarray(synthesis[:, ::-1]) * bands).unsqueeze(1),
                             persistent=False)
        self.register_buffer("synthesis_phases", transposed_as_phases(self.synthesis_filter, bands), persistent=False)
        self.interleave = Interleave(bands)

    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        pad = (self.taps - self.bands, 0) if self.causal else (self.padding, self.padding)
        x = nn.functional.pad(x, pad)
        return nn.functional.conv1d(x, self.analysis_filter.to(x.dtype), stride=self.bands)

    def synthesis(self, y: torch.Tensor) -> torch.Tensor:
        length = y.shape[-1] * self.bands
        taps = self.synthesis_phases.shape[-1]
        phases = nn.functional.conv1d(nn.functional.pad(y, (taps - 1, taps - 1)), self.synthesis_phases.to(y.dtype))
        out = self.interleave(phases)  # = conv_transpose1d(y, synthesis_filter, stride=bands), zero-padded
        start = 0 if self.causal else self.padding
        return out[..., start : start + length]
