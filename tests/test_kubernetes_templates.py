"""deploy/kubernetes: the Docker project variant, the MLflow Job template and the PyTorchJob.

No cluster is needed: templates are filled by MLflow's own functions and loaded into the
`kubernetes` client's models; a round trip through the models catches misspelt fields
(the client drops keys it does not know).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes = pytest.importorskip("kubernetes", reason="kubernetes client not installed (dev extra)")
pytest.importorskip("docker", reason="mlflow.projects.kubernetes imports the docker package")

from mlflow.projects import _parse_kubernetes_config, env_type  # noqa: E402
from mlflow.projects._project_spec import load_project  # noqa: E402
from mlflow.projects.docker import validate_docker_env  # noqa: E402
from mlflow.projects.kubernetes import (  # noqa: E402
    _get_kubernetes_job_definition,
    _get_run_command,
)
from mlflow.projects.utils import get_entry_point_command  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "kubernetes"
GPU = "nvidia.com/gpu"
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# Set by the Kubeflow training operator in every PyTorchJob pod (all operator versions).
OPERATOR_ENV = {"MASTER_ADDR": "dha-search-master-0", "MASTER_PORT": "23456", "RANK": "1"}
PROJECT = load_project(str(DEPLOY))
ENTRY_POINTS = sorted(PROJECT._entry_points)


def _round_trip(data: dict[str, Any], kind: str) -> Any:
    """Deserialize ``data`` into the client model ``kind`` and check nothing was dropped."""
    api = kubernetes.client.ApiClient()
    model = api._ApiClient__deserialize(copy.deepcopy(data), kind)
    assert api.sanitize_for_serialization(model) == data, f"fields unknown to {kind}"
    return model


def _env_value(container: Any, name: str) -> Any:
    """The entry Kubernetes uses for ``name`` (a later duplicate overrides an earlier one)."""
    return [e for e in container.env if e.name == name][-1]


def _flags(command: str) -> set[str]:
    return {token for token in shlex.split(command) if token.startswith("--")}


def _load_yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / name).read_text())


def _run_as_user() -> int:
    """The uid the Dockerfile creates for its non-root user."""
    match = re.search(r"useradd\b[^\n]*--uid (\d+)", (DEPLOY / "Dockerfile").read_text())
    assert match, "Dockerfile creates no user with a fixed uid"
    return int(match.group(1))


def _check_pod(spec: Any) -> Any:
    """Checks shared by the Job's and the PyTorchJob's pods; returns the first container."""
    assert spec.security_context.run_as_non_root
    assert spec.security_context.run_as_user == _run_as_user()
    container = spec.containers[0]
    assert int(container.resources.limits[GPU]) >= 1
    assert container.resources.requests[GPU] == container.resources.limits[GPU]
    volumes = {v.name: v for v in spec.volumes}
    mounts = {m.mount_path: m for m in container.volume_mounts}
    assert mounts["/data"].read_only
    assert volumes[mounts["/data"].name].persistent_volume_claim.claim_name
    assert volumes[mounts["/dev/shm"].name].empty_dir.medium == "Memory"
    tracking = [e for e in container.env if e.name == "MLFLOW_TRACKING_URI"][0]
    assert tracking.value_from.config_map_key_ref.name == "mlflow-tracking"
    return container


def test_mlproject_is_a_docker_project() -> None:
    validate_docker_env(PROJECT)  # MLflow's own check: name and docker_env.image
    assert PROJECT.env_type == env_type.DOCKER
    assert PROJECT.docker_env["image"] in (DEPLOY / "README.md").read_text()
    # MLflow names the Job "<project>-<26-char timestamp>" and the container "<project>".
    assert DNS_LABEL.fullmatch(PROJECT.name) and len(PROJECT.name) + 27 <= 63


def test_mlproject_matches_root() -> None:
    root_file = REPO / "MLproject"
    if not root_file.exists():
        pytest.skip("root MLproject not written yet: nothing to compare with")
    root = load_project(str(REPO))
    fix = "run `python deploy/kubernetes/sync_mlproject.py`"
    assert sorted(root._entry_points) == ENTRY_POINTS, fix
    for name in ENTRY_POINTS:
        ours, theirs = PROJECT.get_entry_point(name), root.get_entry_point(name)
        assert sorted(ours.parameters) == sorted(theirs.parameters), f"{name}: {fix}"
        assert ours.command == theirs.command, f"{name}: {fix}"


def test_backend_config_accepted_by_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the template path is relative to where `mlflow run` is called
    config = _parse_kubernetes_config(json.loads((DEPLOY / "kubernetes_config.json").read_text()))
    assert set(config) >= {"kube-context", "repository-uri", "kube-job-template"}
    assert config["kube-job-template"] == _load_yaml("kubernetes_job_template.yaml")
    assert "/" in config["repository-uri"] and ":" not in config["repository-uri"].split("/")[-1]


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_job_template_filled_by_mlflow(
    entry_point: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = _load_yaml("kubernetes_job_template.yaml")
    assert template["metadata"]["namespace"]  # MLflow submits the Job to this namespace
    _round_trip(template, "V1Job")  # valid before MLflow fills it, too

    spec = PROJECT.get_entry_point(entry_point)
    given = {k: "1" for k, p in spec.parameters.items() if p.default is None}
    command = _get_run_command(get_entry_point_command(PROJECT, entry_point, given, str(tmp_path)))
    in_cluster = "http://mlflow.mlflow.svc.cluster.local:5000"
    monkeypatch.setenv("KUBE_MLFLOW_TRACKING_URI", in_cluster)
    env = {"MLFLOW_RUN_ID": "0123abcd", "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    image = "registry.example.com/dha/dha-pipeline:abc1234"
    filled = _get_kubernetes_job_definition(
        PROJECT.name, image, "sha256:" + "0" * 64, command, env, template
    )

    job = _round_trip(filled, "V1Job")
    assert DNS_LABEL.fullmatch(job.metadata.name) and len(job.metadata.name) <= 63
    assert job.spec.backoff_limit == 0 and job.spec.template.spec.restart_policy == "Never"
    container = _check_pod(job.spec.template.spec)
    assert container.name == PROJECT.name
    assert container.image.startswith(image + "@sha256:")
    assert container.command[:2] == shlex.split(spec.command)[:2]  # ["dha", "<step>"]
    assert _env_value(container, "MLFLOW_TRACKING_URI").value == in_cluster
    assert _env_value(container, "MLFLOW_RUN_ID").value == "0123abcd"


@pytest.mark.parametrize("replica", ["Master", "Worker"])
def test_pytorchjob_runs_torchrun_search(replica: str) -> None:
    from torch.distributed.run import get_args_parser

    job = _load_yaml("pytorchjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"} and replicas["Master"]["replicas"] == 1
    assert replicas[replica]["restartPolicy"] == "Never"
    pod = _round_trip(replicas[replica]["template"], "V1PodTemplateSpec")
    container = _check_pod(pod.spec)
    assert container.name == "pytorch"  # the container the training operator configures

    # Expand $(VAR) the way Kubernetes does; every reference must be defined in the pod.
    known = OPERATOR_ENV | {e.name: "x" for e in container.env}
    refs = {v for a in container.args for v in re.findall(r"\$\((\w+)\)", a)}
    assert refs <= set(known), f"undefined variables {refs - set(known)}"
    argv = [re.sub(r"\$\((\w+)\)", lambda m: known[m.group(1)], a) for a in container.args]
    assert container.command == ["torchrun"]
    args = get_args_parser().parse_args(argv)  # torchrun's own parser
    assert args.nnodes == str(sum(r["replicas"] for r in replicas.values()))
    assert args.nproc_per_node == container.resources.limits[GPU]
    assert args.module and args.training_script == "pipeline.cli"
    assert args.training_script_args[0] == "search-train"
    search_flags = _flags(PROJECT.get_entry_point("search_train").command)
    assert _flags(" ".join(args.training_script_args)) <= search_flags


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (ln.split(None, 1)[0].upper(), ln.split(None, 1)[1])
        for ln in joined.splitlines()
        if ln.strip()
    ]


def test_dockerfile_stages_and_commands() -> None:
    steps = _dockerfile()
    stages = [args.split()[-1] for op, args in steps if op == "FROM"]
    assert stages == ["build", "runtime"]
    base = next(args for op, args in steps if op == "ARG" and args.startswith("BASE_IMAGE="))
    torch_pin = next(
        d
        for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith("torch==")
    )
    assert "cuda" in base and torch_pin.removeprefix("torch==") in base

    # The build stage copies what setuptools needs: the readme and every package pattern.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {
        src.rstrip("/")
        for op, args in steps
        if op == "COPY" and "--from" not in args
        for src in args.split()[:-1]
    }
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= copied
    assert {p.rstrip("*") for p in packages} <= copied

    runtime = steps[[op for op, _ in steps].index("FROM", 1) :]
    run = " ".join(args for op, args in runtime if op == "RUN")
    install = run.index("[${extras}]")
    assert "extras=gpu" in run and "gpu,tensorrt" in run
    # onnxruntime and onnxruntime-gpu share a module: drop the CPU one, then restore the GPU one.
    assert install < run.index("pip uninstall -y onnxruntime;") < run.index("onnxruntime-gpu==")
    users = [args for op, args in runtime if op == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert ("WORKDIR", "/mlflow/projects/code") in runtime
    assert ("ENTRYPOINT", '["dha"]') in runtime
