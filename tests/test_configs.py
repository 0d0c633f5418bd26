"""Configs: presets load by path, fields override from the command line, bad fields are named."""

import glob

import pytest
from absl import flags
from ml_collections import config_flags

from dalle_jax.training.dvae.schedules import dvae_schedules

CONFIG_FILES = sorted(glob.glob("configs/*.py"))


def _parse(*args):
    fv = flags.FlagValues()
    argv = ["prog", *args]
    config_flags.DEFINE_config_file("config", None, "config", flag_values=fv, lock_config=True,
                                    sys_argv=argv)
    fv(argv)
    return fv.config


@pytest.mark.parametrize("path", CONFIG_FILES)
def test_every_preset_loads(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for preset in module.PRESETS:
        config = _parse(f"--config={path}:{preset}")
        assert config.preset == preset
        stages = ([config.dvae, config.dalle, config.clip] if "dvae" in config
                  else [config])
        for c in stages:
            assert c.text.text_len > 0 and c.data.global_batch_size > 0


@pytest.mark.parametrize("preset", ["default", "tiny", "experiment"])
def test_quickstart_stages_fit_together(preset):
    c = _parse(f"--config=configs/quickstart.py:{preset}")
    dvae, dalle, clip = c.dvae, c.dalle, c.clip
    assert dalle.model.grid * 8 == dvae.data.resolution == clip.model.resolution
    assert dalle.model.image_vocab == dvae.model.vocab_size
    assert dalle.model.text_len == dalle.text.text_len == clip.model.text_len == clip.text.text_len
    assert dalle.text.vocab_size <= dalle.model.text_vocab and clip.text.vocab_size <= clip.model.text_vocab
    assert dvae.data.shapes.to_dict() == clip.data.shapes.to_dict()  # the same scenes
    assert _parse(f"--config=configs/quickstart.py:{preset}",
                  "--config.dalle.train.num_steps=7").dalle.train.num_steps == 7
    # The stage-1 schedules build (a preset's decoder phase must fit the stage's shorter run).
    assert float(dvae_schedules(dvae)["learning_rate"](0)) == pytest.approx(dvae.optimizer.learning_rate)


def test_overrides_apply_with_types():
    config = _parse("--config=configs/data.py:tiny", "--config.data.resolution=48",
                    "--config.mesh.fsdp=2", "--config.data.shapes.variant=words")
    assert config.data.resolution == 48 and config.mesh.fsdp == 2
    assert config.data.shapes.variant == "words"
    assert _parse("--config=configs/data.py:paper").text.vocab_size == 16384


def test_unknown_field_is_named():
    with pytest.raises(AttributeError, match="Did you mean \"resolution\""):
        _parse("--config=configs/data.py:tiny", "--config.data.resolutoin=48")


def test_wrong_type_is_named():
    with pytest.raises(flags.IllegalFlagValueError, match="resolution"):
        _parse("--config=configs/data.py:tiny", "--config.data.resolution=big")


def test_unknown_preset_is_named():
    with pytest.raises(Exception, match="unknown preset 'huge'"):
        _parse("--config=configs/data.py:huge")
