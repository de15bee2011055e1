"""The Table 3 study script runs end to end on tiny settings (the full study is not in CI)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_table3_study_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("table3", REPO / "experiments/table3_digits.py")
    assert spec is not None and spec.loader is not None
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    out = tmp_path / "study"
    argv = ["--smoke", "--seeds", "0,1", "--rows", "random,baseline,dha_fixed,random_matched",
            "--processes", "1", "--out", str(out)]  # fmt: skip
    study.main(argv)
    table = (out / "table3_digits.md").read_text()
    # every run was written as it finished; started again, the study trains nothing and
    # writes the same table
    assert len((out / "runs.jsonl").read_text().splitlines()) == 20
    monkeypatch.setattr(study, "run_one", lambda job: pytest.fail(f"ran again: {job}"))
    study.main(argv)
    assert (out / "table3_digits.md").read_text() == table
    rows = [line for line in table.splitlines() if line.startswith("| full") or "| low" in line]
    assert len(rows) == 10, table  # 5 rows x 2 splits: the derived rows added dha
    dha = next(line for line in rows if line.startswith("| full | dha |"))
    assert "(chance" in dha and "±" in dha
    baseline = next(line for line in rows if line.startswith("| full | baseline |"))
    assert "| - |" in baseline  # no policy: no KL
    # the random row trains a random feasible child: its architectures differ between seeds
    raw = json.loads((out / "table3_digits.json").read_text())["results"]
    randoms = [r["blocks"] for r in raw if r["row"] == "random" and r["split"] == "full"]
    assert randoms[0] != randoms[1]
    assert all(r["params_m"] <= 0.4 + 1e-9 for r in raw if r["row"] == "random")
    # the derived rows take the dha child of the same split and seed: dha_fixed trains it,
    # random_matched a random architecture no larger than it
    dha = {(r["split"], r["seed"]): r for r in raw if r["row"] == "dha"}
    for r in raw:
        child = dha[r["split"], r["seed"]]
        if r["row"] == "dha_fixed":
            assert r["blocks"] == child["blocks"]
            assert r["params_m"] == pytest.approx(child["params_m"])
        if r["row"] == "random_matched":
            assert r["max_params_m"] == child["params_m"]
            assert r["params_m"] <= child["params_m"] + 1e-9
    assert len([r for r in raw if r["row"] in ("dha_fixed", "random_matched")]) == 8
