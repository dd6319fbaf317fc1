"""An export onto a full disk stops with one line naming the folder, not a C++ abort: torch's writers serialize
into memory and Python writes the files (audiovae.realtime.export), so ENOSPC reaches audiovae.io.atomic.
(Onto a real 300-KB tmpfs, torch.jit.save's own file writer ended the process: 'terminate called after throwing
an instance of c10::Error ... unexpected pos'.)"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from audiovae.config.recipe import recipe_from_dict
from audiovae.io.atomic import DiskFullError
from audiovae.models import build_model
from audiovae.realtime.export import export_net

TINY = {"channels": 4, "max_channels": 8, "latent_size": 3, "residual_layers": 1, "kernel_size": 3,
        "bands": 4, "strides": [4, 4], "causal": True}


@pytest.mark.parametrize("room", [0, 2])
def test_a_full_disk_is_one_line_naming_the_export_folder(tmp_path, monkeypatch, room):
    recipe = recipe_from_dict({"data": {"segment_samples": 2048}, "model": TINY}, "tiny")
    torch.manual_seed(0)
    net = build_model(recipe).eval()
    write_bytes, written = Path.write_bytes, []

    def filling(self, data):  # `room` files fit, then the disk is full
        if len(written) == room:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(self.name)
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", filling)
    with pytest.raises(DiskFullError) as error:
        export_net(net, recipe, tmp_path / "export")
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'export'}: the disk is full")
    assert ".audiovae-staging" not in message and len(written) == room
    assert list((tmp_path / "export").iterdir()) == []  # nothing claimed, the staging folder removed
