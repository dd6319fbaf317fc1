"""Export a trained model for hosts without audiovae: TorchScript (nn~ methods), ONNX and a JSON card.

    OUT_DIR/model.ts                       torch.jit.load(...).encode / decode / forward / reset (/ prior)
    OUT_DIR/encode.onnx, decode.onnx, forward.onnx (, prior.onnx)
    OUT_DIR/card.json                      what a host needs: rate, hop, latency, state layout

Each family builds its face (`Family.face`, audiovae.nn.host_faces). A causal conv model (model.causal: true)
exports its streaming form: blocks of any multiple of the hop, state kept between calls (TorchScript: inside
the module, `reset()` zeroes it; ONNX: `state_i` inputs and `state_i_out` outputs, zeros to start). Other
models export whole-signal modules that do not stream. A run with a learned prior gains a `prior` method:
one temperature per latent frame in, latent frames out (ONNX: one frame per call, its state explicit).

A conditional run's methods take its label as input channels after their other inputs, one per label in the
card's `labels` order (audiovae.nn.host_faces); export checks each label's one-hot against the model under
that label.
"""

from __future__ import annotations

import copy
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from audiovae.errors import UserError
from audiovae.io.atomic import DiskFullError, write_atomic, write_json_atomic
from audiovae.io.outputs import OutputFolder, recognized_by
from audiovae.nn.host_faces import StatefulStreaming, WholeSignal, WithPrior
from audiovae.nn.legacy_export import legacy_export
from audiovae.nn.streaming import StreamingVAE

FORMAT = "audiovae-export"
FORMAT_VERSION = 1
OPSET = 17
METHODS = ("encode", "decode", "forward")


class _OnnxMethod(nn.Module):
    """One method with the state as explicit arguments: (input, *states) -> (output, *new_states)."""

    def __init__(self, model: nn.Module, method: str, first: int, count: int, total: int):
        super().__init__()
        self.model, self.method, self.first, self.count, self.total = model, method, first, count, total

    def forward(self, x: torch.Tensor, *states: torch.Tensor):
        if isinstance(self.model, WholeSignal):  # blocks are multiples of the hop: no padding in the graph
            face = self.model
            run = {"encode": face.encode_padded, "decode": face.decode,
                   "forward": lambda t: face.decode(face.with_label(face.encode_padded(t), t))}[self.method]
            return run(x)
        full = [x.new_zeros(0)] * self.total
        full[self.first : self.first + self.count] = list(states)
        y = getattr(self.model, self.method)(x, full)
        return (y, *full[self.first : self.first + self.count])


class _OnnxPrior(nn.Module):
    """The prior face with its state explicit: (temperature (B, 1, 1), *states) -> (z (B, latent, 1), *states)."""

    def __init__(self, face: nn.Module):
        super().__init__()
        self.face = face

    def forward(self, temperature: torch.Tensor, *states: torch.Tensor):
        states_list = list(states)
        z = self.face.step_with_state(temperature, states_list)
        return (z, *states_list)


def state_layout(model: nn.Module) -> dict[str, list[list[int]]]:
    """For each method, the (channels, length) of each state tensor it takes and returns (batch first)."""
    if not isinstance(model, StreamingVAE):
        return {method: [] for method in METHODS}
    shapes, split = model.state_shapes, model.encode_states
    return {"encode": shapes[:split], "decode": shapes[split:], "forward": shapes}


def _export_onnx(wrapper: nn.Module, args: tuple, inputs: list[str], outputs: list[str], time_axis: bool) -> bytes:
    axes = {name: {0: "batch"} for name in inputs[1:] + outputs[1:]}
    axes.update({name: {0: "batch", 2: "time"} if time_axis else {0: "batch"} for name in (inputs[0], outputs[0])})
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(wrapper.eval(), args, buffer, dynamo=False, opset_version=OPSET, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes)
    return buffer.getvalue()


def _serialized(write) -> bytes:
    """What `write(file)` writes, in memory. torch's writers fail on a full disk inside C++, where torch.jit.save's
    stream writer throws from its destructor and aborts the process; Python's own write raises ENOSPC, which
    audiovae.io.atomic turns into one line naming the file."""
    buffer = io.BytesIO()
    write(buffer)
    return buffer.getvalue()


def _onnx_method(model: nn.Module, method: str) -> bytes:
    layout = state_layout(model)[method]
    total = len(model.state_shapes) if isinstance(model, StreamingVAE) else 0
    first = model.encode_states if method == "decode" and total else 0
    wrapper = _OnnxMethod(model, method, first, len(layout), total)
    labels = model.labels if isinstance(model, WholeSignal) else 0  # conditional models do not stream yet
    channels = (model.latent_size if method == "decode" else 1) + labels
    frames = example_frames(model) * (1 if method == "decode" else model.hop)
    args = (torch.zeros(1, channels, frames), *[torch.zeros(1, c, n) for c, n in layout])
    inputs = ["z" if method == "decode" else "x"] + [f"state_{i}" for i in range(len(layout))]
    outputs = ["z" if method == "encode" else "y"] + [f"state_{i}_out" for i in range(len(layout))]
    return _export_onnx(wrapper, args, inputs, outputs, True)


def _onnx_prior(face: nn.Module) -> bytes:
    shapes = face.state_shapes
    args = (torch.ones(1, 1 + face.labels, 1), *[torch.zeros(1, c, n) for c, n in shapes])
    inputs = ["temperature"] + [f"state_{i}" for i in range(len(shapes))]
    outputs = ["z"] + [f"state_{i}_out" for i in range(len(shapes))]
    return _export_onnx(_OnnxPrior(face), args, inputs, outputs, False)


def scriptable(net: nn.Module, recipe, prior: nn.Module | None = None) -> nn.Module:
    """The face `net`'s family builds (streaming or whole-signal), with the learned prior's face when given."""
    from audiovae.models import get_family

    family = get_family(recipe.model.family)
    if family.face is None:
        raise UserError(f"the {family.name} family has no export form (its registry entry gives no face)")
    module = family.face(net, recipe)
    if prior is not None:
        from audiovae.priors.host_face import PriorFace

        module = WithPrior(module, PriorFace(prior))
    return module.eval().requires_grad_(False)


@dataclass
class ExportResult:
    """What `export_net` wrote, and ONNX Runtime's largest difference from PyTorch on a test signal (see
    check_onnx): absolute for the exact methods, relative to the peak for an iterative phase estimate."""

    out_dir: Path
    card: dict[str, Any]
    onnx_max_error: float | None
    onnx_relative_error: float | None = None
    label_max_error: float | None = None  # a conditional run's: see check_labels


# an export from before output folders carried a marker, recognized by its card.json
EARLIER_EXPORT = recognized_by("card.json", FORMAT,
                               ["model.ts", "card.json", *(f"{m}.onnx" for m in (*METHODS, "prior"))])


def export_net(net: nn.Module, recipe, out_dir: str | Path, checkpoint_sha256: str | None = None,
               force: bool = False, prior: nn.Module | None = None, inputs=()) -> ExportResult:
    """Write model.ts, <method>.onnx and card.json for a model `net` built from `recipe`, with the learned
    prior's `prior` method when `prior` (an audiovae.priors.learned.LatentPrior) is given. Each file is written
    atomically; nothing is in `out_dir` until all are written and checked (audiovae.io.outputs: `force` replaces
    only an earlier export's files, never one of `inputs`)."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None:  # torch's exporter needs it; fail before any work
        raise UserError("export writes ONNX models too, which needs the onnx package: pip install 'audiovae[export]'")
    out_dir = Path(out_dir)
    methods = METHODS + (("prior",) if prior is not None else ())
    names = ["model.ts", "card.json"] + [f"{m}.onnx" for m in methods]
    with OutputFolder(out_dir, "export", names, force, inputs, whole_set=True, legacy=EARLIER_EXPORT) as folder:
        try:
            result = _write_export(net, recipe, folder.staging, checkpoint_sha256, prior, methods)
        except DiskFullError:  # it names a file in the staging folder, which is gone when the user reads it
            raise DiskFullError(f"{out_dir}: the disk is full (No space left on device); nothing was written and "
                                "any earlier export there is unchanged; free some space and export again") from None
        folder.commit()
    return ExportResult(out_dir, result.card, result.onnx_max_error, result.onnx_relative_error,
                        result.label_max_error)


def _write_export(net: nn.Module, recipe, out_dir: Path, checkpoint_sha256: str | None, prior: nn.Module | None,
                  methods: tuple[str, ...]) -> ExportResult:
    # copies: export freezes parameters and moves them to the CPU, and the caller keeps its models as they were
    module = scriptable(copy.deepcopy(net).cpu().eval(), recipe, None if prior is None else copy.deepcopy(prior).cpu())
    face = module.face if isinstance(module, WithPrior) else module
    inner = face.model if isinstance(face, StatefulStreaming) else face
    layout = state_layout(inner)
    with legacy_export(notes=True):
        scripted = torch.jit.script(module)
        files = {"model.ts": _serialized(lambda buffer: torch.jit.save(scripted, buffer))}
        files.update({f"{method}.onnx": _onnx_method(inner, method) for method in METHODS})
        if prior is not None:
            files["prior.onnx"] = _onnx_prior(module.prior_face)
            layout["prior"] = module.prior_face.state_shapes
    for name, data in files.items():  # in memory first (see _serialized), then each written atomically
        write_atomic(out_dir / name, lambda tmp, data=data: tmp.write_bytes(data))
    error, relative = check_onnx(out_dir, module)
    label_error = check_labels(scripted, net, recipe, prior) if module.labels else None
    sample_rate, hop, latency = recipe.data.sample_rate, module.hop, module.latency_samples
    first = example_frames(face) if hasattr(face, "example_frames") else 1  # frames of the shortest block it takes
    streams = isinstance(face, StatefulStreaming)
    card = {
        "format": FORMAT, "version": FORMAT_VERSION, "sample_rate": sample_rate, "frame_samples": hop,
        "block_sizes": {"multiple_of": hop,
                        "examples": [hop * k for k in range(first, 4096 // hop + 1)] or [first * hop]},
        "latency_samples": latency, "latency_ms": round(1000 * latency / sample_rate, 3),
        "latency_note": "delay of the output behind the input, on top of one block of buffering",
        "latent_size": module.latent_size, "streams": streams, "methods": list(methods),
        "files": {"torchscript": "model.ts", "onnx": {m: f"{m}.onnx" for m in methods}},
        "onnx_state": {m: [{"input": f"state_{i}", "output": f"state_{i}_out", "shape": ["batch", c, n]}
                           for i, (c, n) in enumerate(shapes)] for m, shapes in layout.items()},
        "opset": OPSET, "recipe": recipe.to_dict(), "checkpoint_sha256": checkpoint_sha256,
    }
    if prior is not None:
        card["prior"] = {"input": "temperature (batch, 1, frames): one value per latent frame, 1.0 as trained",
                         "output": "latent frames (batch, latent_size, frames), for decode",
                         "onnx_frames_per_call": 1, "state": "continues across calls; reset() starts afresh"}
    if module.labels:
        card["labels"] = list(recipe.model.labels)
        card["label_channels"] = (
            f"every method takes {module.labels} more input channels after its others (after the signal for encode "
            "and forward, the latents for decode, the temperature for prior), one per label in `labels` order, at "
            "the method's input rate: 1.0 on a label's channel and 0.0 on the others generates under that label, "
            "and a mix (weights summing to 1) mixes the labels' learned biases linearly. encode and forward use "
            "each call's mean over time of these channels; decode and prior read them frame by frame")
    write_json_atomic(out_dir / "card.json", card)
    return ExportResult(out_dir, card, error, relative, label_error)


def export_model(model, out_dir: str | Path, force: bool = False, with_prior: bool = True) -> ExportResult:
    """Export a trained `audiovae.synthesis.model.Model` (its .net, .recipe, .checkpoint_sha256 and, when it has one and
    `with_prior`, its learned prior)."""
    if with_prior and getattr(model, "prior_refusal", None):
        raise UserError(model.prior_refusal)
    learned = getattr(model.learned_prior, "model", None) if with_prior else None
    from audiovae.priors.learned import LatentPrior

    if learned is not None and not isinstance(learned, LatentPrior):  # the host face steps one frame at a time
        print(f"warning: {model.run}: its learned prior (prior.kind {learned.config.kind}) does not step frame by "
              "frame, which the host face needs; exported without a prior method (train-prior with --set "
              "prior.kind=gru for one)", file=sys.stderr)
        learned = None
    if learned is not None and getattr(model.learned_prior, "unchecked", None):
        print(f"warning: {model.learned_prior.unchecked}", file=sys.stderr)
    return export_net(model.net, model.recipe, out_dir, model.checkpoint_sha256, force, learned, [model.checkpoint])


def example_frames(face: nn.Module) -> int:
    """Latent frames in the blocks that export traces and checks: 2, or what a face asks for (a spectral front
    end's reflect padding needs more than n_fft / 2 samples)."""
    return int(getattr(face, "example_frames", 2))


def check_onnx(out_dir: Path, module: nn.Module, blocks: int = 3) -> tuple[float | None, float | None]:
    """ONNX Runtime against PyTorch on a test signal of `blocks` blocks of example_frames hops; (None, None)
    without onnxruntime.

    Returns the largest absolute difference of the methods that compute exactly (forward; or encode, and the
    prior's frames at temperature 0, which are deterministic) and, for a face whose decode estimates phase
    iteratively (Griffin-Lim: rounding differences grow over its iterations), forward's largest difference
    relative to its peak."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None, None
    face = module.face if isinstance(module, WithPrior) else module
    exact = getattr(face, "exact_decode", True)
    generator = torch.Generator().manual_seed(0)
    block = example_frames(face) * module.hop
    x = with_one_hot(0.5 * torch.randn(1, 1, blocks * block, generator=generator), module.labels, 0)
    errors, relative = [], None
    for method in ("forward",) if exact else ("encode", "forward"):
        module.reset()
        call = getattr(module, method)
        with torch.no_grad():
            expected = torch.cat([call(x[..., i : i + block]) for i in range(0, x.shape[-1], block)], -1).numpy()
        module.reset()
        runner = OnnxRunner(out_dir / f"{method}.onnx")
        got = np.concatenate([runner(x[..., i : i + block].numpy()) for i in range(0, x.shape[-1], block)], -1)
        difference = float(np.max(np.abs(got - expected)))
        if method == "forward" and not exact:
            relative = difference / max(float(np.max(np.abs(expected))), 1e-12)
        else:
            errors.append(difference)
    if isinstance(module, WithPrior):
        frames = 8
        module.reset()
        temperature = with_one_hot(torch.zeros(1, 1, frames), module.labels, 0)
        with torch.no_grad():
            expected = module.prior(temperature).numpy()
        module.reset()
        runner = OnnxRunner(out_dir / "prior.onnx")
        got = np.concatenate([runner(temperature[..., t : t + 1].numpy()) for t in range(frames)], -1)
        errors.append(float(np.max(np.abs(got - expected))))
    return max(errors), relative


def with_one_hot(x: torch.Tensor, labels: int, label: int) -> torch.Tensor:
    """x (B, C, T) with a conditional export's label channels after it: `labels` channels, 1.0 on `label`'s."""
    if labels == 0:
        return x
    one_hot = x.new_zeros(x.shape[0], labels, x.shape[-1])
    one_hot[:, label] = 1.0
    return torch.cat([x, one_hot], 1)


def _bound(net: nn.Module, label: int) -> nn.Module:
    """An unconditional copy of a conditional `net` that computes `net` under `label`: the label's biases
    (LabelEmbedding, added after the first layer of the encoder and of the decoder) moved into those layers'."""
    bound = copy.deepcopy(net)
    with torch.no_grad():
        bound.encoder[0].bias += net.label_embedding.encoder.weight[label]
        bound.decoder[0].bias += net.label_embedding.decoder.weight[label]
    bound.label_embedding = None
    return bound


def check_labels(scripted: torch.jit.ScriptModule, net: nn.Module, recipe, prior: nn.Module | None,
                 blocks: int = 3) -> float:
    """A conditional export under each label's one-hot against the model under that label: encode, decode and
    forward against the face of an unconditional copy bound to it (`_bound`), the prior at temperature 0 against
    LatentPrior.sample_stream under it. The largest absolute difference, relative to the peak for a decode that
    is not exact (see check_onnx)."""
    net, errors = copy.deepcopy(net).cpu().eval(), []
    labels = net.labels
    for label in range(labels):
        reference = scriptable(_bound(net, label), recipe)
        exact = getattr(reference, "exact_decode", True)
        block = example_frames(reference) * reference.hop
        x = 0.5 * torch.randn(2, 1, blocks * block, generator=torch.Generator().manual_seed(label))
        z = torch.randn(2, net.latent_size, blocks * example_frames(reference),
                        generator=torch.Generator().manual_seed(100 + label))
        with torch.no_grad():
            pairs = [(scripted.encode(with_one_hot(x, labels, label)), reference.encode(x), True),
                     (scripted.decode(with_one_hot(z, labels, label)), reference.decode(z), exact),
                     (scripted(with_one_hot(x, labels, label)), reference(x), exact)]
        for got, expected, absolute in pairs:
            difference = float((got - expected).abs().max())
            errors.append(difference if absolute else difference / max(float(expected.abs().max()), 1e-12))
    if prior is not None:
        prior = copy.deepcopy(prior).cpu().eval()
        for label in range(labels):
            expected = torch.cat(list(prior.sample_stream(1, 8, temperature=0.0, label=torch.tensor([label]))), -1)
            scripted.reset()
            with torch.no_grad():
                got = scripted.prior(with_one_hot(torch.zeros(1, 1, 8), labels, label))
            errors.append(float((got - expected).abs().max()))
        scripted.reset()
    return max(errors)


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
