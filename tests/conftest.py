"""Test set-up: 8 fake CPU devices for sharding tests (must be set before JAX is imported)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# libtpu (tests/test_tpu_compile.py) otherwise holds a lock file that a second process using it
# (the other test worker, a `bench compile` subprocess) fails on.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
# Compiled programs are shared on disk by both xdist workers and every subprocess the tests start
# (CLI runs, the notebook's kernel): many tests compile the same step. Keyed by the program and the
# JAX version, so results are unchanged; a fresh clone starts empty. Halves a cold dVAE resume test.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "jax_compilation"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dvae(tmp_path_factory):
    """(data_dir, workdir) of a `dvae.py:tiny` run on tiny `shapes` (trained once per session)."""
    from dalle_jax.training import dvae_trainer
    from tests.helpers.configs import load

    root = tmp_path_factory.mktemp("dvae")
    data_dir, workdir = str(root / "data"), str(root / "work")
    dvae_trainer.train_and_evaluate(load("dvae", "tiny", **{"data.data_dir": data_dir}), workdir)
    return data_dir, workdir


@pytest.fixture(scope="session")
def tiny_codes(tiny_dvae, tmp_path_factory):
    """data_dir holding the `image_codes` of the tiny dVAE's train and validation splits."""
    from dalle_jax.data.image_codes import image_codes
    from dalle_jax.training.dvae_inference import ImageCodec

    data_dir, workdir = tiny_dvae
    out = str(tmp_path_factory.mktemp("codes"))
    image_codes.prepare(ImageCodec.load(workdir), "shapes", data_dir,
                        splits=("train", "validation"), out_data_dir=out)
    return out


@pytest.fixture(scope="session")
def tiny_dalle(tiny_codes, tmp_path_factory):
    """Workdir of a `dalle.py:tiny` run on the tiny dVAE's codes (trained once per session)."""
    from dalle_jax.training import dalle_trainer
    from tests.helpers.configs import load

    workdir = str(tmp_path_factory.mktemp("dalle"))
    dalle_trainer.train_and_evaluate(load("dalle", "tiny", **{"data.data_dir": tiny_codes}), workdir)
    return workdir


@pytest.fixture(scope="session")
def tiny_clip(tiny_dvae, tmp_path_factory):
    """Workdir of a `clip.py:tiny` run on the tiny `shapes` data (trained once per session)."""
    from dalle_jax.training import clip_trainer
    from tests.helpers.configs import load

    workdir = str(tmp_path_factory.mktemp("clip"))
    clip_trainer.train_and_evaluate(load("clip", "tiny", **{"data.data_dir": tiny_dvae[0]}), workdir)
    return workdir
