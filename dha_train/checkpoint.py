"""Checkpoints: atomic writes, ``weights_only=True`` loads, and every RNG stream.

A checkpoint is a dict of tensors and primitive containers only, so ``torch.load`` with
``weights_only=True`` reads it. It is written to a temporary file in the same folder and moved
into place with ``os.replace``: a crash mid-write leaves the previous good checkpoint intact.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserError

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "restore_rng_state",
]

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not fit this run."""


def save_checkpoint(state: dict[str, Any], workdir: Path) -> Path:
    """Write ``state`` to ``workdir/checkpoint.pt`` atomically; returns the path."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / CHECKPOINT_NAME
    tmp = workdir / f".{CHECKPOINT_NAME}.{os.getpid()}.tmp"
    try:
        torch.save(state, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.debug("checkpoint written: %s", path)
    return path


def load_checkpoint(
    workdir: Path, map_location: str | torch.device = "cpu"
) -> dict[str, Any] | None:
    """The last checkpoint in ``workdir``, or None when there is none."""
    path = workdir / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a foreign or damaged file: say which and how to recover
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(exc).__name__}: {exc}); delete it to start "
            "afresh or point the run at a different workdir"
        ) from exc


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Global torch / CUDA / numpy / python RNG states plus the named generators."""
    np_state: Any = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    for name, g in generators.items():
        g.set_state(state["generators"][name])
