"""The quickstart pipeline run stage by stage (`stages`), as experiments/shapes/run.sh times it."""

import os

import numpy as np
import pytest

from dalle_jax.training import pipeline_trainer
from tests.helpers.configs import load
from tests.helpers.paths import ROOT


def test_stages_parse_in_pipeline_order_and_unknown_ones_are_named():
    assert pipeline_trainer.parse_stages("clip, dvae") == ("dvae", "clip")
    assert pipeline_trainer.parse_stages(",".join(pipeline_trainer.STAGES)) == pipeline_trainer.STAGES
    with pytest.raises(ValueError, match="unknown: vqgan"):
        pipeline_trainer.parse_stages("dvae,vqgan")
    with pytest.raises(ValueError, match="choose"):
        pipeline_trainer.parse_stages(" , ")


def test_a_stage_without_its_input_says_which_stage_to_add(tmp_path):
    config = load("quickstart", "tiny", stages="dalle", data_dir=str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match="'dvae'"):
        pipeline_trainer.train_and_evaluate(config, str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "data")  # nothing prepared or trained


def test_stages_one_process_each(tmp_path):
    workdir = str(tmp_path / "w")
    config = dict(data_dir=str(tmp_path / "data"))
    first = pipeline_trainer.train_and_evaluate(load("quickstart", "tiny", stages="dvae,codes",
                                                     **config), workdir)
    assert set(first) == {"dvae"} and sorted(os.listdir(workdir)) == ["codes", "dvae"]
    second = pipeline_trainer.train_and_evaluate(load("quickstart", "tiny", stages="dalle",
                                                      **config), workdir)
    assert set(second) == {"dalle"} and second["dalle"]["bits_per_image_token"] > 0
    assert sorted(os.listdir(workdir)) == ["codes", "dalle", "dvae"]

    # The peer's data (experiments/peer/export_codes.py): our codes and BPE ids, row for row.
    import importlib.util

    from dalle_jax.evaluation.shapes_eval import examples_of
    from dalle_jax.training.checkpoint import load_config

    spec = importlib.util.spec_from_file_location(
        "export_codes", os.path.join(ROOT, "experiments", "peer", "export_codes.py"))
    export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export)
    out = str(tmp_path / "peer" / "data.npz")
    os.makedirs(os.path.dirname(out))
    summary = export.export(os.path.join(workdir, "dalle"), out, 3, ["validation", "heldout"])
    arrays = np.load(out)
    dalle_config = load_config(os.path.join(workdir, "dalle"))
    captions, codes = examples_of(dalle_config, "validation", 3)
    assert [str(p) for p in arrays["validation_prompts"]] == captions
    np.testing.assert_array_equal(arrays["validation_codes"][:3], codes)
    for split in ("train", "validation", "heldout"):
        n = summary["splits"][split]["scenes"]
        assert arrays[f"{split}_codes"].shape == (n, dalle_config.model.grid ** 2)
        assert len(arrays[f"{split}_text"]) == len(arrays[f"{split}_owner"]) >= n
        assert set(arrays[f"{split}_owner"]) == set(range(n))  # every scene has a caption
        assert arrays[f"{split}_text"].shape[1] == dalle_config.model.text_len
    assert summary["config"]["kinds"] == ["row", "column", "row", "conv"]
    assert summary["config"]["batch"] == dalle_config.data.global_batch_size
