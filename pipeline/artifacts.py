"""The derived child network as steps hand it to each other: three artifacts of a run.

``child/architecture.json`` (the versioned architecture record), ``child/weights.pt`` (its
state dict, loadable with ``weights_only=True``) and ``child/meta.json`` (what it was trained
on: dataset parameters, class names, normalisation, test accuracy, budgets).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from dha_train.errors import ConfigError, UserError
from dha_train.spaces import build_network
from dha_train.spaces.arch import Architecture, load_architecture, save_architecture
from pipeline.outputs import STEP_OUTPUTS, download_output
from pipeline.run_ids import resolve_run_id
from pipeline.runs import default_tracking_uri

__all__ = [
    "ChildRecord",
    "DerivedModel",
    "log_derived",
    "load_derived",
    "given_architecture_id",
    "load_given_architecture",
    "search_run_id",
    "DESCRIPTIVE_KEYS",
]

ARCH_FILE = "architecture.json"  # in child/

# what a run searched: the measure step tags its run with these, compare shows them
DESCRIPTIVE_KEYS = ("dataset", "space", "mode", "max_params_m", "max_flops_m", "max_latency_ms")


CHILD_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ChildRecord:
    """What a derived child was trained on and how well it did (``child/meta.json``).

    Written by search_train, with the deployable child's test top-1/top-5; read by measure,
    export and benchmark. Versioned: a file of another ``schema_version`` is refused
    with a clear error rather than read by key.
    """

    dataset: str
    data_dir: str
    seed: int
    mode: str
    space: str
    resolution: int
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    search_run_id: str
    max_params_m: float | None = None
    max_flops_m: float | None = None
    max_latency_ms: float | None = None
    top1: float | None = None  # percent, on the test split (set by search_train)
    top5: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("class_names", "mean", "std"):
            d[key] = list(d[key])
        return {"schema_version": CHILD_SCHEMA_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChildRecord:
        version = d.get("schema_version")
        if version != CHILD_SCHEMA_VERSION:
            raise UserError(
                f"child meta.json has schema_version {version!r}, this dha reads "
                f"{CHILD_SCHEMA_VERSION}: re-run search_train with this version"
            )
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names - {"schema_version"})
        if unknown:
            raise UserError(f"child meta.json has unknown fields {unknown}; was it edited by hand?")
        kept = {k: v for k, v in d.items() if k in names}
        for key in ("class_names", "mean", "std"):
            kept[key] = tuple(kept[key])
        return cls(**kept)

    def descriptive_tags(self) -> dict[str, str]:
        """dataset, space, mode and budgets, as strings ('' = unset)."""
        d = asdict(self)
        return {k: "" if d[k] is None else str(d[k]) for k in DESCRIPTIVE_KEYS}


@dataclass(frozen=True)
class DerivedModel:
    """A trained child network with its record."""

    arch: Architecture
    model: nn.Module
    record: ChildRecord

    @property
    def space(self) -> str:
        return str(self.arch.space)

    @property
    def resolution(self) -> int:
        return self.record.resolution

    @property
    def num_classes(self) -> int:
        return self.record.num_classes

    @property
    def top1(self) -> float | None:
        return self.record.top1

    @property
    def top5(self) -> float | None:
        return self.record.top5

    @property
    def class_names(self) -> list[str]:
        return list(self.record.class_names)

    def descriptive_tags(self) -> dict[str, str]:
        return self.record.descriptive_tags()


def log_derived(arch: Architecture, model: nn.Module, record: ChildRecord) -> None:
    """Log the child's three artifacts to the active run, as search_train's output."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp)
        save_architecture(arch, local / ARCH_FILE)
        torch.save(model.state_dict(), local / "weights.pt")
        (local / "meta.json").write_text(json.dumps(record.to_dict(), indent=2))
        mlflow.log_artifacts(str(tmp), STEP_OUTPUTS["search_train"])


def search_run_id(given: str) -> str:
    """The full id of the search_train run ``given`` names (a prefix will do), checked
    before a step opens its own run: a mistyped id then leaves no FAILED run behind."""
    return resolve_run_id(MlflowClient(default_tracking_uri()), given, what="search_train run")


def _names_a_file(text: str) -> bool:
    return text.endswith(".json") or Path(text).expanduser().exists()


def _digest(arch: Architecture) -> str:
    return hashlib.sha256(json.dumps(arch.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def given_architecture_id(given: str) -> str:
    """The ``architecture`` parameter as runs log, reuse and resume it: '' stays ''; a JSON
    file becomes ``<absolute path>#<digest of its network>`` (the steps run in the project
    folder, and an edited file is another network); a search_train run id (a prefix will do)
    becomes the full id. Idempotent; a file changed since its digest was taken is an error."""
    if not given:
        return ""
    text, _, digest = given.partition("#")
    if not _names_a_file(text):
        return search_run_id(given)
    path = Path(text).expanduser().resolve()
    now = _digest(load_architecture(path))
    if digest and digest != now:
        raise ConfigError(f"architecture file {path} changed since the run began; start again")
    return f"{path}#{now}"


def load_given_architecture(given: str) -> Architecture | None:
    """The network the ``architecture`` parameter names (see :func:`given_architecture_id`):
    an architecture JSON file, or the child of a search_train run; None for ''. Every failure
    is one line (ConfigError or UserError)."""
    if not given:
        return None
    text = given.partition("#")[0]
    if _names_a_file(text):
        return load_architecture(Path(text).expanduser())
    with tempfile.TemporaryDirectory() as tmp:  # only the JSON, not the child's weights
        run_id = search_run_id(given)
        return load_architecture(download_output("search_train", run_id, part=ARCH_FILE, dst=tmp))


def load_derived(run_id: str) -> DerivedModel:
    """Rebuild the child that search_train logged in run ``run_id`` (eval mode, CPU; a prefix
    of the id will do)."""
    run_id = search_run_id(run_id)
    local = download_output("search_train", run_id)
    arch = load_architecture(local / ARCH_FILE)
    model = build_network(arch)
    model.load_state_dict(torch.load(local / "weights.pt", map_location="cpu", weights_only=True))
    record = ChildRecord.from_dict(json.loads((local / "meta.json").read_text()))
    return DerivedModel(arch=arch, model=model.eval(), record=record)
