"""The derived child's step contract: ChildRecord (versioned) and its three artifacts."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
import torch

from dha_train.errors import ConfigError, UserError
from dha_train.spaces import baseline_architecture, build_network, tiny_config
from dha_train.spaces.arch import save_architecture
from pipeline.artifacts import (
    ChildRecord,
    given_architecture_id,
    load_derived,
    load_given_architecture,
    log_derived,
)

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


def test_a_given_architecture_file_is_keyed_by_where_it_is_and_what_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``architecture`` parameter as runs log and reuse it: a relative path becomes absolute
    (the steps run in the project folder), an edited file another key, and a file edited after
    its key was taken an error, not the other network trained under the old key."""
    monkeypatch.chdir(tmp_path)
    arch = baseline_architecture(tiny_config("mobilenet"))
    save_architecture(arch, tmp_path / "arch.json")
    key = given_architecture_id("arch.json")
    path, _, digest = key.partition("#")
    assert path == str(tmp_path / "arch.json") and len(digest) == 12
    assert given_architecture_id(key) == key  # idempotent: dha run hands it to search_train
    assert load_given_architecture(key) == arch
    assert given_architecture_id("") == "" and load_given_architecture("") is None
    edited = replace(arch, dropout=0.5)
    save_architecture(edited, tmp_path / "arch.json")
    assert given_architecture_id("arch.json") != key
    with pytest.raises(ConfigError, match="changed since the run began"):
        given_architecture_id(key)
