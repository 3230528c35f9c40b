"""Checkpoint files are read with ``torch.load(weights_only=True)``: a crafted pickle never runs.

A training checkpoint folder (or a benchmark's samples folder) may come from someone else; a
``training_state.pt`` whose pickle calls a function while it is unpickled must be refused with an
error naming the file, and the call must not happen. What the current code writes still loads.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from training.checkpoint import (STATE_FILE, TensorFileError, load_tensor_file, read_training_state,
                                 write_checkpoint)


class _Payload:
    """Unpickling this calls ``os.makedirs(marker)``: the marker folder appearing means code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _craft(path: Path, marker: Path) -> None:
    torch.save({"step": 1, "optimizer": {}, "ema_updates": 0, "attempt_starts": [0], "x": _Payload(marker)}, path)


def test_a_crafted_training_state_is_refused_and_never_runs(tmp_path):
    folder, marker = tmp_path / "checkpoint_00000001", tmp_path / "pwned"
    folder.mkdir()
    _craft(folder / STATE_FILE, marker)
    with pytest.raises(TensorFileError) as info:
        read_training_state(folder, torch.device("cpu"))
    msg = str(info.value)
    assert str(folder / STATE_FILE) in msg and "refused" in msg and "os.makedirs" in msg  # the file and the culprit
    assert "weights_only=False" not in msg  # no advice to turn the protection off
    assert not marker.exists()


def test_a_crafted_samples_file_is_refused_too(tmp_path):
    """What benchmarks/exposure_bias/report.py reads its sample grids with."""
    path, marker = tmp_path / "ddim_4.pt", tmp_path / "pwned"
    _craft(path, marker)
    with pytest.raises(TensorFileError, match="ddim_4.pt"):
        load_tensor_file(path)
    assert not marker.exists()
    torch.save(torch.ones(2, 1, 4, 4), path)
    assert torch.equal(load_tensor_file(path), torch.ones(2, 1, 4, 4))


def test_a_corrupt_or_foreign_state_file_is_named(tmp_path):
    (tmp_path / STATE_FILE).write_bytes(b"not a zip, not a pickle")
    with pytest.raises(TensorFileError, match=f"{STATE_FILE}: not a readable torch tensor file"):
        read_training_state(tmp_path, torch.device("cpu"))
    torch.save([1, 2, 3], tmp_path / STATE_FILE)
    with pytest.raises(TensorFileError, match="not a training state"):
        read_training_state(tmp_path, torch.device("cpu"))


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def save_pretrained(self, folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)


class _EMA:
    updates = 7

    @contextmanager
    def applied_to(self, model):
        yield


def test_a_checkpoint_written_by_this_code_loads_back(tmp_path):
    """The saved state is tensors + plain containers (AdamW's state dict included): weights_only reads it."""
    model = _Model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    model.lin(torch.randn(4, 3)).sum().backward()
    opt.step()
    write_checkpoint(tmp_path, model=model, ema=_EMA(), optimizer=opt, step=5, attempt_starts=[0, 4],
                     config={"name": "t"}, history=[{"step": 5}])
    state = read_training_state(tmp_path, torch.device("cpu"))
    assert state["step"] == 5 and state["ema_updates"] == 7 and state["attempt_starts"] == [0, 4]
    fresh = torch.optim.AdamW(_Model().parameters(), lr=1e-3)
    fresh.load_state_dict(state["optimizer"])
    assert fresh.param_groups[0]["betas"] == (0.9, 0.99)
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
