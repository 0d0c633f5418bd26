"""Loader: determinism, exact resume from a saved state, sharding on 8 fake devices, field mapping,
and `cache` (records decoded once into memory: the same batches)."""

import os

import jax
import numpy as np
import pytest

from dalle_jax.data.cache import DecodedRecords
from dalle_jax.data.captions import caption_lines
from dalle_jax.data.loader import Loader
from dalle_jax.data.records import record_of
from dalle_jax.data.tokenizer import TextTokenizer
from dalle_jax.parallel.mesh import make_mesh
from tests.helpers.paths import ROOT
from tests.helpers.records import records as _records

RES = 8


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.train([r["caption"] for r in _records()], vocab_size=300, text_len=12)


def _loader(tokenizer, records=None, **kw):
    kw.setdefault("global_batch_size", 8)
    kw.setdefault("seed", 3)
    return Loader(records or _records(), tokenizer=tokenizer, resolution=RES, **kw)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _same(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x["image"]), np.asarray(y["image"]))
        np.testing.assert_array_equal(np.asarray(x["text"]), np.asarray(y["text"]))
        assert list(x["caption"]) == list(y["caption"])


def test_same_seed_same_batches_other_seed_differs(tokenizer):
    a, b = _take(_loader(tokenizer), 6), _take(_loader(tokenizer), 6)
    _same(a, b)
    c = _take(_loader(tokenizer, seed=4), 6)
    assert any(list(x["caption"]) != list(y["caption"]) for x, y in zip(a, c))


def test_batch_shapes_and_epochs_reshuffle(tokenizer):
    batches = _take(_loader(tokenizer), 10)  # 80 examples = 2 epochs of 40
    for b in batches:
        assert b["image"].shape == (8, RES, RES, 3) and b["image"].dtype == np.uint8
        assert b["text"].shape == (8, 12) and b["text"].dtype == np.int32
    ids = [int(c.split()[1]) for b in batches for c in b["caption"] if c.startswith("item")]
    first = [int(c.split()[-1]) if c.startswith("second") else int(c.split()[1])
             for b in batches[:5] for c in b["caption"]]
    second = [int(c.split()[-1]) if c.startswith("second") else int(c.split()[1])
              for b in batches[5:] for c in b["caption"]]
    assert sorted(first) == sorted(second) == list(range(40))  # each epoch sees every record once
    assert first != second  # and in a new order
    assert ids  # some first lines were picked


def test_random_caption_line_and_tokens_match(tokenizer):
    b = next(_loader(tokenizer))
    lines = {c.split("\n")[0] for c in (r["caption"] for r in _records())}
    lines |= {c.split("\n")[1] for c in (r["caption"] for r in _records())}
    for caption, ids in zip(b["caption"], b["text"]):
        assert caption in lines
        np.testing.assert_array_equal(ids, tokenizer.encode(caption))


def test_bpe_dropout_varies_tokens_and_resumes_exactly(tokenizer):
    plain = _take(_loader(tokenizer), 5)
    dropped = _take(_loader(tokenizer, bpe_dropout=0.5), 5)
    assert [list(b["caption"]) for b in plain] == [list(b["caption"]) for b in dropped]
    assert any((a["text"] != b["text"]).any() for a, b in zip(plain, dropped))
    for b in dropped:  # the same text, in more (so possibly truncated) pieces
        for ids, caption in zip(b["text"], b["caption"]):
            assert tokenizer.normalize(caption).startswith(tokenizer.decode(ids))
    first = _loader(tokenizer, bpe_dropout=0.5)
    _take(first, 2)
    resumed = _loader(tokenizer, bpe_dropout=0.5)
    resumed.set_state(first.get_state())
    _same(_take(resumed, 3), dropped[2:])
    with pytest.raises(ValueError, match="bpe_dropout=1.5"):
        _loader(tokenizer, bpe_dropout=1.5)


def test_caption_dropout_gives_empty_text_at_its_rate_and_keeps_the_caption(tokenizer):
    from dalle_jax.data.tokenizer import PAD_ID
    batches = _take(_loader(tokenizer, caption_dropout=0.5), 10)
    empty = [bool((ids == PAD_ID).all()) for b in batches for ids in b["text"]]
    assert 20 <= sum(empty) <= 60, sum(empty)  # 80 draws at p = 0.5
    for b in batches:
        for ids, caption in zip(b["text"], b["caption"]):
            assert caption  # the caption string is kept for logs and evaluation
            if not (ids == PAD_ID).all():
                np.testing.assert_array_equal(ids, tokenizer.encode(caption))
    assert not any((ids == PAD_ID).all() for b in _take(_loader(tokenizer), 10) for ids in b["text"])
    with pytest.raises(ValueError, match="caption_dropout=1.0"):
        _loader(tokenizer, caption_dropout=1.0)


@pytest.mark.parametrize("workers,cache", [(0, False), (2, False), (0, True)])
def test_restore_state_continues_exactly(tokenizer, workers, cache):
    uninterrupted = _take(_loader(tokenizer), 9)
    first = _loader(tokenizer, worker_count=workers, cache=cache)
    _take(first, 4)
    state = first.get_state()
    first.close()
    resumed = _loader(tokenizer, worker_count=workers, cache=cache)
    resumed.set_state(state)
    _same(_take(resumed, 5), uninterrupted[4:])
    resumed.close()


@pytest.mark.parametrize("cache", [False, True])
def test_hosts_read_their_rows_of_the_one_process_batches(tokenizer, cache):
    """Two hosts' local batches, stacked, are the one-process batches row for row (same records,
    same caption choices, same epochs), and each host reads only its own half of every batch."""
    whole = list(_loader(tokenizer, global_batch_size=8, num_epochs=2, cache=cache))
    parts = [list(_loader(tokenizer, global_batch_size=8, process_index=p, process_count=2,
                          num_epochs=2, cache=cache)) for p in range(2)]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 10
    for batch, first, second in zip(whole, *parts):
        assert list(batch["caption"]) == list(first["caption"]) + list(second["caption"])
        for key in ("image", "text"):
            np.testing.assert_array_equal(batch[key], np.concatenate([first[key], second[key]]))
    seen = [{c for b in part[:5] for c in b["caption"]} for part in parts]
    assert seen[0].isdisjoint(seen[1]) and len(seen[0] | seen[1]) == 40  # epoch 1: each record once


class CountingSource:
    """A list of records that counts how often they are read."""

    def __init__(self, recs):
        self.recs, self.reads = recs, 0

    def __len__(self):
        return len(self.recs)

    def __getitem__(self, i):
        self.reads += 1
        return self.recs[i]


@pytest.mark.parametrize("workers", [0, 1])
def test_cache_gives_the_same_batches_and_reads_each_record_once(tokenizer, workers):
    plain = _take(_loader(tokenizer), 12)  # 96 examples: over two epochs of 40
    source = CountingSource(_records())
    cached = _loader(tokenizer, source, cache=True, worker_count=workers)
    reads_after_build = source.reads
    _same(_take(cached, 12), plain)
    cached.close()
    assert reads_after_build == 41  # the loader's field check, then each record once
    assert source.reads == reads_after_build  # batches come from memory


def test_cached_nested_fields_keep_their_place():
    recs = [record_of({"img/pixels": np.full((4, 4, 3), i, np.uint8), "meta/text": f"c{i}"})
            for i in range(5)]
    cache = DecodedRecords(recs, [1, 3], image_key="img/pixels", caption_key="meta/text",
                           show_progress=False)
    assert len(cache) == 2 and cache.images.shape == (2, 4, 4, 3)
    assert cache[1]["img"]["pixels"][0, 0, 0] == 3 and cache[1]["meta"]["text"] == "c3"


def test_cache_names_mixed_shapes_and_too_much_memory():
    recs = _records(4) + [{"image": np.zeros((9, 9, 3), np.uint8), "caption": "odd"}]
    with pytest.raises(ValueError, match=r"record 4 has a 'image' of shape \(9, 9, 3\)"):
        DecodedRecords(recs, show_progress=False)
    with pytest.raises(ValueError, match=r"4 images of shape \(8, 8, 3\).*set data.cache=False"):
        DecodedRecords(_records(4), max_bytes=100, show_progress=False)


def test_batch_is_sharded_over_data_axis(tokenizer):
    assert jax.device_count() == 8
    mesh = make_mesh({"data": -1, "fsdp": 2, "tensor": 1})
    b = next(_loader(tokenizer, mesh=mesh, global_batch_size=16))
    for name, shape in (("image", (16, RES, RES, 3)), ("text", (16, 12))):
        arr = b[name]
        assert isinstance(arr, jax.Array) and arr.shape == shape
        assert arr.sharding.spec[0] == ("data", "fsdp")
        shards = arr.addressable_shards
        assert len(shards) == 8 and {s.data.shape[0] for s in shards} == {2}
    host = next(_loader(tokenizer, global_batch_size=16))
    np.testing.assert_array_equal(np.asarray(b["image"]), host["image"])


def test_bad_batch_sizes_are_named(tokenizer):
    mesh = make_mesh({"data": -1})
    with pytest.raises(ValueError, match="global_batch_size=12"):
        _loader(tokenizer, mesh=mesh, global_batch_size=12)
    with pytest.raises(ValueError, match="the split has 40 records, fewer than one batch of 64"):
        _loader(tokenizer, global_batch_size=64)


def test_other_image_sizes_are_resized_and_nested_fields(tokenizer):
    recs = [{"img": {"pixels": np.full((5, 9), 200, np.uint8)}, "captions": {"text": np.array([b"a", b"b"])}}
            for _ in range(8)]
    b = next(_loader(tokenizer, recs, image_key="img/pixels", caption_key="captions/text"))
    assert b["image"].shape == (8, RES, RES, 3) and (b["image"] == 200).all()
    assert set(b["caption"]) <= {"a", "b"}
    with pytest.raises(ValueError, match="field 'nope' not in example"):
        _loader(tokenizer, recs, image_key="nope", caption_key="captions/text")


def test_caption_lines():
    assert caption_lines(b"x\n\n y \n") == ["x", "y"]
    assert caption_lines(np.array([b"a", b"b\nc"])) == ["a", "b", "c"]


def test_two_hosts_on_loopback_build_one_global_batch(tokenizer, tmp_path):
    """Two processes (2 CPU devices each) stand in for two hosts: each loads its half."""
    import json
    import socket
    import subprocess
    import sys

    path = str(tmp_path / "tok.json")
    tokenizer.save(path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    script = os.path.join(ROOT, "tests", "helpers", "two_host_loader.py")
    procs = [subprocess.Popen([sys.executable, script, str(i), port, path], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    results = sorted((json.loads(out.strip().splitlines()[-1]) for out, _ in outs),
                     key=lambda r: r["process"])
    assert [r["count"] for r in results] == [2, 2] and results[0]["devices"] == 4
    assert results[0]["shape"] == [8, 12] and results[0]["checksum"] == results[1]["checksum"]
    # The global batch is the one-process batch: host 0 holds its first half, host 1 the second.
    whole = next(_loader(tokenizer, seed=5, global_batch_size=8))
    assert results[0]["local_captions"] + results[1]["local_captions"] == list(whole["caption"])
    text = np.asarray(whole["text"]).astype(np.float32)
    assert results[0]["checksum"] == float(np.sum(text * np.arange(1, 9)[:, None]))
    assert sorted(results[0]["local_rows"] + results[1]["local_rows"]) == [0, 2, 4, 6]


def test_prepared_shapes_through_worker_processes_resume_exactly(tmp_path):
    """The real path: a prepared TFDS split, read by 2 grain worker processes, restored mid-way."""
    from dalle_jax.data import sources
    from dalle_jax.data.shapes import shapes

    summary = shapes.prepare(str(tmp_path), resolution=32, num_train=48, num_validation=4,
                             num_test=4, num_heldout=4)
    source = sources.open_split("shapes", str(tmp_path), "train")
    tok = TextTokenizer.train([source[i]["caption"].decode() for i in range(len(source))], 300, 12)

    def make(workers):
        return Loader(source, tokenizer=tok, resolution=32, global_batch_size=8, seed=1,
                      worker_count=workers)

    reference = _take(make(0), 8)
    first = make(2)
    _same(_take(first, 3), reference[:3])
    state = first.get_state()
    first.close()
    resumed = make(2)
    resumed.set_state(state)
    _same(_take(resumed, 5), reference[3:])
    resumed.close()
    assert summary["splits"]["train"] == 48


def test_a_saved_position_resumes_exactly_under_another_process_count(tokenizer, caplog):
    """Hosts read their rows of the same global batches, so a position saved by two processes
    continues as one process (and one process's as four) with the very next global batch."""
    import logging

    from dalle_jax.training.checkpoint import _own_data_state

    def hosts(count):
        return [_loader(tokenizer, process_index=i, process_count=count) for i in range(count)]

    two = hosts(2)
    for it in two:
        _take(it, 3)
    saved = {"processes": [it.get_state() for it in two]}
    following = [next(it) for it in two]
    one = _loader(tokenizer)
    one.set_state(_own_data_state(saved, 3, index=0, count=1))
    got = next(one)
    assert list(got["caption"]) == [c for b in following for c in b["caption"]]
    np.testing.assert_array_equal(got["text"], np.concatenate([b["text"] for b in following]))

    four = hosts(4)
    for i, it in enumerate(four):
        it.set_state(_own_data_state({"processes": [one.get_state()]}, 4, index=i, count=4))
    np.testing.assert_array_equal(np.concatenate([next(it)["image"] for it in four]), next(one)["image"])

    assert _own_data_state(saved, 3, index=1, count=2) == saved["processes"][1]
    assert _own_data_state(saved["processes"][0], 3, index=0, count=1) == saved["processes"][0]
    with caplog.at_level(logging.WARNING):  # positions that disagree cannot be split anew
        assert _own_data_state({"processes": [{"next_index": 3}, {"next_index": 4}]}, 7,
                               index=0, count=1) is None
    assert "step 7 holds 2 processes' data positions that disagree, this run has 1" in caplog.text
