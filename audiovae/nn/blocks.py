"""Convolutional blocks, composed upward: WNConv1d -> ResidualUnit -> EncoderBlock/DecoderBlock."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class Snake(nn.Module):
    """x + sin^2(alpha x) / alpha with a learned alpha per channel: periodic, good for audio.

    x: (batch, channels, time).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha
        return x + torch.sin(alpha * x).square() / (alpha + 1e-9)


def activation(name: str, channels: int) -> nn.Module:
    """The activation named in the recipe: 'snake' or 'leaky_relu'."""
    if name == "snake":
        return Snake(channels)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    raise ValueError(f"unknown activation {name!r}")


class CausalConv1d(nn.Conv1d):
    """Conv1d that pads `left_padding` zeros on the left only, so output t never sees input after t.

    With kernel 2s and stride s the left padding is s: frame j reads inputs [(j-1)s, (j+1)s), its own
    block and the one before, and the output has L / s frames. Same parameters as nn.Conv1d.
    """

    def __init__(self, *args, left_padding: int = 0, **kwargs):
        super().__init__(*args, padding=0, **kwargs)
        self.left_padding = left_padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(nn.functional.pad(x, (self.left_padding, 0)))


class CausalConvTranspose1d(nn.ConvTranspose1d):
    """ConvTranspose1d with kernel 2s, stride s, no padding, its last s samples dropped: L -> L * s.

    Output block j (samples [js, (j+1)s)) reads input frames j and j - 1 only:

        frame j-1  |== taps s..2s-1 ==|
        frame j    |== taps 0..s-1  ==|== taps s..2s-1 ==|  <- this half is the tail that the next block adds
                   ^ js               ^ (j+1)s
    """

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        return super().forward(x)[..., : x.shape[-1] * self.stride[0]]


def wn_conv1d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
              padding: int | None = None, causal: bool = False) -> nn.Module:
    """Weight-normalized Conv1d; default padding keeps the length ('same') for odd kernels at stride 1.

    causal: pad dilation * (kernel_size - 1) on the left only (kernel_size - stride for strided convs).
    """
    if causal:
        left = dilation * (kernel_size - 1) - (stride - 1) if stride > 1 else dilation * (kernel_size - 1)
        return weight_norm(CausalConv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation,
                                        left_padding=left))
    if padding is None:
        padding = dilation * (kernel_size - 1) // 2
    return weight_norm(nn.Conv1d(in_channels, out_channels, kernel_size, stride, padding, dilation))


def wn_conv_transpose1d(in_channels: int, out_channels: int, stride: int, causal: bool = False) -> nn.Module:
    """Weight-normalized ConvTranspose1d that multiplies the length by exactly `stride`.

    Kernel 2*stride; padding ceil(stride/2) and output_padding stride % 2 give
    L_out = (L - 1) * stride - 2 * ceil(stride / 2) + 2 * stride + stride % 2 = L * stride.
    causal: no padding, the last `stride` samples dropped (see CausalConvTranspose1d).
    """
    if causal:
        return weight_norm(CausalConvTranspose1d(in_channels, out_channels, 2 * stride, stride))
    padding = (stride + 1) // 2
    return weight_norm(nn.ConvTranspose1d(in_channels, out_channels, 2 * stride, stride, padding,
                                          output_padding=stride % 2))


def strided_conv1d(in_channels: int, out_channels: int, stride: int, causal: bool = False) -> nn.Module:
    """Weight-normalized Conv1d that divides a length that is a multiple of `stride` exactly by `stride`."""
    return wn_conv1d(in_channels, out_channels, 2 * stride, stride=stride, padding=(stride + 1) // 2, causal=causal)


class ResidualUnit(nn.Module):
    """act -> dilated conv -> act -> 1x1 conv, added to the input. Keeps (batch, channels, time)."""

    def __init__(self, channels: int, dilation: int, kernel_size: int, act: str, causal: bool = False):
        super().__init__()
        self.block = nn.Sequential(
            activation(act, channels),
            wn_conv1d(channels, channels, kernel_size, dilation=dilation, causal=causal),
            activation(act, channels),
            wn_conv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def residual_stack(channels: int, layers: int, kernel_size: int, act: str, causal: bool = False) -> list[nn.Module]:
    """`layers` residual units with dilations 1, 3, 9, ..."""
    return [ResidualUnit(channels, 3**i, kernel_size, act, causal) for i in range(layers)]


class EncoderBlock(nn.Sequential):
    """Residual units at the input rate, then a strided conv: (B, C_in, T) -> (B, C_out, T / stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, layers: int, kernel_size: int, act: str,
                 causal: bool = False):
        super().__init__(
            *residual_stack(in_channels, layers, kernel_size, act, causal),
            activation(act, in_channels),
            strided_conv1d(in_channels, out_channels, stride, causal) if stride > 1
            else wn_conv1d(in_channels, out_channels, 1),
        )


UPSAMPLERS = ("transposed", "nearest", "ramp")


class FrameRamp(nn.Module):
    """Upsample by `stride` with a first-order hold: sub-step j of step t is
    ((j + 1) x[t] + (stride - 1 - j) x[t - 1]) / stride, with x[-1] = 0. A straight line from each step to the
    next, reaching x[t] at its last sub-step: no look-ahead (it streams with one step of state), constant
    input stays constant, and a jump between steps becomes a ramp instead of an edge."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.channels, self.stride = channels, stride
        self.register_buffer("rise", (torch.arange(stride) + 1.0) / stride, persistent=False)

    def ramp(self, x: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """x, previous: (B, C, T) -> (B, C, T * stride)."""
        return (previous[..., None] + (x - previous)[..., None] * self.rise).flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ramp(x, nn.functional.pad(x, (1, 0))[..., :-1])


class Interleave(nn.Module):
    """(B, C * stride, T) with channel c * stride + p holding phase p -> (B, C, T * stride)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        batch, channels, steps = y.shape
        y = y.reshape(batch, channels // self.stride, self.stride, steps)
        return y.transpose(2, 3).reshape(batch, -1, steps * self.stride)


def transposed_as_phases(weight: torch.Tensor, stride: int) -> torch.Tensor:
    """conv_transpose1d's weight (in, out, K) -> a conv1d weight (out * stride, in, J), J = ceil(K / stride):
    output phase p of step n is a plain convolution of the input with taps p, p + stride, ... reversed, so
    Interleave(stride)(conv1d(pad(x, (J - 1, J - 1)), it)) equals conv_transpose1d(x, weight, stride=stride),
    zero-padded to a whole number of steps. PyTorch computes a strided transposed convolution with few output
    channels on a slow path on the CPU (PQMF synthesis: 4-5x slower than this form)."""
    in_channels, out_channels, kernel = weight.shape
    taps = -(-kernel // stride)
    phased = nn.functional.pad(weight, (0, taps * stride - kernel)).reshape(in_channels, out_channels, taps, stride)
    return phased.flip(2).permute(1, 3, 0, 2).reshape(out_channels * stride, in_channels, taps)


class RepeatConv(nn.Module):
    """Repeat each step `stride` times, then convolve (kernel 2 * stride + 1; 'same', or causal), computed at
    the input rate. Output phase p of step t reads the repeated signal over three input steps (t - 1..t + 1,
    causal: t - 2..t), so the convolution is one kernel-3 convolution with stride x the output channels
    (each phase's taps summed per input step), interleaved: a third of the operations of convolving the
    repeated signal, the same numbers.

        repeated   |x0 x0 x0 x0|x1 x1 x1 x1|x2 ...      stride 4, kernel 9 centred on a phase of x1:
        kernel       [k0 ...        ...         k8]     taps k0-k2 land on x0, k3-k6 on x1, k7-k8 on x2
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, causal: bool = False):
        super().__init__()
        kernel = 2 * stride + 1
        self.conv = wn_conv1d(in_channels, out_channels, kernel, causal=causal)  # holds the weights only
        self.stride, self.causal, self.interleave = stride, causal, Interleave(stride)
        shift, first = (2 * stride, -2) if causal else (stride, -1)
        select = torch.zeros(stride, 3, kernel)  # select[p, j, k] = 1: tap k of phase p reads step t + first + j
        for phase in range(stride):
            for k in range(kernel):
                select[phase, (phase + k - shift) // stride - first, k] = 1.0
        self.register_buffer("select", select, persistent=False)

    def phase_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kernel-3 convolution's weight (out * stride, in, 3) and bias (out * stride,)."""
        weight = self.conv.weight  # (out, in, 2 * stride + 1)
        phased = torch.einsum("pjk,oik->opij", self.select, weight)  # (out, stride, in, 3)
        bias = self.conv.bias
        assert bias is not None  # wn_conv1d always has one (and TorchScript needs to know)
        return phased.reshape(-1, weight.shape[1], 3), bias.repeat_interleave(self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.phase_weights()
        padded = nn.functional.pad(x, (2, 0) if self.causal else (1, 1))
        return self.interleave(nn.functional.conv1d(padded, weight, bias))


def upsampler(in_channels: int, out_channels: int, stride: int, kind: str, causal: bool = False) -> nn.Module:
    """Multiply the length by `stride`. transposed: a transposed conv (kernel 2 * stride), whose output phases
    use different taps, so constant input comes out stride-periodic; nearest: repeat each step `stride` times,
    then a conv (kernel 2 * stride + 1) that sees the same taps at every phase, so constant stays constant;
    ramp: the same with a straight line from step to step instead of a repeat (FrameRamp)."""
    if stride == 1:
        return wn_conv1d(in_channels, out_channels, 1)
    if kind == "transposed":
        return wn_conv_transpose1d(in_channels, out_channels, stride, causal)
    if kind == "nearest":
        return RepeatConv(in_channels, out_channels, stride, causal)
    return nn.Sequential(FrameRamp(in_channels, stride), wn_conv1d(in_channels, out_channels, 2 * stride + 1,
                                                                   causal=causal))


class DecoderBlock(nn.Sequential):
    """An upsampler, then residual units: (B, C_in, T) -> (B, C_out, T * stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, layers: int, kernel_size: int, act: str,
                 causal: bool = False, upsample: str = "transposed"):
        super().__init__(
            activation(act, in_channels),
            upsampler(in_channels, out_channels, stride, upsample, causal),
            *residual_stack(out_channels, layers, kernel_size, act, causal),
        )


class LabelEmbedding(nn.Module):
    """Learned per-label biases for the first layer of an encoder and of a decoder (a conditional VAE): the same as
    a one-hot label concatenated to their inputs as constant channels. label: (batch,) int64 -> (batch, C, 1)."""

    def __init__(self, labels: int, encoder_channels: int, decoder_channels: int):
        super().__init__()
        self.encoder = nn.Embedding(labels, encoder_channels)
        self.decoder = nn.Embedding(labels, decoder_channels)

    @property
    def labels(self) -> int:
        return self.encoder.num_embeddings


def with_first_bias(stack: nn.Sequential, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """`stack(x)` with `bias` (batch, channels, 1) added to the output of its first layer."""
    layers = iter(stack)
    x = next(layers)(x) + bias
    for layer in layers:
        x = layer(x)
    return x
