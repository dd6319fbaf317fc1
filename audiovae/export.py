"""Export a conv model for hosts without audiovae: TorchScript (nn~ methods), ONNX and a JSON card.

    OUT_DIR/model.ts                       torch.jit.load(...).encode / decode / forward / reset
    OUT_DIR/encode.onnx, decode.onnx, forward.onnx
    OUT_DIR/card.json                      what a host needs: rate, hop, latency, state layout

A causal model (model.causal: true) exports its streaming form: blocks of any multiple of the hop, state
kept between calls (TorchScript: inside the module, `reset()` zeroes it; ONNX: `state_i` inputs and
`state_i_out` outputs, zeros to start). Other conv models export whole-signal modules that do not stream.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audiovae.errors import UserError
from audiovae.nn.streaming import StreamingVAE, folded_copy

FORMAT = "audiovae-export"
FORMAT_VERSION = 1
OPSET = 17
METHODS = ("encode", "decode", "forward")


class StatefulStreaming(nn.Module):
    """TorchScript face of a StreamingVAE: the state lives in the module between calls (one per batch row).

    encode (B, 1, n * hop) -> (B, latent_size, n); decode the reverse; forward both. A new batch size
    starts from a zero state; reset() zeroes it.
    """

    def __init__(self, model: StreamingVAE):
        super().__init__()
        self.model = model
        self.hop, self.latent_size, self.latency_samples = model.hop, model.latent_size, model.latency_samples
        self.state: list[torch.Tensor] = model.init_state(1)
        _register_params(self, model.latent_size, model.hop)

    def _fit(self, x: torch.Tensor, ratio: int):
        if x.shape[-1] % ratio != 0:
            raise ValueError("the block length must be a multiple of the method's ratio (see <method>_params)")
        if self.state[0].shape[0] != x.shape[0]:
            self.state = self.model.init_state(x.shape[0])

    @torch.jit.export
    def reset(self):
        for i in range(len(self.state)):
            self.state[i] = torch.zeros_like(self.state[i])

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._fit(x, self.hop)
        return self.model.encode(x, self.state)

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self._fit(z, 1)
        return self.model.decode(z, self.state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._fit(x, self.hop)
        return self.model(x, self.state)

    @torch.jit.export
    def get_methods(self) -> list[str]:
        return ["encode", "decode", "forward"]


class WholeSignal(nn.Module):
    """TorchScript face of a non-causal ConvVAE: each call is one offline pass, nothing carried over.

    encode pads to a multiple of the hop; forward returns the input's length.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        net = folded_copy(net).eval()
        self.encoder, self.decoder = net.encoder, net.decoder
        self.pqmf = net.pqmf if net.pqmf is not None else Identity2()
        self.hop, self.latent_size, self.latency_samples = net.hop, net.latent_size, 0
        _register_params(self, net.latent_size, net.hop)

    def encode_padded(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.pqmf.analysis(x))[:, : self.latent_size]

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_padded(F.pad(x, (0, (self.hop - x.shape[-1] % self.hop) % self.hop)))

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.pqmf.synthesis(self.decoder(z)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))[..., : x.shape[-1]]

    @torch.jit.export
    def reset(self):
        pass

    @torch.jit.export
    def get_methods(self) -> list[str]:
        return ["encode", "decode", "forward"]


class Identity2(nn.Module):
    """PQMF stand-in for models without sub-bands."""

    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def synthesis(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _register_params(module: nn.Module, latent_size: int, hop: int) -> None:
    """nn~'s method signatures: `<method>_params` = [in_channels, in_ratio, out_channels, out_ratio]."""
    signatures = {"encode": [1, 1, latent_size, hop], "decode": [latent_size, hop, 1, 1], "forward": [1, 1, 1, 1]}
    for method, params in signatures.items():
        module.register_buffer(f"{method}_params", torch.tensor(params, dtype=torch.int32))


class _OnnxMethod(nn.Module):
    """One method with the state as explicit arguments: (input, *states) -> (output, *new_states)."""

    def __init__(self, model: nn.Module, method: str, first: int, count: int, total: int):
        super().__init__()
        self.model, self.method, self.first, self.count, self.total = model, method, first, count, total

    def forward(self, x: torch.Tensor, *states: torch.Tensor):
        if isinstance(self.model, WholeSignal):  # blocks are multiples of the hop: no padding in the graph
            run = {"encode": self.model.encode_padded, "decode": self.model.decode,
                   "forward": lambda t: self.model.decode(self.model.encode_padded(t))}[self.method]
            return run(x)
        full = [x.new_zeros(0)] * self.total
        full[self.first : self.first + self.count] = list(states)
        y = getattr(self.model, self.method)(x, full)
        return (y, *full[self.first : self.first + self.count])


def state_layout(model: nn.Module) -> dict[str, list[list[int]]]:
    """For each method, the (channels, length) of each state tensor it takes and returns (batch first)."""
    if not isinstance(model, StreamingVAE):
        return {method: [] for method in METHODS}
    shapes, split = model.state_shapes, model.encode_states
    return {"encode": shapes[:split], "decode": shapes[split:], "forward": shapes}


def _onnx_export(model: nn.Module, method: str, path: Path) -> None:
    layout = state_layout(model)[method]
    total = len(model.state_shapes) if isinstance(model, StreamingVAE) else 0
    first = model.encode_states if method == "decode" and total else 0
    wrapper = _OnnxMethod(model, method, first, len(layout), total).eval()
    channels = model.latent_size if method == "decode" else 1
    frames = 2 if method == "decode" else 2 * model.hop
    args = (torch.zeros(1, channels, frames), *[torch.zeros(1, c, n) for c, n in layout])
    inputs = ["z" if method == "decode" else "x"] + [f"state_{i}" for i in range(len(layout))]
    outputs = ["z" if method == "encode" else "y"] + [f"state_{i}_out" for i in range(len(layout))]
    axes = {name: {0: "batch"} for name in inputs[1:] + outputs[1:]}
    axes.update({inputs[0]: {0: "batch", 2: "time"}, outputs[0]: {0: "batch", 2: "time"}})
    with torch.no_grad():
        torch.onnx.export(wrapper, args, str(path), dynamo=False, opset_version=OPSET, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes)


def scriptable(net: nn.Module) -> nn.Module:
    """The export form of a conv model: StatefulStreaming if causal, else WholeSignal (weights folded)."""
    from audiovae.models.conv import ConvVAE
    from audiovae.nn.istft import ISTFTDecoder

    if not isinstance(net, ConvVAE) or isinstance(net.decoder, ISTFTDecoder):
        raise UserError("export covers the conv family with its conv decoder only (model.decoder: conv)")
    module = StatefulStreaming(StreamingVAE(net)) if _is_causal(net) else WholeSignal(net)
    return module.eval().requires_grad_(False)


def _is_causal(net: nn.Module) -> bool:
    from audiovae.nn.blocks import CausalConv1d

    return any(isinstance(m, CausalConv1d) for m in net.modules())


@dataclass
class ExportResult:
    """What `export_net` wrote, and ONNX Runtime's largest difference from PyTorch on a test signal."""

    out_dir: Path
    card: dict[str, Any]
    onnx_max_error: float | None


def export_net(net: nn.Module, recipe, out_dir: str | Path, checkpoint_sha256: str | None = None,
               force: bool = False) -> ExportResult:
    """Write model.ts, <method>.onnx and card.json for a conv model `net` built from `recipe`."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None:  # torch's exporter needs it; fail before any work
        raise UserError("export writes ONNX models too, which needs the onnx package: pip install 'audiovae[export]'")
    out_dir = Path(out_dir)
    names = ["model.ts", "card.json"] + [f"{m}.onnx" for m in METHODS]
    taken = [out_dir / n for n in names if (out_dir / n).exists()]
    if taken and not force:
        raise UserError(f"{taken[0]}: already exists; pass --force to overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    module = scriptable(net.cpu().eval())
    inner = module.model if isinstance(module, StatefulStreaming) else module
    with warnings.catch_warnings():  # the tracer's notes on shapes it records as constants: none matter here
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module), str(out_dir / "model.ts"))
        for method in METHODS:
            _onnx_export(inner, method, out_dir / f"{method}.onnx")
    error = check_onnx(out_dir, module)
    sample_rate, hop, latency = recipe.data.sample_rate, module.hop, module.latency_samples
    streams = isinstance(module, StatefulStreaming)
    card = {
        "format": FORMAT, "version": FORMAT_VERSION, "sample_rate": sample_rate, "frame_samples": hop,
        "block_sizes": {"multiple_of": hop, "examples": [hop * k for k in range(1, 4096 // hop + 1)] or [hop]},
        "latency_samples": latency, "latency_ms": round(1000 * latency / sample_rate, 3),
        "latency_note": "delay of the output behind the input, on top of one block of buffering",
        "latent_size": module.latent_size, "streams": streams,
        "files": {"torchscript": "model.ts", "onnx": {m: f"{m}.onnx" for m in METHODS}},
        "onnx_state": {m: [{"input": f"state_{i}", "output": f"state_{i}_out", "shape": ["batch", c, n]}
                           for i, (c, n) in enumerate(shapes)] for m, shapes in state_layout(inner).items()},
        "opset": OPSET, "recipe": recipe.to_dict(), "checkpoint_sha256": checkpoint_sha256,
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return ExportResult(out_dir, card, error)


def export_model(model, out_dir: str | Path, force: bool = False) -> ExportResult:
    """Export a trained `audiovae.synth.Model` (uses its .net, .recipe and .checkpoint_sha256)."""
    return export_net(model.net, model.recipe, out_dir, model.checkpoint_sha256, force)


def check_onnx(out_dir: Path, module: nn.Module, blocks: int = 3) -> float | None:
    """Largest |ONNX Runtime - PyTorch| of forward over `blocks` blocks of 2 hops; None without onnxruntime."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    generator = torch.Generator().manual_seed(0)
    x = 0.5 * torch.randn(1, 1, blocks * 2 * module.hop, generator=generator)
    module.reset()
    with torch.no_grad():
        expected = torch.cat([module(x[..., i : i + 2 * module.hop])
                              for i in range(0, x.shape[-1], 2 * module.hop)], -1)
    module.reset()
    runner = OnnxRunner(out_dir / "forward.onnx")
    got = np.concatenate([runner(x[..., i : i + 2 * module.hop].numpy())
                          for i in range(0, x.shape[-1], 2 * module.hop)], -1)
    return float(np.max(np.abs(got - expected.numpy())))


class OnnxRunner:
    """An ONNX method with its state kept between calls, like the TorchScript module: block -> output."""

    def __init__(self, path: str | Path, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.shapes = [i.shape for i in self.session.get_inputs()[1:]]
        self.state: list[np.ndarray] = []

    def reset(self) -> None:
        self.state = []

    def __call__(self, block: np.ndarray) -> np.ndarray:
        if not self.state or self.state[0].shape[0] != block.shape[0]:
            self.state = [np.zeros((block.shape[0], c, n), np.float32) for _, c, n in self.shapes]
        feed = dict(zip(self.inputs, [np.ascontiguousarray(block, np.float32), *self.state], strict=True))
        output, *self.state = self.session.run(None, feed)
        return output


# ---- running an export block by block, as a live host would ---------------------------------------------------

def read_card(folder: str | Path) -> dict[str, Any]:
    """The card of an export folder, checked: this format, a version this audiovae reads."""
    path = Path(folder) / "card.json"
    if not path.is_file():
        raise UserError(f"{folder}: no card.json (is it a folder written by `audiovae export`? export again)")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: unreadable card ({error}); export again") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise UserError(f"{path}: not an audiovae export card; export again with `audiovae export`")
    if not isinstance(card.get("version"), int) or card["version"] > FORMAT_VERSION:
        raise UserError(f"{path}: written by a newer audiovae (format version {card.get('version')}, this one "
                        f"reads {FORMAT_VERSION}); upgrade audiovae or export again")
    return card
