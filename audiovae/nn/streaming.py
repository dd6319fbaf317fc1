"""Block-by-block inference for causal models (conv and frame families), every layer's state an explicit tensor.

`StreamingVAE(net, ends)` rebuilds a causal VAE (weight norm folded) from layers that take the previous
block's state and return the next one through one flat list, `states`: a layer reads `states[i]` and
writes `states[i]`. TorchScript keeps that list inside the module; ONNX takes and returns it explicitly.

Two kinds of state, for blocks whose length is a multiple of the hop (samples per latent frame):

    cached conv (kernel span K, stride s, left padding P = K - s):   state = the last P inputs
        state |  block  |      the convolution runs over [state | block] with no padding,
              |<-- P -->|      so the block's outputs are those of one offline pass

    overlap-add transposed conv (kernel K, stride s, overlap O = K - s):   state = the tail of O outputs
        block's full output  |====== n * s ======|== O ==|   <- the tail, added to the next block's head
        previous tail        |== O ==|

The stream reproduces the causal model's offline pass (`ConvVAE.forward`, which lines output up with input)
`latency_samples` later: the delay of the causal PQMF pair, taps - bands samples (0 without PQMF). A host
that buffers one block hears block + latency_samples samples of delay in all. What comes before the encoder
and after the decoder is the family's (`StreamEnds`): the PQMF pair here, the causal STFT pair of a frame
model in audiovae.nn.streaming_frames (latency n_fft - hop); the convolutions between are converted alike.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from audiovae.nn.blocks import (
    CausalConv1d,
    CausalConvTranspose1d,
    FrameRamp,
    RepeatConv,
    ResidualUnit,
    Snake,
)


class Stateless(nn.Module):
    """A layer without memory (activation, 1x1 conv), in the streaming signature."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        return self.module(x)


def conv_by_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, dilation: int
                    ) -> torch.Tensor:
    """F.conv1d(x, weight, bias, stride, 0, dilation) as one matrix product over a strided view of x's taps.

    TorchScript and eager PyTorch take this: on a host's short blocks at batch 1, torch's CPU convolution goes
    through its im2col path with a dozen small operations of its own (about 10% of a 44.1-kHz live block); the
    ONNX export keeps Conv, which ONNX Runtime runs well (the callers branch on torch.jit.is_tracing())."""
    out_channels, taps = weight.shape[0], weight.shape[-1]
    span = dilation * (taps - 1) + 1
    windows = x.unfold(-1, span, stride)  # (B, in, n, span), a view
    if dilation > 1:
        windows = windows[..., ::dilation]
    windows = windows.transpose(1, 2)  # (B, n, in, taps): the weight's (in, taps) order
    product = F.linear(windows.reshape(windows.shape[0], windows.shape[1], -1), weight.reshape(out_channels, -1),
                       bias)
    return product.transpose(1, 2)


def frozen_copies(weight: torch.Tensor, bias: torch.Tensor | None, out_channels: int
                  ) -> tuple[nn.Parameter, nn.Parameter]:
    """A layer's weight and bias (zeros when it has none) copied into parameters that take no gradient: what a
    streaming layer holds of the layer it replaces."""
    bias = torch.zeros(out_channels) if bias is None else bias.detach().clone()
    return (nn.Parameter(weight.detach().clone(), requires_grad=False), nn.Parameter(bias, requires_grad=False))


class CachedConv1d(nn.Module):
    """A causal convolution whose left padding is the end of the previous block's input.

    x: (batch, in_channels, n * stride) -> (batch, out_channels, n); state: (batch, in_channels, context).
    conv_by_product in TorchScript; in the ONNX export a Conv, or for a dilated one its taps' shifted inputs
    stacked on the channels and one 1x1 Conv (torch's CPU kernel for dilated convolutions, slow_conv_dilated,
    took 60% of a quickstart block's time when TorchScript ran it the same way).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, dilation: int, context: int,
                 index: int):
        super().__init__()
        out_channels, _, taps = weight.shape
        self.weight, self.bias = frozen_copies(weight, bias, out_channels)
        self.stride, self.dilation, self.context, self.index, self.taps = stride, dilation, context, index, taps
        self.stacked = dilation > 1 and stride == 1

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat([states[self.index], x], dim=-1)
        states[self.index] = x[..., -self.context :]
        if not torch.jit.is_tracing():
            return conv_by_product(x, self.weight, self.bias, self.stride, self.dilation)
        if not self.stacked:
            return F.conv1d(x, self.weight, self.bias, self.stride, 0, self.dilation)
        # tap i reads x[i * d : i * d + n], n = length - context; the ends are negative so shapes stay symbolic
        shifted = [x[..., i * self.dilation : i * self.dilation - self.context] for i in range(self.taps - 1)]
        shifted.append(x[..., self.context :])
        weight = self.weight.permute(0, 2, 1).reshape(self.weight.shape[0], -1, 1)  # tap-major, as the stack
        return F.conv1d(torch.cat(shifted, dim=1), weight, self.bias)


class PlainConv1d(nn.Module):
    """A convolution that needs no state (kernel = stride: a 1x1 convolution, or a causal one with no left
    padding), in the streaming signature: conv_by_product in TorchScript, Conv in the ONNX export."""

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        self.weight, self.bias = frozen_copies(conv.weight, conv.bias, conv.out_channels)
        self.stride = conv.stride[0]

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        if not torch.jit.is_tracing():
            return conv_by_product(x, self.weight, self.bias, self.stride, 1)
        return F.conv1d(x, self.weight, self.bias, self.stride)


class OverlapAddConvTranspose1d(nn.Module):
    """A causal transposed convolution whose overlapping tail is carried into the next block.

    x: (batch, in_channels, n) -> (batch, out_channels, n * stride); state: (batch, out_channels, overlap).
    The bias is added after the overlap-add, so the tail carries none and no sample gets it twice.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, overlap: int, index: int):
        super().__init__()
        self.weight, self.bias = frozen_copies(weight, bias, weight.shape[1])
        self.stride, self.overlap, self.index = stride, overlap, index

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        y = F.conv_transpose1d(x, self.weight, None, self.stride)  # (B, C, n * stride + overlap)
        y = torch.cat([y[..., : self.overlap] + states[self.index], y[..., self.overlap :]], dim=-1)
        states[self.index] = y[..., -self.overlap :]
        return y[..., : -self.overlap] + self.bias.unsqueeze(-1)


class CachedRamp(nn.Module):
    """A FrameRamp over blocks: its state is the previous block's last step (channels, 1)."""

    def __init__(self, ramp: FrameRamp, index: int):
        super().__init__()
        self.ramp, self.index = copy.deepcopy(ramp), index

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        previous = torch.cat([states[self.index], x[..., :-1]], -1)
        states[self.index] = x[..., -1:]
        return self.ramp.ramp(x, previous)


class StreamingSequential(nn.Module):
    """Streaming layers applied in order."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, states)
        return x


class StreamingResidual(nn.Module):
    """x + block(x): both branches see the same block, so the sum needs no delay line."""

    def __init__(self, block: StreamingSequential):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        return x + self.block(x, states)


def _convert(module: nn.Module, shapes: list[list[int]]) -> nn.Module:
    """The streaming twin of a causal module; appends each new state's (channels, length) to `shapes`."""
    if isinstance(module, CausalConv1d):
        span = module.dilation[0] * (module.kernel_size[0] - 1) + 1
        context = span - module.stride[0]
        assert context == module.left_padding, "a causal conv's left padding must be its span less its stride"
        if context == 0:
            return PlainConv1d(module)
        shapes.append([module.in_channels, context])
        return CachedConv1d(module.weight, module.bias, module.stride[0], module.dilation[0], context, len(shapes) - 1)
    if isinstance(module, CausalConvTranspose1d):
        overlap = module.kernel_size[0] - module.stride[0]
        shapes.append([module.out_channels, overlap])
        return OverlapAddConvTranspose1d(module.weight, module.bias, module.stride[0], overlap, len(shapes) - 1)
    if isinstance(module, nn.Conv1d) and module.kernel_size[0] == 1 and module.padding[0] == 0:
        return PlainConv1d(module)
    if isinstance(module, RepeatConv):  # its kernel-3 convolution caches two input steps
        weight, bias = module.phase_weights()
        shapes.append([weight.shape[1], 2])
        return StreamingSequential([CachedConv1d(weight, bias, 1, 1, 2, len(shapes) - 1),
                                    Stateless(copy.deepcopy(module.interleave))])
    if isinstance(module, FrameRamp):
        shapes.append([module.channels, 1])
        return CachedRamp(module, len(shapes) - 1)
    if isinstance(module, Snake | nn.LeakyReLU):
        return Stateless(copy.deepcopy(module))
    if isinstance(module, ResidualUnit):
        return StreamingResidual(_convert(module.block, shapes))
    if isinstance(module, nn.Sequential):
        return StreamingSequential([_convert(child, shapes) for child in module])
    raise ValueError(f"{type(module).__name__} cannot stream (is the model causal?)")


def folded_copy(net: nn.Module) -> nn.Module:
    """A copy of `net` whose weight-norm parametrizations are replaced by the plain weights they compute.

    torch's remove_parametrizations edits the class that a deep copy shares with the original, so the
    original would lose its weights; here only the copy changes.
    """
    from torch.nn.utils import parametrize

    net = copy.deepcopy(net)
    for module in net.modules():
        if parametrize.is_parametrized(module, "weight"):
            weight = module.weight.detach().clone()
            module.__class__ = module.__class__.__bases__[0]  # the class before weight_norm
            del module.parametrizations
            module.weight = nn.Parameter(weight)
    return net


class StreamEnds:
    """What a StreamingVAE puts before its encoder and after its decoder, in the streaming signature.

    analysis(shapes) and synthesis(shapes) build the two modules, appending their states' (channels, length) to
    `shapes` as the layers above do; samples_per_step: audio samples per step of the encoder's input;
    latency_samples: how far the stream's output trails the model's offline output. PqmfEnds are the conv
    family's; audiovae.nn.streaming_frames.SpectralEnds the frame family's STFT pair.
    """

    samples_per_step: int = 1
    latency_samples: int = 0

    def analysis(self, shapes: list[list[int]]) -> nn.Module:
        raise NotImplementedError

    def synthesis(self, shapes: list[list[int]]) -> nn.Module:
        raise NotImplementedError


class PqmfEnds(StreamEnds):
    """A conv model's ends: its PQMF analysis (or nothing) in front, its PQMF synthesis (or nothing) and tanh after."""

    def __init__(self, pqmf: nn.Module | None):
        self.pqmf = pqmf
        self.latency_samples = pqmf.delay if pqmf is not None else 0

    def analysis(self, shapes: list[list[int]]) -> nn.Module:
        return Stateless(nn.Identity()) if self.pqmf is None else _pqmf_analysis(self.pqmf, shapes)

    def synthesis(self, shapes: list[list[int]]) -> nn.Module:
        bands = [] if self.pqmf is None else [_pqmf_synthesis(self.pqmf, shapes)]
        return StreamingSequential([*bands, Stateless(nn.Tanh())])


class StreamingVAE(nn.Module):
    """A causal VAE (weights copied, weight norm folded) as streaming layers. Blocks are (batch, channels, time), time a multiple of `hop`.

    encode(x (B, 1, n * hop), states) -> posterior mean (B, latent_size, n)
    decode(z (B, latent_size, n), states) -> (B, 1, n * hop), `latency_samples` behind the offline decode
    `init_state(batch)` gives the zero state: encoder layers' states first (`encode_states` of them), then
    the decoder's; each method reads and replaces only its own part of the list. `ends` puts the family's
    analysis and synthesis around the network (default: a conv model's, PqmfEnds(net.pqmf)).
    """

    def __init__(self, net: nn.Module, ends: StreamEnds | None = None):
        super().__init__()
        if not any(isinstance(m, CausalConv1d) for m in net.modules()):
            raise ValueError("only a causal model (model.causal: true) can stream")
        ends = PqmfEnds(net.pqmf) if ends is None else ends
        shapes: list[list[int]] = []
        self.analysis = ends.analysis(shapes)
        self.encoder = _convert(net.encoder, shapes)
        self.encode_states = len(shapes)
        self.decoder = _convert(net.decoder, shapes)
        self.synthesis = ends.synthesis(shapes)
        self.state_shapes = shapes
        self.hop, self.latent_size = net.hop * ends.samples_per_step, net.latent_size
        self.latency_samples = ends.latency_samples
        # the weights' dtype, which the state takes (float64 models stream in float64)
        self.register_buffer("dtype_probe", torch.zeros(0, dtype=next(net.parameters()).dtype), persistent=False)

    def init_state(self, batch: int) -> list[torch.Tensor]:
        """Zero state for `batch` streams: one (batch, channels, length) tensor per stateful layer."""
        return [torch.zeros(batch, shape[0], shape[1], dtype=self.dtype_probe.dtype) for shape in self.state_shapes]

    def encode(self, x: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        x = self.analysis(x, states)  # (B, encoder input channels, n * hop / samples_per_step)
        return self.encoder(x, states)[:, : self.latent_size]

    def decode(self, z: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        return self.synthesis(self.decoder(z, states), states)

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        return self.decode(self.encode(x, states), states)


def _pqmf_analysis(pqmf: nn.Module, shapes: list[list[int]]) -> CachedConv1d:
    context = pqmf.taps - pqmf.bands
    shapes.append([1, context])
    return CachedConv1d(pqmf.analysis_filter, None, pqmf.bands, 1, context, len(shapes) - 1)


def _pqmf_synthesis(pqmf: nn.Module, shapes: list[list[int]]) -> OverlapAddConvTranspose1d:
    overlap = pqmf.taps - pqmf.bands
    shapes.append([1, overlap])
    return OverlapAddConvTranspose1d(pqmf.synthesis_filter, None, pqmf.bands, overlap, len(shapes) - 1)


def stream_blocks(model: StreamingVAE, x: torch.Tensor, block: int) -> torch.Tensor:
    """Run x (batch, 1, time) through `model` in blocks of `block` samples from a zero state.

    The input is zero-padded to whole blocks plus `latency_samples`, so the result (batch, 1, time) is the
    offline output: stream[latency:][:time].
    """
    if block % model.hop:
        raise ValueError(f"block {block} is not a multiple of the hop {model.hop}")
    length = x.shape[-1]
    total = -(-(length + model.latency_samples) // block) * block
    x = F.pad(x, (0, total - length))
    states = model.init_state(x.shape[0])
    with torch.no_grad():
        out = torch.cat([model(x[..., i : i + block], states) for i in range(0, total, block)], dim=-1)
    return out[..., model.latency_samples : model.latency_samples + length]
