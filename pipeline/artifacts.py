"""The derived child network as steps hand it to each other: three artifacts of a run.

``child/architecture.json`` (the versioned architecture record), ``child/weights.pt`` (its
state dict, loadable with ``weights_only=True``) and ``child/meta.json`` (what it was trained
on: dataset parameters, class names, normalisation, test accuracy, budgets).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from dha_train.errors import UserError
from dha_train.spaces import build_network
from dha_train.spaces.arch import Architecture, load_architecture, save_architecture
from pipeline.run_ids import resolve_run_id

__all__ = ["DerivedModel", "log_derived", "load_derived", "CHILD_DIR", "DESCRIPTIVE_KEYS"]

CHILD_DIR = "child"
# what a run searched: the measure step tags its run with these, compare shows them
DESCRIPTIVE_KEYS = ("dataset", "space", "mode", "max_params_m", "max_flops_m", "max_latency_ms")


@dataclass
class DerivedModel:
    """A trained child network with what the later steps need to know about it."""

    arch: Architecture
    model: nn.Module
    meta: dict[str, Any]

    @property
    def space(self) -> str:
        return str(self.arch.space)

    @property
    def resolution(self) -> int:
        return int(self.meta["resolution"])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def top1(self) -> float | None:
        return self.meta.get("top1")

    @property
    def top5(self) -> float | None:
        return self.meta.get("top5")

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def descriptive_tags(self) -> dict[str, str]:
        """dataset, space, mode and budgets, as strings ('' = unset)."""
        return {k: "" if self.meta.get(k) is None else str(self.meta[k]) for k in DESCRIPTIVE_KEYS}


def log_derived(
    arch: Architecture, model: nn.Module, meta: dict[str, Any], *, folder: str = CHILD_DIR
) -> None:
    """Log the child's three artifacts to the active run, under ``folder``."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp)
        save_architecture(arch, local / "architecture.json")
        torch.save(model.state_dict(), local / "weights.pt")
        (local / "meta.json").write_text(json.dumps(meta, indent=2))
        mlflow.log_artifacts(str(tmp), folder)


def load_derived(run_id: str, *, folder: str = CHILD_DIR, step: str = "derive") -> DerivedModel:
    """Rebuild the child logged by run ``run_id`` under ``folder`` (eval mode, CPU)."""
    client = MlflowClient()
    run_id = resolve_run_id(client, run_id, what=f"{step} run")
    try:
        local = Path(client.download_artifacts(run_id, folder))
    except Exception as exc:  # MLflow raises several kinds for a missing run or artifact
        raise UserError(
            f"run {run_id!r} has no {folder}/ artifacts: pass the run id of a "
            f"FINISHED {step} step ({type(exc).__name__})"
        ) from None
    arch = load_architecture(local / "architecture.json")
    model = build_network(arch)
    model.load_state_dict(torch.load(local / "weights.pt", map_location="cpu", weights_only=True))
    meta = json.loads((local / "meta.json").read_text())
    return DerivedModel(arch=arch, model=model.eval(), meta=meta)
