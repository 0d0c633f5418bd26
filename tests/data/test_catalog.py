"""A TFDS catalog dataset (coco_captions) chosen by name with a field mapping, offline via mock_data."""

import tempfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dalle_jax.config_parts import data_config, mesh_config, text_config
from dalle_jax.data import pipeline, registry
from dalle_jax.parallel.mesh import make_mesh


@pytest.fixture(autouse=True)
def _temporary_dirs_in_tmp_path(tmp_path, monkeypatch):
    """tfds' own builder of an unprepared catalog dataset makes a temporary directory for the TFDS
    bucket's metadata and never removes it: keep those under the test's tmp_path, not /tmp."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def _config(tmp_path):
    import ml_collections

    return ml_collections.ConfigDict(dict(
        data=data_config(dataset="coco_captions", data_dir=str(tmp_path), resolution=16,
                         caption_key="captions/text", global_batch_size=8),
        text=text_config(vocab_size=300, text_len=10),
        mesh=mesh_config(),
    ))


def test_coco_captions_through_tokenizer_and_loader(tmp_path):
    config = _config(tmp_path)
    with tfds.testing.mock_data(num_examples=24):
        tok = pipeline.ensure_tokenizer(config, str(tmp_path / "work"))
        loader = pipeline.make_loader(config, "train", tok, mesh=make_mesh(config.mesh.to_dict()))
        batch = next(loader)
        source = pipeline.open_split(config.data, "train")
        all_captions = {str(t) for i in range(len(source)) for t in source[i]["captions"]["text"]}
    assert (tmp_path / "work" / "tokenizer.json").exists()
    assert batch["image"].shape == (8, 16, 16, 3) and batch["text"].shape == (8, 10)
    assert batch["image"].sharding.spec[0] == ("data", "fsdp")
    for caption, ids in zip(batch["caption"], np.asarray(batch["text"])):
        assert caption.strip() in {c.strip() for c in all_captions}  # one of the example's captions
        np.testing.assert_array_equal(ids, tok.encode(caption))


def test_wrong_field_mapping_is_named(tmp_path):
    config = _config(tmp_path)
    config.data.caption_key = "caption"
    with tfds.testing.mock_data(num_examples=8):
        tok = pipeline.ensure_tokenizer(_config(tmp_path), str(tmp_path / "w"))
        with pytest.raises(ValueError, match="field 'caption' not in example"):
            pipeline.make_loader(config, "train", tok)


def test_unknown_names_and_options():
    with pytest.raises(registry.UnknownDatasetError, match="'no_such_dataset'"):
        registry.prepare("no_such_dataset", "/tmp/x")
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['source'\]"):
        registry.prepare("shapes", "/tmp/x", source="/tmp")
    with pytest.raises(ValueError, match="takes no options"):
        registry.prepare("coco_captions", "/tmp/x", resolution=32)


def test_workdir_tokenizer_larger_than_config_is_refused(tmp_path):
    config = _config(tmp_path)
    with tfds.testing.mock_data(num_examples=8):
        pipeline.ensure_tokenizer(config, str(tmp_path / "w"))
        config.text.vocab_size = 100  # any trained tokenizer has the 257 byte+pad entries
        with pytest.raises(ValueError, match="vocab_size=100"):
            pipeline.ensure_tokenizer(config, str(tmp_path / "w"))


def test_find_prepared_takes_the_highest_version(tmp_path):
    from dalle_jax.data import sources

    for version in ("1.2.0", "1.10.0", "1.9.1"):
        d = tmp_path / "shapes" / "cfg" / version
        d.mkdir(parents=True)
        (d / "dataset_info.json").write_text("{}")
    assert sources.find_prepared(str(tmp_path), "shapes").endswith("1.10.0")
    with pytest.raises(sources.DatasetNotFoundError, match="config 'other'"):
        sources.find_prepared(str(tmp_path), "shapes", "other")
