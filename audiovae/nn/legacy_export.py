"""The one place that calls torch 2.14's deprecated exporters quietly: torch.jit.script / save / load and the
TorchScript-based ONNX exporter (torch.onnx.export(..., dynamo=False)).

Why we stay on them (docs/realtime.md, "One exporter"): nn~ loads TorchScript, so model.ts needs
torch.jit.script and torch.jit.save whichever exporter writes the ONNX files, and every family (conv waveform,
frame, Griffin-Lim faces, prior) goes through one exporter, never two. Each of those calls warns on every use
(`stream` printed one per run, the tests' log dozens); `legacy_export()` silences exactly those messages, by
category and text, and only inside it, so any other warning still shows.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# (category, start of the message) of each deprecation notice, as torch 2.14 words them
DEPRECATIONS = (
    (FutureWarning, r"`torch\.jit\.(script|save|load)` is (deprecated|not supported in Python 3\.14)"),
    (DeprecationWarning, r"You are using the legacy TorchScript-based ONNX export"),
    (DeprecationWarning, r"The feature will be removed\. Please remove usage of this function"),  # its internals
)

# the exporters' notes on what they record of a module: shapes kept as constants, slices not folded, a GRU's batch
# size; check_onnx compares every export with ONNX Runtime, which is what would catch one that mattered
EXPORT_NOTES = (
    (torch.jit.TracerWarning, r""),
    (UserWarning, r"Constant folding - Only steps=1 can be constant folded"),
    (UserWarning, r"Exporting a model to ONNX with a batch_size other than 1, with a variable length with GRU"),
    # torch's check of __init__ flags any `self.x: list[...] = ...` (it recognizes empty values for `List` only)
    (UserWarning, r"The TorchScript type system doesn't support instance-level annotations on empty non-base"),
)


@contextmanager
def legacy_export(notes: bool = False) -> Iterator[None]:
    """Run torch.jit.script / save / load or torch.onnx.export(dynamo=False) inside this, without their
    deprecation warnings (and, with `notes`, without EXPORT_NOTES); every other warning passes as usual."""
    with warnings.catch_warnings():
        for category, message in DEPRECATIONS + (EXPORT_NOTES if notes else ()):
            warnings.filterwarnings("ignore", message=message, category=category)
        yield
