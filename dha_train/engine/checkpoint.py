"""Checkpoints: atomic writes, a kept previous one, owned folders, ``weights_only=True`` loads.

A checkpoint is a dict of tensors and primitive containers only, so ``torch.load`` with
``weights_only=True`` reads it. It is written to a temporary file in the same folder; the
latest checkpoint then becomes ``checkpoint.prev.pt`` and the new file takes its place (two
``os.replace``, which need no space). A crash or a full disk mid-write leaves both intact, and
a latest checkpoint that cannot be read falls back to the previous one with a warning.

A folder belongs to one owner (for the pipeline: tracking store, experiment and step run),
recorded in ``owner.json``: :func:`owner_workdir` gives each owner its own folder, so a run
resumes only its own checkpoints and any other run starts afresh.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dha_train.errors import DiskFullError, UserError

__all__ = [
    "CHECKPOINT_NAME",
    "PREVIOUS_NAME",
    "OWNER_NAME",
    "TEMPORARY_NAME",
    "CheckpointError",
    "owner_workdir",
    "claim_workdir",
    "has_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "restore_rng_state",
]

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_NAME = "checkpoint.prev.pt"
OWNER_NAME = "owner.json"
TEMPORARY_NAME = f".{CHECKPOINT_NAME}.tmp"  # one writer per folder: rank 0 of its owner's run


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not fit this run."""


def owner_workdir(root: Path, key: str, owner: Mapping[str, str]) -> Path:
    """``root/key/<hash of owner>``: ``key`` names what is trained, ``owner`` who trains it."""
    text = json.dumps({k: str(v) for k, v in owner.items()}, sort_keys=True)
    return Path(root) / key / hashlib.sha256(text.encode()).hexdigest()[:12]


def claim_workdir(root: Path, key: str, owner: Mapping[str, str]) -> Path:
    """:func:`owner_workdir`, created with ``owner.json``; says so when others' are left alone.

    Folders of other owners under ``root/key`` are never resumed nor touched.
    """
    workdir = owner_workdir(root, key, owner)
    base = workdir.parent
    if not has_checkpoint(workdir) and base.is_dir():
        others = [_describe(p / OWNER_NAME) for p in sorted(base.iterdir()) if p != workdir]
        others = [o for o in others if o]
        if others:
            log.warning(
                "starting afresh: the checkpoints in %s belong to %s, not to %s",
                base,
                "; ".join(others),
                _describe_owner(owner),
            )
    workdir.mkdir(parents=True, exist_ok=True)
    record = {k: str(v) for k, v in owner.items()}
    (workdir / OWNER_NAME).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return workdir


def _describe_owner(owner: Mapping[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(owner.items()))


def _describe(path: Path) -> str:
    try:
        return _describe_owner(json.loads(path.read_text()))
    except (OSError, ValueError):
        return ""


def has_checkpoint(workdir: Path) -> bool:
    """Whether ``workdir`` holds a checkpoint (latest or previous) to resume from."""
    return any((Path(workdir) / name).is_file() for name in (CHECKPOINT_NAME, PREVIOUS_NAME))


def save_checkpoint(state: dict[str, Any], workdir: Path) -> Path:
    """Write ``state`` to ``workdir/checkpoint.pt`` atomically, keeping the one before."""
    workdir.mkdir(parents=True, exist_ok=True)
    path, previous = workdir / CHECKPOINT_NAME, workdir / PREVIOUS_NAME
    tmp = workdir / TEMPORARY_NAME
    try:
        # through a Python file: a full disk is then OSError(ENOSPC), not a C++ stream error
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise DiskFullError(
            f"no space left on the device while writing checkpoint {path}; the earlier "
            f"checkpoints in {workdir} are intact: free space and rerun to resume"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    log.debug("checkpoint written: %s", path)
    return path


def load_checkpoint(
    workdir: Path, map_location: str | torch.device = "cpu"
) -> dict[str, Any] | None:
    """The last readable checkpoint in ``workdir`` (latest, else previous), or None."""
    path, previous = workdir / CHECKPOINT_NAME, workdir / PREVIOUS_NAME
    if not path.exists():
        if not previous.exists():
            return None
        log.warning("%s is missing; resuming from the previous checkpoint %s", path, previous)
        return _read(previous, map_location)
    try:
        return _read(path, map_location)
    except CheckpointError as exc:
        if not previous.exists():
            raise
        log.warning(
            "cannot read checkpoint %s (%s); falling back to the previous one, %s",
            path,
            exc.__cause__,
            previous,
        )
        return _read(previous, map_location)


def _read(path: Path, map_location: str | torch.device) -> dict[str, Any]:
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
