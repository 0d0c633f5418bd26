"""data.cache: the decoded-in-memory loader gives the uncached loader's batches and resumes exactly."""

import numpy as np
import pytest

from dalle_jax.data.cache import DecodedRecords
from dalle_jax.data.loader import Loader
from dalle_jax.data.records import record_of
from dalle_jax.data.tokenizer import TextTokenizer
from tests.helpers.records import records as _records

RES = 8


class CountingSource:
    """A list of records that counts how often each is read."""

    def __init__(self, recs):
        self.recs, self.reads = recs, 0

    def __len__(self):
        return len(self.recs)

    def __getitem__(self, i):
        self.reads += 1
        return self.recs[i]


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.train([r["caption"] for r in _records()], vocab_size=300, text_len=12)


def _loader(tokenizer, source, **kw):
    return Loader(source, tokenizer=tokenizer, resolution=RES, global_batch_size=8, seed=3, **kw)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for k in ("image", "text"):
            np.testing.assert_array_equal(x[k], y[k])
        assert list(x["caption"]) == list(y["caption"])


@pytest.mark.parametrize("workers", [0, 1])
def test_cached_batches_equal_uncached_and_read_each_record_once(tokenizer, workers):
    plain = _take(_loader(tokenizer, _records()), 12)  # 96 examples: over two epochs of 40
    source = CountingSource(_records())
    cached = _loader(tokenizer, source, cache=True, worker_count=workers)
    reads_after_build = source.reads
    _assert_same(_take(cached, 12), plain)
    cached.close()
    assert reads_after_build == 41  # the loader's field check, then each record once
    assert source.reads == reads_after_build  # batches come from memory


def test_cached_loader_resumes_exactly(tokenizer):
    uninterrupted = _take(_loader(tokenizer, _records(), cache=True), 9)
    first = _loader(tokenizer, _records(), cache=True)
    _take(first, 4)
    state = first.get_state()
    resumed = _loader(tokenizer, _records(), cache=True)
    resumed.set_state(state)
    _assert_same(_take(resumed, 5), uninterrupted[4:])


def test_cache_holds_only_this_process_share(tokenizer):
    seen = []
    for p in range(2):
        it = _loader(tokenizer, _records(), cache=True, process_index=p, process_count=2,
                     shuffle=False, num_epochs=1)
        seen.append({c.split("\n")[0] for b in it for c in b["caption"]})
        plain = _loader(tokenizer, _records(), process_index=p, process_count=2, shuffle=False,
                        num_epochs=1)
        assert seen[-1] == {c.split("\n")[0] for b in plain for c in b["caption"]}
    assert len(seen[0]) + len(seen[1]) == 40 and seen[0].isdisjoint(seen[1])


def test_nested_fields_keep_their_place():
    recs = [record_of({"img/pixels": np.full((4, 4, 3), i, np.uint8), "meta/text": f"c{i}"})
            for i in range(5)]
    cache = DecodedRecords(recs, [1, 3], image_key="img/pixels", caption_key="meta/text",
                           show_progress=False)
    assert len(cache) == 2 and cache.images.shape == (2, 4, 4, 3)
    assert cache[1]["img"]["pixels"][0, 0, 0] == 3 and cache[1]["meta"]["text"] == "c3"


def test_mixed_shapes_and_too_much_memory_are_named():
    recs = _records(4) + [{"image": np.zeros((9, 9, 3), np.uint8), "caption": "odd"}]
    with pytest.raises(ValueError, match=r"record 4 has a 'image' of shape \(9, 9, 3\)"):
        DecodedRecords(recs, show_progress=False)
    with pytest.raises(ValueError, match=r"4 images of shape \(8, 8, 3\).*set data.cache=False"):
        DecodedRecords(_records(4), max_bytes=100, show_progress=False)
