"""The TensorRT flavor ships only the code its loader imports and requires only what that code
imports (pinned), and a model logged with it loads and answers in a fresh virtual environment
built from exactly its requirements.txt, TensorRT and cuda-bindings replaced by the CPU
stand-ins in tests/gpu_stubs (the two GPU libraries; everything else installed from PyPI).

The fresh environment holds the requirements and what they depend on (mlflow brings pandas,
scipy, flask, ...), so an undeclared import that mlflow happens to pull in would still load
there: the ast tests above are what guard the requirements themselves; the fresh
environment proves they suffice, and that torch, dha_train and onnx are not needed."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest

from export import tensorrt_flavor
from export.engine_sidecar import EngineFiles, EngineSidecar, write_engine_files
from export.serving import OUTPUT_SCHEMA
from export.shipped_code import (
    PROJECT_ROOT,
    copy_modules,
    pip_requirements,
    shipped_modules,
    third_party_imports,
)

STUBS = Path(__file__).resolve().parent / "gpu_stubs"
STUBBED = {"tensorrt": "tensorrt", "cuda-bindings": "cuda"}  # distribution -> stub package
TRT = "10.13.0.35"
R, CLASSES, MAX_BATCH = 4, ["cat", "dog", "eel"], 4
SHIPPED = {
    "dha_train", "dha_train.errors", "dha_train.tensorrt_import",
    "export", "export.engine_sidecar", "export.errors", "export.serving",
    "export.tensorrt_runtime", "export.tensorrt_served",
}  # fmt: skip


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _project_file(name: str) -> Path | None:
    base = PROJECT_ROOT.joinpath(*name.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def test_shipped_code_is_closed_and_holds_nothing_unneeded() -> None:
    modules = shipped_modules(tensorrt_flavor.LOADER_MODULE)
    assert set(modules) == SHIPPED
    for module in modules:  # closed: every project module a shipped file imports is shipped
        path = _project_file(module)
        assert path is not None
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
            for name in names:
                if _project_file(name) is not None:
                    assert name in modules, f"{module} imports {name}, which is not shipped"
    assert "torch" not in third_party_imports(modules)
    assert not any(m.startswith(("dha_train.engine", "dha_train.nas", "pipeline")) for m in modules)


def test_requirements_are_the_imports_of_the_shipped_code_pinned() -> None:
    pytest.importorskip("cuda.bindings", reason="cuda-bindings (here from torch's CUDA wheel)")
    assert tensorrt_flavor.get_default_pip_requirements(TRT) == [
        f"cuda-bindings=={_dist_version('cuda-bindings')}",
        f"mlflow=={mlflow.__version__}",  # the package named after the import, not -skinny
        f"numpy=={np.__version__}",
        f"tensorrt=={TRT}",  # the version that built the plan (not installed here)
    ]


def test_a_new_or_dropped_import_changes_the_code_and_requirements(tmp_path: Path) -> None:
    loader = tensorrt_flavor.LOADER_MODULE
    copy_modules(shipped_modules(loader), tmp_path)
    pinned = {"tensorrt": f"tensorrt=={TRT}"}
    before = pip_requirements(shipped_modules(loader, root=tmp_path), pinned=pinned, root=tmp_path)
    (tmp_path / "export" / "helper.py").write_text("import yaml\n")
    served = tmp_path / "export" / "tensorrt_served.py"
    served.write_text(served.read_text() + "\nimport export.helper  # noqa\n")
    for path in tmp_path.rglob("*.py"):  # drop numpy from every shipped file
        lines = path.read_text().splitlines()
        path.write_text("\n".join(x for x in lines if "import numpy" not in x) + "\n")
    modules = shipped_modules(loader, root=tmp_path)
    after = pip_requirements(modules, pinned=pinned, root=tmp_path)
    assert "export.helper" in modules
    assert set(after) - set(before) == {f"PyYAML=={_dist_version('PyYAML')}"}
    assert set(before) - set(after) == {f"numpy=={np.__version__}"}


def _linear_engine(tmp_path: Path) -> tuple[EngineFiles, np.ndarray, np.ndarray]:
    """A stand-in plan (the stub's JSON linear map) and its sidecar, written by the project."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(len(CLASSES), 3 * R * R)).astype(np.float32)
    bias = np.asarray([0.5, -0.25, 0.0], dtype=np.float32)
    plan = json.dumps({"weight": weight.tolist(), "bias": bias.tolist()}).encode()
    sidecar = EngineSidecar(
        tensorrt_version=TRT,
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability="9.0",
        cuda_version="12.8",
        precision="fp32",
        input_name="images",
        output_name="logits",
        resolution=R,
        min_shape=(1, 3, R, R),
        opt_shape=(2, 3, R, R),
        max_shape=(MAX_BATCH, 3, R, R),
        plan_sha256=hashlib.sha256(plan).hexdigest(),
    )  # fmt: skip  (the platform the stubs report)
    return write_engine_files(plan, tmp_path / "linear.fp32.plan", sidecar), weight, bias


def _pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10):
            return True
    except OSError:
        return False


_PROBE = """
import json, sys
import mlflow.pyfunc
import numpy as np
model = mlflow.pyfunc.load_model(sys.argv[1])
images = np.linspace(0, 1, 6 * 3 * {R} * {R}, dtype=np.float32).reshape(6, 3, {R}, {R})
out = model.predict({{"images": images}})
print(json.dumps({{
    "out": {{k: np.asarray(v).tolist() for k, v in out.items()}},
    "torch_loaded": "torch" in sys.modules,
    "project": sorted(m for m in sys.modules if m.split(".")[0] in ("export", "dha_train")),
}}))
"""


def _fresh_env(tmp_path: Path, requirements: list[str]) -> Path:
    """A new venv with ``requirements`` from PyPI (through pip's own cache), except that a
    stubbed GPU library among them gets its stub instead; returns its interpreter."""
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    wanted = [r for r in requirements if r.split("==")[0] not in STUBBED]
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
         "--disable-pip-version-check", *wanted],
        check=True, timeout=600,
    )  # fmt: skip
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    for requirement in requirements:
        if (package := STUBBED.get(requirement.split("==")[0])) is not None:
            shutil.copytree(STUBS / package, Path(site) / package)
    return python


@pytest.mark.e2e
def test_model_loads_and_answers_in_a_fresh_env_of_exactly_its_requirements(
    tmp_path: Path, mlflow_store: str
) -> None:
    if not _pypi_reachable():
        pytest.skip("PyPI is unreachable: the fresh environment cannot be installed")
    files, weight, bias = _linear_engine(tmp_path)
    with mlflow.start_run():
        info = tensorrt_flavor.log_model(files, name="engine", class_names=CLASSES, resolution=R)
    model_dir = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path)))
    requirements = (model_dir / "requirements.txt").read_text().split()
    started = time.monotonic()
    python = _fresh_env(tmp_path, requirements)
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(tmp_path))}
    for module in ("torch", "dha_train", "export", "onnx"):  # nothing beyond the requirements
        probe = subprocess.run(
            [str(python), "-c", f"import {module}"], cwd=tmp_path, env=clean, capture_output=True
        )
        assert probe.returncode != 0, f"{module} is importable in the fresh environment"
    script = tmp_path / "probe.py"
    script.write_text(_PROBE.format(R=R))
    result = subprocess.run(
        [str(python), str(script), str(model_dir)], cwd=tmp_path, env=clean,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"fresh environment: {time.monotonic() - started:.1f} s")  # shown with -s
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    out = {k: np.asarray(v) for k, v in answer["out"].items()}
    images = np.linspace(0, 1, 6 * 3 * R * R, dtype=np.float32).reshape(6, 3, R, R)
    expected = images.reshape(6, -1) @ weight.T + bias  # 6 rows through batches of 4 and 2
    assert set(out) == set(OUTPUT_SCHEMA)
    np.testing.assert_allclose(out["logits"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, atol=1e-6)
    assert list(out["class_names"]) == CLASSES
    assert list(out["label"]) == [CLASSES[i] for i in expected.argmax(axis=1)]
    assert not answer["torch_loaded"]
    assert set(answer["project"]) <= SHIPPED
