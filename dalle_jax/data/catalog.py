"""Any TFDS catalog dataset with an image and a text field (e.g. `coco_captions`), by name.

Preparing downloads through TFDS's own builder (network needed once, as TFDS does) and writes
array_record so grain can read it; the loader maps fields with `data.image_key` / `data.caption_key`
(nested with '/', e.g. 'captions/text').
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from dalle_jax.data.summary import prepared_summary

def is_catalog_name(name: str) -> bool:
    """True if `name` (optionally `name/config`) is a builder in the installed TFDS catalog."""
    return name.split("/")[0].split(":")[0] in set(tfds.list_builders(with_community_datasets=False))


def prepare(name: str, data_dir: str) -> dict:
    """Downloads and prepares a catalog dataset as array_record; returns the split summary."""
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(file_format="array_record")
    return prepared_summary(
        name, builder.builder_config.name if builder.builder_config else "", builder.data_dir,
        {s: info.num_examples for s, info in builder.info.splits.items()},
    )
