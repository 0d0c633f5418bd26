"""experiments/gpu/run.sh at its tiny size on the CPU: every measurement it makes on a GPU runs and
leaves one JSON line, written as it goes."""

import json
import os
import subprocess
import sys

from tests.helpers.paths import ROOT


def test_gpu_script_runs_every_measurement_at_tiny_size(tmp_path):
    out = tmp_path / "gpu.jsonl"
    env = dict(os.environ, SIZE="tiny", OUT=str(out), SECONDS_EACH="0.05", PYTHON=sys.executable,
               XLA_FLAGS="")  # one CPU device, as one GPU
    subprocess.run(["bash", os.path.join(ROOT, "experiments", "gpu", "run.sh")], env=env,
                   check=True, capture_output=True, timeout=900)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    names = [r["measurement"] for r in records]
    assert names == [f"{kind}-{shape}-{a}" if kind == "train" else f"sample-{shape}"
                     for shape in ("small", "stream")
                     for kind, a in [("train", "dense"), ("train", "blocksparse"),
                                     ("train", "cudnn"), ("sample", None)]]
    assert not [r for r in records if "error" in r]
    for r in records:
        if r["benchmark"] == "train":
            assert r["attention_resolved"] == r["attention"] and r["dtype"] == "bfloat16"
            assert 0 < r["fraction_of_peak"] and r["compile_s"] > 0
            assert set(r["attention_op"]["per_pattern_s"]) == {"dense", r["attention"]}
        else:
            assert [x["batch"] for x in r["results"]] == [1, 2]
            assert all(x["cached_codes_per_s"] > 0 for x in r["results"])
    # the paper-shaped stream is the longer one
    grids = {r["measurement"]: r["attention_op"]["grid"] for r in records if "attention_op" in r}
    assert grids["train-stream-dense"] > grids["train-small-dense"]


def test_gpu_script_records_a_measurement_that_fails_and_goes_on(tmp_path):
    out = tmp_path / "gpu.jsonl"
    env = dict(os.environ, SIZE="tiny", OUT=str(out), LIMIT="1", PYTHON=sys.executable)
    subprocess.run(["bash", os.path.join(ROOT, "experiments", "gpu", "run.sh")], env=env,
                   check=True, capture_output=True, timeout=300)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 8  # every measurement cut off after 1 s, each said so
    assert {r["error"] for r in records} == {"timed out"}
