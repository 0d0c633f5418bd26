"""Test set-up: 8 fake CPU devices for sharding tests (must be set before JAX is imported)."""

import os

from tests.helpers.xla_flags import xla_flags

os.environ.setdefault("XLA_FLAGS", xla_flags(8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# libtpu (tests/benchmarks/test_tpu_compile.py) otherwise holds a lock file that a second process using it
# (the other test worker, a `bench compile` subprocess) fails on.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
# Compiled programs are shared on disk by both xdist workers and every subprocess the tests start
# (CLI runs, the notebook's kernel): many tests compile the same step. Keyed by the program and the
# JAX version, so results are unchanged; a fresh clone starts empty. Halves a cold dVAE resume test.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "jax_compilation"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


import pytest  # noqa: E402
from filelock import FileLock  # noqa: E402


def _built_once(tmp_path_factory, name: str, build) -> str:
    """The directory `name`, made by `build(path)` once per test run: under pytest-xdist every
    worker shares the run's base directory, and the first to get here builds while the others
    wait for it instead of training the same model again at the same time."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # this run's directory, above every worker's own
    path, built = base / f"shared-{name}", base / f"shared-{name}.built"
    with FileLock(str(path) + ".lock"):
        if not built.exists():
            path.mkdir(exist_ok=True)
            build(str(path))
            built.touch()
    return str(path)


@pytest.fixture(scope="session")
def tiny_dvae(tmp_path_factory):
    """(data_dir, workdir) of a `dvae.py:tiny` run on tiny `shapes` (trained once per run)."""
    from dalle_jax.training.dvae import trainer as dvae_trainer
    from tests.helpers.configs import load

    def build(root):
        dvae_trainer.train_and_evaluate(
            load("dvae", "tiny", **{"data.data_dir": os.path.join(root, "data")}),
            os.path.join(root, "work"))

    root = _built_once(tmp_path_factory, "dvae", build)
    return os.path.join(root, "data"), os.path.join(root, "work")


@pytest.fixture(scope="session")
def tiny_codes(tiny_dvae, tmp_path_factory):
    """data_dir holding the `image_codes` of the tiny dVAE's train and validation splits."""
    from dalle_jax.data.image_codes import image_codes
    from dalle_jax.generation.dvae import TrainedDVAE

    data_dir, workdir = tiny_dvae
    return _built_once(tmp_path_factory, "codes", lambda out: image_codes.prepare(
        TrainedDVAE.load(workdir), "shapes", data_dir, splits=("train", "validation"),
        out_data_dir=out))


@pytest.fixture(scope="session")
def tiny_dalle(tiny_codes, tmp_path_factory):
    """Workdir of a `dalle.py:tiny` run on the tiny dVAE's codes (trained once per run)."""
    from dalle_jax.training.dalle import trainer as dalle_trainer
    from tests.helpers.configs import load

    return _built_once(tmp_path_factory, "dalle", lambda workdir: dalle_trainer.train_and_evaluate(
        load("dalle", "tiny", **{"data.data_dir": tiny_codes}), workdir))


@pytest.fixture(scope="session")
def tiny_clip(tiny_dvae, tmp_path_factory):
    """Workdir of a `clip.py:tiny` run on the tiny `shapes` data (trained once per run)."""
    from dalle_jax.training.clip import trainer as clip_trainer
    from tests.helpers.configs import load

    return _built_once(tmp_path_factory, "clip", lambda workdir: clip_trainer.train_and_evaluate(
        load("clip", "tiny", **{"data.data_dir": tiny_dvae[0]}), workdir))


# The longest files first, so that the two workers do not end on one long file each after all
# the rest is done. This changes the order only, never which tests run.
LONGEST_FIRST = ("test_multihost_train.py", "test_gpu_script.py", "test_tpu_compile.py",
                 "test_tpu_train_steps.py", "test_multihost_preemption.py",
                 "test_generate.py", "test_dvae_sharding.py", "test_dvae_decoder_phase.py",
                 "test_notebook.py", "test_dvae_training.py", "test_clip.py")


def pytest_configure(config):
    """pytest-xdist hands out files with the most tests first unless told to keep their order."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    """Marks the tests under tests/xla_cpu `cpu_speed` and puts the tests of `LONGEST_FIRST` at
    the front, in that order; the rest keep theirs."""
    for item in items:
        if item.path.parent.name == "xla_cpu":
            item.add_marker(pytest.mark.cpu_speed)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
