"""A split's records decoded once and kept in memory, for runs that read small images many times.

Reading a record of a prepared split decodes its PNG each time (about 0.8 ms for a 64 px `shapes`
image on a 2-core CPU, so 6–7 ms for a batch of 8, taken from the cores the training step runs
on, epoch after epoch). `DecodedRecords` reads
this process's records once, stacks the image field into one uint8 (or integer codes) array and
keeps the caption field beside it; the loader then indexes arrays. It holds the same records at
the same indices as the source it was read from, so shuffling, caption choice and the iterator
state are those of the uncached loader, batch for batch.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
from tqdm import tqdm

from dalle_jax.data.records import lookup_field, record_of

# A cache may take at most this share of the machine's physical memory.
MAX_MEMORY_SHARE = 0.5


def physical_memory_bytes() -> int:
    """Bytes of physical memory on this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class DecodedRecords:
    """Random-access source of `source[i]` for i in `indices`, decoded once into memory.

    Records hold only `image_key` and `caption_key` (nested as in the source). Every image must
    have the shape and dtype of the first; a record that differs raises a ValueError naming it
    (the uncached loader resizes such images on the fly: use it for mixed sizes).

    Args:
      source: a random-access source of dict records (e.g. `sources.open_split(...)`).
      indices: which of its records to hold, in order (default: all).
      image_key, caption_key: the fields kept.
      max_bytes: refuse (ValueError) to hold more image bytes than this (default: half of the
        machine's physical memory).
      show_progress: a progress bar while decoding.
    """

    def __init__(self, source, indices: Sequence[int] | None = None, *, image_key: str = "image",
                 caption_key: str = "caption", max_bytes: int | None = None,
                 show_progress: bool = True):
        indices = range(len(source)) if indices is None else indices
        if len(indices) == 0:
            raise ValueError("nothing to cache: no records")
        self.image_key, self.caption_key = image_key, caption_key
        record = source[indices[0]]
        first = np.asarray(lookup_field(record, image_key))
        need = first.nbytes * len(indices)
        limit = int(MAX_MEMORY_SHARE * physical_memory_bytes()) if max_bytes is None else max_bytes
        if need > limit:
            raise ValueError(
                f"data.cache: {len(indices)} images of shape {first.shape} ({first.dtype}) need "
                f"{need / 2**30:.2f} GiB, over the {limit / 2**30:.2f} GiB allowed; "
                "set data.cache=False"
            )
        self.images = np.empty((len(indices),) + first.shape, first.dtype)
        self.captions: list = []
        for n, i in enumerate(tqdm(indices, desc="decoding records into memory", unit="record",
                                   disable=not show_progress, mininterval=2.0)):
            record = record if n == 0 else source[i]
            image = np.asarray(lookup_field(record, image_key))
            if image.shape != first.shape or image.dtype != first.dtype:
                raise ValueError(
                    f"data.cache: record {i} has a {image_key!r} of shape {image.shape} "
                    f"({image.dtype}), the first has {first.shape} ({first.dtype}); cached "
                    "records must all have one shape: set data.cache=False"
                )
            self.images[n] = image
            self.captions.append(lookup_field(record, caption_key))
        logging.info("data.cache: %d records, %.1f MiB of images in memory", len(indices),
                     self.images.nbytes / 2**20)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return record_of({self.image_key: self.images[i], self.caption_key: self.captions[i]})
