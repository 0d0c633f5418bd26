"""`image_codes`: the codes an image tokenizer gives every image of a prepared dataset.

    python -m dalle_jax.data encode --tokenizer=workdirs/dvae_shapes --dataset=shapes --data_dir=data
    python -m dalle_jax.data encode --tokenizer=vqgan:weights/vqgan-f16-16384 --resolution=256 …

writes `DATA_DIR/image_codes/<source>-<resolution>px-<step N | vqgan>-<digest>/1.0.0/` with, per
record, `codes` (g, g) int32, `caption` (all caption lines of the source record) and `index` (its
position in the source split), so stage 2 reads codes and never runs the encoder while it trains.
Its metadata's `dvae_workdir` is the tokenizer's reference, which `sample` decodes with. Images are
encoded in batches: a dVAE's parameter EMA and argmax codes (no gumbel noise), or a VQGAN's
nearest codebook entries (`generation.codec`). In a multi-host run
every process encodes its own share of each round of `hosts × batch_size` records on its own
devices, with no collective in the encoder, so throughput grows with hosts; the codes (a few bytes
per image) are gathered each round and the first process writes the one dataset, record for
record what a one-process encode writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import jax
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from tqdm.auto import tqdm

from dalle_jax.data import sources
from dalle_jax.data.captions import caption_lines
from dalle_jax.data.imaging import resize_center_crop
from dalle_jax.data.records import lookup_field
from dalle_jax.data.local_info import LocalDatasetInfo
from dalle_jax.data.summary import prepared_summary
from dalle_jax.parallel import hosts
from dalle_jax.storage import absolute


@dataclasses.dataclass(eq=False)
class CodesConfig(tfds.core.BuilderConfig):
    """Where the images come from and which model encodes them."""

    source_dataset: str = "shapes"
    source_data_dir: str = "data"
    source_config: str = ""
    dvae_workdir: str = ""  # the image tokenizer's reference: a dVAE workdir or `vqgan:…`
    dvae_step: int = 0
    grid: int = 8
    vocab_size: int = 512
    resolution: int = 64
    image_key: str = "image"
    caption_key: str = "caption"
    batch_size: int = 64
    splits: tuple = ("train",)


class ImageCodes(tfds.core.GeneratorBasedBuilder):
    """Image codes with their captions."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [CodesConfig(name="placeholder", description="use prepare()")]

    def __init__(self, *, codec=None, **kwargs):
        super().__init__(**kwargs)
        self.codec = codec  # the image tokenizer; needed only to generate

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return LocalDatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "codes": tfds.features.Tensor(shape=(cfg.grid, cfg.grid), dtype=np.int32),
                "caption": tfds.features.Text(),
                "index": np.int64,
            }),
            metadata=tfds.core.MetadataDict(vocab_size=cfg.vocab_size, grid=cfg.grid,
                                            dvae_workdir=cfg.dvae_workdir, dvae_step=cfg.dvae_step),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split) for split in self.builder_config.splits}

    def _image(self, record) -> np.ndarray:
        r = self.builder_config.resolution
        image = np.asarray(lookup_field(record, self.builder_config.image_key))
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if image.shape != (r, r, 3) or image.dtype != np.uint8:
            image = resize_center_crop(Image.fromarray(image), r)
        return image

    def _encoded(self, split: str):
        """(index, record, codes) of every record of `split` in order, on the first process;
        every process must iterate it, as each encodes its own slice of every round."""
        cfg = self.builder_config
        source = sources.open_split(cfg.source_dataset, cfg.source_data_dir, split, cfg.source_config or None)
        n, batch = len(source), cfg.batch_size
        count, me = jax.process_count(), jax.process_index()
        empty = np.zeros((0, cfg.grid, cfg.grid), np.int32)
        for start in tqdm(range(0, n, batch * count), desc=f"encoding {split}", unit="round",
                          disable=None if hosts.is_primary() else True):
            mine = range(min(n, start + me * batch), min(n, start + (me + 1) * batch))
            wanted = range(start, min(n, start + batch * count)) if hosts.is_primary() else mine
            records = {i: source[i] for i in wanted}  # the first process needs every caption
            codes = (self.codec.encode(np.stack([self._image(records[i]) for i in mine]))
                     if len(mine) else empty)
            codes = hosts.gather_rows(codes.astype(np.int32), batch)
            if hosts.is_primary():
                for i, c in enumerate(codes, start):
                    yield i, records[i], c

    def _generate_examples(self, split: str):
        for i, record, codes in self._encoded(split):
            caption = "\n".join(caption_lines(lookup_field(record, self.builder_config.caption_key)))
            yield i, {"codes": codes, "caption": caption, "index": i}


def prepare(codec, dataset: str, data_dir: str, *, config: str | None = None,
            splits: tuple[str, ...] | None = None, out_data_dir: str | None = None,
            batch_size: int = 64, resolution: int | None = None, image_key: str | None = None,
            caption_key: str | None = None) -> dict:
    """Encodes `splits` (default: all) of a prepared dataset with `codec`, an image tokenizer
    (`generation.codec.load_codec(reference)`: a dVAE workdir or a VQGAN; it has `reference`,
    `label`, `step`, `vocab_size`, `grid_scale`, `resolution`, `image_key`, `caption_key`,
    `encode` and `on_this_host`). `resolution` (default the codec's) is the side images are
    resized and cropped to; the keys (default the codec's) name the source's image and caption
    fields. Summary out."""
    resolution = resolution or codec.resolution
    if not resolution or resolution <= 0 or resolution % codec.grid_scale:
        raise ValueError(f"resolution={resolution} must be a positive multiple of "
                         f"{codec.grid_scale}, the image tokenizer's pixels per code")
    source = sources.open_builder(dataset, data_dir, config)
    have = sorted(source.info.splits)
    splits = tuple(splits or have)
    missing = [s for s in splits if s not in have]
    if missing:
        raise ValueError(f"dataset {dataset!r} has no split(s) {missing}; it has {have}")
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size} must be positive")
    source_config = source.builder_config.name if source.builder_config else ""
    options = dict(source_dataset=dataset, source_data_dir=absolute(data_dir),
                   source_config=source_config or (config or ""),
                   dvae_workdir=codec.reference, dvae_step=codec.step,
                   grid=resolution // codec.grid_scale, vocab_size=codec.vocab_size,
                   resolution=resolution, image_key=image_key or codec.image_key,
                   caption_key=caption_key or codec.caption_key, splits=splits)
    digest = hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:6]
    name = f"{dataset}-{resolution}px-{codec.label}-{digest}"
    builder = ImageCodes(config=CodesConfig(name=name, batch_size=batch_size, **options),
                         data_dir=out_data_dir or data_dir, codec=codec.on_this_host())
    if not hosts.gather_json(builder.is_prepared())[0]:  # what the first process found
        if hosts.is_primary():
            builder.download_and_prepare(file_format="array_record")
        else:  # every host encodes its share of each round; the first process writes the records
            for split in splits:
                for _ in builder._encoded(split):
                    pass
        hosts.barrier(f"image_codes {name} written")
    return prepared_summary("image_codes", name, builder.data_dir,
                            {s: info.num_examples for s, info in builder.info.splits.items()}, {})
