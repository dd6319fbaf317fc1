"""The real DFT of windowed frames and its one-sided inverse as two small matrix products each (Cooley-Tukey, one
split), for the live frame model's ends: matrix products only, so ONNX (which has no inverse STFT) runs them as
TorchScript does, and about 2 x sqrt(n_fft) multiplications per point where the dense DFT basis takes n_fft.

n_fft = a x b (a the largest divisor at most sqrt(n_fft): 32 x 32 at 1024, 16 x 32 at 512). Sample n = b n1 + n2
and bin k = k1 + a k2, so that e^(-2 pi i n k / n_fft) = e^(-2 pi i n1 k1 / a) e^(-2 pi i n2 k1 / n_fft)
e^(-2 pi i n2 k2 / b):

    frame (a x b: n1, n2) --(a-point DFTs down n1)--> (k1, n2) --(twiddle e^(-2 pi i n2 k1 / n_fft))-->
    --(b-point DFTs along n2, only k2 <= b / 2)--> (k1, k2) --> bins k = k1 + a k2 <= n_fft / 2

and the inverse the same way back. The dense basis (2 x 513 x 1024 floats at n_fft 1024, 4 MB) is read whole for
every frame of a block; these matrices are a few kilobytes.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def split_size(n_fft: int) -> int:
    """a: the largest divisor of n_fft that is at most its square root (1 for a prime: one dense b-point DFT)."""
    return max(d for d in range(1, math.isqrt(n_fft) + 1) if n_fft % d == 0)


def _rotations(rows: int, columns: int, n: int, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sign x sin of 2 pi r c / n for r < rows, c < columns, in float64 (r c taken modulo n, exactly)."""
    product = torch.remainder(torch.arange(rows)[:, None] * torch.arange(columns)[None, :], n).double()
    angle = 2 * math.pi * product / n
    return torch.cos(angle), sign * torch.sin(angle)


def _complex_matrix(real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
    """[zr | zi] @ this = [zr wr - zi wi | zr wi + zi wr]: a complex right product as one real one."""
    return torch.cat([torch.cat([real, imag], 1), torch.cat([-imag, real], 1)], 0)


class FactoredRealDFT(nn.Module):
    """frames (batch, n, n_fft), windowed -> real and imaginary parts (batch, n, 2 * bins), bins = n_fft // 2 + 1."""

    def __init__(self, n_fft: int):
        super().__init__()
        a = split_size(n_fft)
        b = n_fft // a
        self.n_fft, self.a, self.b, self.bins, self.columns = n_fft, a, b, n_fft // 2 + 1, b // 2 + 1
        cos_a, sin_a = _rotations(a, a, a, -1.0)  # (k1, n1)
        self.register_buffer("first", torch.cat([cos_a, sin_a], 0).float())  # (2a, a): real rows, then imaginary
        cos_t, sin_t = _rotations(a, b, n_fft, -1.0)  # (k1, n2)
        self.register_buffer("twiddle_real", cos_t.float())
        self.register_buffer("twiddle_imag", sin_t.float())
        cos_b, sin_b = _rotations(b, self.columns, b, -1.0)  # (n2, k2), k2 <= b / 2 only
        self.register_buffer("second", _complex_matrix(cos_b, sin_b).float())  # (2b, 2 columns)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        batch, a, columns = frames.shape[0], self.a, self.columns
        x = frames.reshape(batch, -1, a, self.b)  # (B, n, n1, n2)
        real, imag = torch.matmul(self.first, x).split(a, -2)  # (B, n, k1, n2) each
        turned = torch.cat([real * self.twiddle_real - imag * self.twiddle_imag,
                            real * self.twiddle_imag + imag * self.twiddle_real], -1)  # (B, n, k1, 2b)
        z = torch.matmul(turned, self.second)  # (B, n, k1, 2 columns): k2 real, then imaginary
        z = z.reshape(batch, -1, a, 2, columns).permute(0, 1, 3, 4, 2)  # (B, n, 2, k2, k1): bin k = k1 + a k2
        return z.reshape(batch, -1, 2, columns * a)[..., : self.bins].reshape(batch, -1, 2 * self.bins)


class FactoredInverseDFT(nn.Module):
    """Real and imaginary parts (batch, n, 2 * bins) -> the real frames whose one-sided spectra they are
    (batch, n, n_fft): irfft's result, the same sums as the synthesis basis of audiovae.nn.spectral.dft_bases."""

    def __init__(self, n_fft: int):
        super().__init__()
        a = split_size(n_fft)
        b = n_fft // a
        self.n_fft, self.a, self.b, self.bins, self.columns = n_fft, a, b, n_fft // 2 + 1, b // 2 + 1
        weight = torch.full((n_fft // 2 + 1,), 2.0 / n_fft, dtype=torch.float64)  # one-sided: bins but DC and
        weight[0] = 1.0 / n_fft  # Nyquist count twice
        if n_fft % 2 == 0:
            weight[-1] = 1.0 / n_fft
        self.register_buffer("weight", torch.cat([weight, weight]).float())
        cos_b, sin_b = _rotations(self.columns, b, b, 1.0)  # (k2, n2)
        self.register_buffer("first", _complex_matrix(cos_b, sin_b).float())  # (2 columns, 2b)
        cos_t, sin_t = _rotations(a, b, n_fft, 1.0)  # (k1, n2)
        self.register_buffer("twiddle_real", cos_t.float())
        self.register_buffer("twiddle_imag", sin_t.float())
        cos_a, sin_a = _rotations(a, a, a, 1.0)  # (n1, k1)
        self.register_buffer("second", torch.cat([cos_a, -sin_a], 1).float())  # (a, 2a): the real part only

    def forward(self, spectrum: torch.Tensor) -> torch.Tensor:
        batch, a, b, columns = spectrum.shape[0], self.a, self.b, self.columns
        parts = (spectrum * self.weight).reshape(batch, -1, 2, self.bins)
        parts = torch.nn.functional.pad(parts, (0, columns * a - self.bins))  # bins above n_fft / 2 are zero
        c = parts.reshape(batch, -1, 2, columns, a).permute(0, 1, 4, 2, 3).reshape(batch, -1, a, 2 * columns)
        real, imag = torch.matmul(c, self.first).split(b, -1)  # (B, n, k1, n2) each
        turned = torch.cat([real * self.twiddle_real - imag * self.twiddle_imag,
                            real * self.twiddle_imag + imag * self.twiddle_real], -2)  # (B, n, 2a, n2)
        return torch.matmul(self.second, turned).reshape(batch, -1, self.n_fft)  # (B, n, n1 x n2)
