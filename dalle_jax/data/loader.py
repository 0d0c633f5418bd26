"""The input pipeline: grain over a random-access split, to global `jax.Array` batches on a mesh.

Every process sees the same global order: the records shuffled with a seed (reshuffled each
epoch), each turned into `{image, text, caption}` (one caption line picked at random when a record
holds several; images of another size resized and centre-cropped) with randomness keyed by its
global position, cut into global batches. Process p reads and decodes only its own contiguous
rows of each global batch (`HostRows`), optionally in worker processes, and the batch leaves the
loader as global arrays sharded over the mesh's batch axes, so a run's batches, row for row, do
not depend on how many hosts it runs on. The iterator state can be saved and restored exactly.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Iterator

import grain
from absl import flags
import jax
import numpy as np
from jax.sharding import Mesh
from PIL import Image

from dalle_jax.data.cache import DecodedRecords
from dalle_jax.data.captions import caption_lines
from dalle_jax.data.imaging import resize_center_crop
from dalle_jax.data.records import lookup_field
from dalle_jax.data.tokenizer import TextTokenizer
from dalle_jax.parallel.mesh import batch_sharding, num_batch_shards

# Batch fields that go to devices; `caption` stays on the host as strings.
DEVICE_FIELDS = ("image", "codes", "text")


@dataclasses.dataclass
class ToExample(grain.transforms.RandomMap):
    """Record → {image uint8 (R, R, 3), text int32 (text_len,), caption str}.

    A record whose `image_key` field is a 2-D grid of wider-than-8-bit integers (an encoded
    dataset's `codes`) gives `codes` int32 (g, g) instead of `image`; 2-D uint8 is a grey image.
    """

    tokenizer_json: str
    text_len: int
    resolution: int
    image_key: str = "image"
    caption_key: str = "caption"
    bpe_dropout: float = 0.0
    caption_dropout: float = 0.0

    def __post_init__(self):
        self._tokenizer = None

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        if self._tokenizer is None:  # built lazily, once per worker process
            self._tokenizer = TextTokenizer.from_json(self.tokenizer_json, self.text_len)
        lines = caption_lines(lookup_field(element, self.caption_key))
        caption = lines[int(rng.integers(len(lines)))] if lines else ""
        image = np.asarray(lookup_field(element, self.image_key))
        if self.caption_dropout and rng.random() < self.caption_dropout:
            text = self._tokenizer.encode("")  # all padding: the unconditional input of guidance
        else:
            text = self._tokenizer.encode(caption, dropout=self.bpe_dropout, rng=rng)
        if image.ndim == 2 and np.issubdtype(image.dtype, np.integer) and image.dtype != np.uint8:
            return {"codes": image.astype(np.int32), "text": text, "caption": caption}
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if image.shape != (self.resolution, self.resolution, 3) or image.dtype != np.uint8:
            image = resize_center_crop(Image.fromarray(image), self.resolution)
        return {"image": image, "text": text, "caption": caption}


class HostRows(grain.MapDataset):
    """Process `index`'s rows of each global batch of `global_batch` consecutive elements: its
    element i is the parent's (i // b) · global_batch + index · b + i % b, b = global_batch /
    count. A last global batch that the parent cannot fill is left out on every process."""

    def __init__(self, parent: grain.MapDataset, global_batch: int, index: int, count: int):
        super().__init__(parent)
        self._global, self._local, self._offset = global_batch, global_batch // count, index
        self._len = (len(parent) // global_batch) * self._local

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.slice(i)
        batch, row = divmod(i, self._local)
        return self._parent[batch * self._global + self._offset * self._local + row]

    def __str__(self) -> str:
        return f"HostRows(global_batch={self._global}, local={self._local}, index={self._offset})"


class Loader:
    """Iterator of batches from one split; `get_state`/`set_state` make it resumable.

    Args:
      source: a random-access source (e.g. `sources.open_split(...)`) of dict records.
      tokenizer: the text tokenizer; its `text_len` fixes the text shape.
      resolution: side of the square images handed out.
      global_batch_size: examples per step over all processes.
      seed: shuffling and caption-choice seed.
      mesh: if given, batches are global `jax.Array`s sharded over its batch axes; else numpy.
      num_epochs: None repeats forever.
      shuffle: shuffle records (and reshuffle each epoch).
      worker_count: grain worker processes (0: in this process).
      image_key, caption_key: record fields (nested with '/', e.g. 'captions/text').
      bpe_dropout: probability of skipping each BPE merge of a caption (training only; 0: off).
      caption_dropout: probability of replacing a caption's tokens by padding only (training only;
        0: off), which teaches the model the unconditional logits of classifier-free guidance.
      cache: decode the split once and keep it in memory (`cache.DecodedRecords`; same batches,
        same iterator state); for small images read many times. Every process holds all of it,
        as a process's rows come from the whole split as epochs reshuffle.
      process_index, process_count: this host's share (default: from JAX).
    """

    def __init__(
        self,
        source,
        *,
        tokenizer: TextTokenizer,
        resolution: int,
        global_batch_size: int,
        seed: int = 0,
        mesh: Mesh | None = None,
        num_epochs: int | None = None,
        shuffle: bool = True,
        worker_count: int = 0,
        image_key: str = "image",
        caption_key: str = "caption",
        bpe_dropout: float = 0.0,
        caption_dropout: float = 0.0,
        cache: bool = False,
        process_index: int | None = None,
        process_count: int | None = None,
    ):
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
        if global_batch_size <= 0 or global_batch_size % process_count:
            raise ValueError(
                f"global_batch_size={global_batch_size} must be a positive multiple of the "
                f"process count {process_count}"
            )
        if mesh is not None and global_batch_size % num_batch_shards(mesh):
            raise ValueError(
                f"global_batch_size={global_batch_size} must be divisible by the "
                f"{num_batch_shards(mesh)} batch shards of mesh {dict(mesh.shape)}"
            )
        if not 0.0 <= bpe_dropout < 1.0:
            raise ValueError(f"text.bpe_dropout={bpe_dropout} must be in [0, 1)")
        if not 0.0 <= caption_dropout < 1.0:
            raise ValueError(f"text.caption_dropout={caption_dropout} must be in [0, 1)")
        if len(source) == 0:
            raise ValueError("the data source is empty")
        first = source[0]
        for key in (image_key, caption_key):
            try:
                lookup_field(first, key)
            except KeyError as e:
                raise ValueError(e.args[0]) from None
        self.mesh = mesh
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // process_count

        if cache:
            source = DecodedRecords(source, image_key=image_key, caption_key=caption_key,
                                    show_progress=process_index == 0)
        ds = grain.MapDataset.source(source)
        records = len(ds)
        if records < global_batch_size:
            raise ValueError(f"the split has {records} records, fewer than one batch of "
                             f"{global_batch_size}")
        if shuffle:
            ds = ds.shuffle(seed=seed)
        ds = ds.repeat(num_epochs)
        ds = ds.random_map(
            ToExample(tokenizer.to_json(), tokenizer.text_len, resolution, image_key, caption_key,
                      bpe_dropout, caption_dropout),
            seed=seed,
        )
        dropped = (records * num_epochs) % global_batch_size if num_epochs is not None else 0
        if dropped:
            logging.warning("%d of %d records do not fill a last batch of %d and are not used",
                            dropped, records * num_epochs, global_batch_size)
        ds = HostRows(ds, global_batch_size, process_index, process_count)
        ds = ds.batch(self.local_batch_size, drop_remainder=True)
        it_ds = ds.to_iter_dataset()
        if worker_count > 0:
            if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; notebooks never parse
                flags.FLAGS.mark_as_parsed()
            it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
        self._it = iter(it_ds)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        local = next(self._it)
        if self.mesh is None:
            return local
        out = {"caption": local["caption"]}
        for name in (f for f in DEVICE_FIELDS if f in local):
            arr = local[name]
            out[name] = jax.make_array_from_process_local_data(
                batch_sharding(self.mesh, arr.ndim), arr,
                (self.global_batch_size,) + arr.shape[1:],
            )
        return out

    def get_state(self) -> dict:
        """The iterator's position; restoring it continues with the very next batch."""
        return self._it.get_state()

    def set_state(self, state: dict) -> None:
        """Continues from a state returned by `get_state`."""
        self._it.set_state(state)

    def close(self) -> None:
        """Stops worker processes, if any."""
        close = getattr(self._it, "close", None)
        if close is not None:
            close()
