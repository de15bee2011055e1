"""The derived child's step contract: ChildRecord (versioned) and its three artifacts."""

from __future__ import annotations

import json
from dataclasses import replace

import mlflow
import pytest
import torch

from dha_train.errors import UserError
from dha_train.spaces import baseline_architecture, build_network, tiny_config
from pipeline.artifacts import ChildRecord, load_derived, log_derived

RECORD = ChildRecord(
    dataset="digits", data_dir="", seed=0, mode="dha", space="mobilenet", resolution=32,
    num_classes=10, class_names=tuple(str(i) for i in range(10)), mean=(0.5,) * 3,
    std=(0.25,) * 3, search_run_id="abc", max_params_m=0.5,
)  # fmt: skip


def test_record_round_trips_through_json_and_refuses_other_versions() -> None:
    d = json.loads(json.dumps(RECORD.to_dict()))
    assert d["schema_version"] == 1
    assert ChildRecord.from_dict(d) == RECORD
    with pytest.raises(UserError, match="schema_version 2"):
        ChildRecord.from_dict({**d, "schema_version": 2})
    with pytest.raises(UserError, match="unknown fields \\['colour'\\]"):
        ChildRecord.from_dict({**d, "colour": "red"})
    assert RECORD.descriptive_tags()["max_params_m"] == "0.5"
    assert RECORD.descriptive_tags()["max_flops_m"] == ""


def test_logged_child_loads_back_with_weights_and_record(mlflow_store: str) -> None:
    arch = baseline_architecture(tiny_config("mobilenet"))
    model = build_network(arch).eval()
    record = replace(RECORD, top1=91.5, top5=99.0)
    with mlflow.start_run() as run:
        log_derived(arch, model, record)
    derived = load_derived(run.info.run_id)
    assert derived.arch == arch and derived.record == record and derived.top1 == 91.5
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(derived.model(x), model(x))
