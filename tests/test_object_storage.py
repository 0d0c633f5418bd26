"""Workdirs and data dirs on object storage: a `gs://` path reaches every writer as it is.

No network: epath's backends are replaced by a fake bucket (a local folder) that records every
path it is asked for, and orbax, TFDS and TensorBoard, which take URLs themselves, are checked for
the path they are handed."""

import json
import os

import numpy as np
import pytest
from etils.epath import testing

from dalle_jax import storage

BUCKET = "gs://bucket"


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """Every epath call on gs://bucket/... goes to tmp_path/bucket/...; yields the paths asked."""
    from etils.epath import gpath

    # With TensorFlow installed, epath sends gs:// to tf.io.gfile past the mockable backends.
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
    seen = []

    def local(path):
        path = os.fspath(path)
        if path.startswith(BUCKET):
            seen.append(path)
            return str(tmp_path / "bucket") + path[len(BUCKET):]
        return path

    def redirect(fn, path, *args, **kwargs):
        if args and isinstance(args[0], (str, os.PathLike)) and os.fspath(args[0]).startswith(BUCKET):
            args = (local(args[0]),) + args[1:]  # rename/replace/copy: the destination too
        target = local(path)
        if args and isinstance(args[0], str) and args[0][:1] in "wa":  # open for writing: a
            os.makedirs(os.path.dirname(target), exist_ok=True)  # bucket has no folders to make
        out = fn(target, *args, **kwargs)
        if fn.__name__ == "glob":  # a bucket lists its objects by their URLs
            out = [BUCKET + os.fspath(p)[len(str(tmp_path / "bucket")):] for p in out]
        return out

    names = ("copy", "exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "open", "remove",
             "rename", "replace", "rmtree", "stat", "walk")
    with testing.mock_epath(**{name: redirect for name in names}):
        yield seen, tmp_path / "bucket"


def test_absolute_leaves_urls_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.absolute("gs://bucket/run/checkpoints") == "gs://bucket/run/checkpoints"
    assert storage.absolute("run") == str(tmp_path / "run")


def test_metrics_go_to_the_bucket_and_resume_there(bucket, monkeypatch):
    import tensorflow as tf

    from dalle_jax.training.metrics import MetricWriter, read_metrics

    seen, root = bucket
    given = []

    class FakeWriter:  # TensorBoard writes URLs itself: check what it is handed
        def as_default(self, step):
            import contextlib
            return contextlib.nullcontext()

        def flush(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(tf.summary, "create_file_writer", lambda d: given.append(d) or FakeWriter())
    monkeypatch.setattr(tf.summary, "scalar", lambda *a, **k: None)
    w = MetricWriter(f"{BUCKET}/run")
    for step in (1, 2, 3):
        w.write(step, "train", {"loss": 1.0 / step})
    w.close()
    assert given == [f"{BUCKET}/run/tensorboard"]
    assert f"{BUCKET}/run/metrics.jsonl" in seen
    assert [r["step"] for r in read_metrics(f"{BUCKET}/run")] == [1, 2, 3]
    MetricWriter(f"{BUCKET}/run", tensorboard=False, resume_step=2).close()  # a resumed run
    with open(root / "run" / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2]


def test_tokenizer_grid_and_classifier_go_to_the_bucket(bucket, monkeypatch):
    from dalle_jax import visualize
    from dalle_jax.data.tokenizer import TextTokenizer
    from dalle_jax.evaluation import shape_classifier

    seen, root = bucket
    tok = TextTokenizer.train(["a red circle", "a blue square"] * 20, vocab_size=300, text_len=8)
    tok.save(f"{BUCKET}/run/tokenizer.json")
    assert (root / "run" / "tokenizer.json").exists()
    again = TextTokenizer.load(f"{BUCKET}/run/tokenizer.json", text_len=8)
    assert list(again.encode("a red circle")) == list(tok.encode("a red circle"))

    visualize.save_grid(np.zeros((2, 8, 8, 3), np.uint8), ["a", "b"], f"{BUCKET}/run/images/g.png")
    assert (root / "run" / "images" / "g.png").read_bytes()[:4] == b"\x89PNG"

    monkeypatch.setattr(shape_classifier, "train", lambda: {"w": np.arange(3.0)})
    path = f"{BUCKET}/run/shape_classifier.npz"
    assert shape_classifier.load_or_train(path)["w"].tolist() == [0.0, 1.0, 2.0]
    monkeypatch.setattr(shape_classifier, "train", lambda: pytest.fail("trained again"))
    assert shape_classifier.load_or_train(path)["w"].tolist() == [0.0, 1.0, 2.0]
    assert {f"{BUCKET}/run/tokenizer.json", path} <= set(seen)


def test_orbax_and_tfds_are_handed_the_url(monkeypatch):
    from dalle_jax.data import sources
    from dalle_jax.training import checkpoint

    given = {}

    class Stop(Exception):
        pass

    def manager(directory, **kwargs):
        given["orbax"] = directory
        raise Stop

    monkeypatch.setattr(checkpoint.ocp, "CheckpointManager", manager)
    with pytest.raises(Stop):
        checkpoint.Checkpointer(f"{BUCKET}/run")
    assert given["orbax"] == f"{BUCKET}/run/checkpoints"

    def builder(name, data_dir, **kwargs):
        given["tfds"] = data_dir
        raise Stop

    monkeypatch.setattr(sources.tfds, "builder", builder)
    with pytest.raises(Stop):
        sources.open_builder("mnist", f"{BUCKET}/data")
    assert given["tfds"] == f"{BUCKET}/data"


def test_prepared_data_is_found_in_the_bucket(bucket, monkeypatch):
    from dalle_jax.data import sources

    seen, root = bucket
    folder = root / "data" / "shapes" / "objects-32" / "1.2.0"
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text("{}")
    monkeypatch.setattr(sources.tfds, "builder_from_directory", lambda d: d)
    assert sources.open_builder("shapes", f"{BUCKET}/data") == f"{BUCKET}/data/shapes/objects-32/1.2.0"
