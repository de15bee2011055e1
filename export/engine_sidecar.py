"""The JSON sidecar beside a header-free TensorRT plan, and the checks made before loading.

A plan runs only with the TensorRT version and GPU architecture that built it, so the
sidecar records both (and the plan's sha256); :func:`validate_sidecar` refuses a mismatch
with a message that says how to fix it. Everything here is plain Python (no TensorRT).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from export.errors import EngineMismatchError

__all__ = [
    "SIDECAR_SCHEMA_VERSION",
    "EngineFiles",
    "PlatformInfo",
    "EngineSidecar",
    "sidecar_path_for",
    "sha256_of",
    "write_engine_files",
    "read_sidecar",
    "validate_sidecar",
]

logger = logging.getLogger(__name__)

SIDECAR_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class EngineFiles:
    """A plan file and its sidecar (``<plan>.json``)."""

    plan: Path
    sidecar: Path


@dataclass(frozen=True)
class PlatformInfo:
    """Where an engine is built or run."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "major.minor", e.g. "9.0"
    cuda_version: str


@dataclass(frozen=True)
class EngineSidecar:
    """Everything a runner needs to know about a plan before deserialising it."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    cuda_version: str
    precision: str
    input_name: str
    output_name: str
    resolution: int
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]
    plan_sha256: str
    schema_version: int = SIDECAR_SCHEMA_VERSION

    @property
    def platform(self) -> PlatformInfo:
        """The platform that built the plan."""
        return PlatformInfo(
            self.tensorrt_version, self.gpu_name, self.compute_capability, self.cuda_version
        )

    def to_json(self) -> str:
        """Indented JSON text."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: Path) -> EngineSidecar:
        """Parse sidecar JSON written by :meth:`to_json`."""
        try:
            raw = json.loads(text)
            if raw.get("schema_version") != SIDECAR_SCHEMA_VERSION:
                raise ValueError(f"schema_version {raw.get('schema_version')!r}")
            values = {f.name: raw[f.name] for f in fields(cls)}
        except (ValueError, KeyError, AttributeError) as exc:
            raise EngineMismatchError(
                f"TensorRT sidecar {source} is not a schema-{SIDECAR_SCHEMA_VERSION} sidecar "
                f"({exc}); expected the JSON written with the plan; rebuild the engine"
            ) from exc
        for key in ("min_shape", "opt_shape", "max_shape"):
            values[key] = tuple(int(v) for v in values[key])
        return cls(**values)


def sidecar_path_for(plan: Path) -> Path:
    """``model.plan`` -> ``model.plan.json``."""
    return plan.with_name(plan.name + ".json")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_engine_files(plan_bytes: bytes, plan: Path, sidecar: EngineSidecar) -> EngineFiles:
    """Write the plan (exactly ``plan_bytes``, no header) and its sidecar.

    The sidecar's ``plan_sha256`` must be the digest of ``plan_bytes``.
    """
    if hashlib.sha256(plan_bytes).hexdigest() != sidecar.plan_sha256:
        raise EngineMismatchError(
            f"sidecar for {plan} records sha256 {sidecar.plan_sha256[:12]}... but the plan bytes "
            "differ; expected the digest of the serialised engine; pass sha256 of plan_bytes"
        )
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(plan_bytes)
    side = sidecar_path_for(plan)
    side.write_text(sidecar.to_json())
    return EngineFiles(plan=plan, sidecar=side)


def read_sidecar(plan: Path, sidecar: Path | None = None) -> EngineSidecar:
    """Read the sidecar of ``plan`` (default ``<plan>.json``)."""
    side = sidecar or sidecar_path_for(plan)
    if not plan.is_file() or not side.is_file():
        missing = plan if not plan.is_file() else side
        raise EngineMismatchError(
            f"TensorRT engine file {missing} does not exist; expected a plan with its "
            "<plan>.json sidecar; build the engine with build_engine()"
        )
    return EngineSidecar.from_json(side.read_text(), source=side)


def validate_sidecar(plan: Path, sidecar: EngineSidecar, current: PlatformInfo) -> None:
    """Refuse a changed plan file, another TensorRT version or another GPU architecture.

    A different GPU name with the same compute capability is logged, not refused: TensorRT
    itself loads such plans (with a warning) and they run correctly.
    """
    digest = sha256_of(plan)
    if digest != sidecar.plan_sha256:
        raise EngineMismatchError(
            f"TensorRT plan {plan} has sha256 {digest[:12]}... but its sidecar records "
            f"{sidecar.plan_sha256[:12]}...; the file changed after it was built; rebuild it"
        )
    built = sidecar.platform
    if built.tensorrt_version != current.tensorrt_version:
        raise EngineMismatchError(
            f"TensorRT plan {plan} was built with TensorRT {built.tensorrt_version}, this "
            f"machine has {current.tensorrt_version}; plans run only on the version that "
            "built them; rebuild the engine here"
        )
    if built.compute_capability != current.compute_capability:
        raise EngineMismatchError(
            f"TensorRT plan {plan} was built for {built.gpu_name} (compute capability "
            f"{built.compute_capability}), this GPU is {current.gpu_name} (compute capability "
            f"{current.compute_capability}); rebuild the engine on this GPU"
        )
    if built.gpu_name != current.gpu_name:
        logger.warning(
            "TensorRT plan %s was built on %s and runs on %s (same compute capability %s)",
            plan,
            built.gpu_name,
            current.gpu_name,
            current.compute_capability,
        )
