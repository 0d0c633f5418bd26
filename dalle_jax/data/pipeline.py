"""From a config to data: prepare (idempotent), get the workdir's tokenizer, build a loader.

This is the one place that reads `config.data` / `config.text`; training, evaluation and the
`inspect` command call it.
"""

from __future__ import annotations

import logging
import os
from typing import Iterator

import ml_collections
from etils import epath
import tensorflow_datasets as tfds
from jax.sharding import Mesh

from dalle_jax.data import registry, sources
from dalle_jax.data.captions import caption_lines
from dalle_jax.data.loader import Loader
from dalle_jax.data.records import lookup_field
from dalle_jax.data.tokenizer import TextTokenizer

TOKENIZER_FILE = "tokenizer.json"


def prepare_data(data: ml_collections.ConfigDict) -> dict:
    """Prepares `data.dataset` as the config describes (reuses it if already there)."""
    if data.dataset == "image_codes":  # written by `data encode`, never prepared here
        path = sources.find_prepared(data.data_dir, "image_codes", data.config or None)
        return {"dataset": "image_codes", "config": os.path.basename(os.path.dirname(path))}
    if data.dataset == "shapes":
        options = dict(data.shapes.to_dict(), resolution=data.resolution)
    elif data.dataset == "image_text_folder":
        options = dict(source=data.source, resolution=data.resolution, name=data.config or None)
    else:
        options = {}
    return registry.prepare(data.dataset, data.data_dir, **options)


def _config_name(data: ml_collections.ConfigDict, prepared: dict | None) -> str | None:
    """The prepared config to read: the one `prepare_data` reported, else `data.config`."""
    return (prepared or {}).get("config") or data.config or None


def open_split(data: ml_collections.ConfigDict, split: str, prepared: dict | None = None):
    """Random-access source of `split` of the prepared data."""
    return sources.open_split(data.dataset, data.data_dir, split, _config_name(data, prepared))


def _train_captions(data: ml_collections.ConfigDict, prepared: dict | None, limit: int) -> Iterator[str]:
    """Caption lines of the first `limit` train records."""
    builder = sources.open_builder(data.dataset, data.data_dir, _config_name(data, prepared))
    # Our datasets have a top-level `image`: leave it encoded. Catalog feature trees vary: decode all.
    ours_with_images = data.dataset in sources.OUR_DATASETS and data.dataset != "image_codes"
    skip = {"image": tfds.decode.SkipDecoding()} if ours_with_images else None
    source = builder.as_data_source(split=data.train_split, decoders=skip)
    n = min(len(source), limit)
    for i in range(n):
        yield from caption_lines(lookup_field(source[i], data.caption_key))


def ensure_tokenizer(config: ml_collections.ConfigDict, workdir: str, prepared: dict | None = None) -> TextTokenizer:
    """The workdir's tokenizer; trained on the train captions and saved there the first time."""
    path = epath.Path(workdir) / TOKENIZER_FILE
    if path.exists():
        tok = TextTokenizer.load(path, config.text.text_len)
        if tok.vocab_size > config.text.vocab_size:
            raise ValueError(
                f"{path} has {tok.vocab_size} entries, more than text.vocab_size="
                f"{config.text.vocab_size}; use another workdir or a larger vocab_size"
            )
        return tok
    logging.info("training a %d-entry BPE on the train captions", config.text.vocab_size)
    tok = TextTokenizer.train(
        _train_captions(config.data, prepared, config.text.max_train_captions),
        vocab_size=config.text.vocab_size,
        text_len=config.text.text_len,
        min_frequency=config.text.min_frequency,
        show_progress=True,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(path)
    return tok


def make_loader(
    config: ml_collections.ConfigDict,
    split: str,
    tokenizer: TextTokenizer,
    *,
    mesh: Mesh | None = None,
    prepared: dict | None = None,
    num_epochs: int | None = None,
    shuffle: bool = True,
    bpe_dropout: float = 0.0,
    caption_dropout: float = 0.0,
    cache: bool = False,
) -> Loader:
    """A `Loader` over `split` configured by `config.data`; `bpe_dropout` and `caption_dropout`
    for training captions, `cache` (the records decoded once, in memory) for a split read many
    times."""
    data = config.data
    return Loader(
        open_split(data, split, prepared),
        tokenizer=tokenizer,
        resolution=data.resolution,
        global_batch_size=data.global_batch_size,
        seed=data.seed,
        mesh=mesh,
        num_epochs=num_epochs,
        shuffle=shuffle,
        worker_count=data.worker_count,
        image_key=data.image_key,
        caption_key=data.caption_key,
        bpe_dropout=bpe_dropout,
        caption_dropout=caption_dropout,
        cache=cache,
    )
