"""TFDS builder importing a user's images and captions into array_record, and `prepare()`.

Build it with
  python -m dalle_jax.data prepare --dataset=image_text_folder --source=PATH --data_dir=DIR [--name=N]
Every image becomes RGB at `resolution` (shorter side resized, centre crop). What cannot become an
example is skipped, counted by reason and listed in `skipped.jsonl` beside the prepared data;
a good file is never dropped. `validation` takes a stable hash-chosen share of the images (all
captions of one image land in the same split).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import json
import logging
import os
import re
import shutil

import tensorflow_datasets as tfds
from PIL import Image, ImageFile

from dalle_jax.data.image_text_folder.sources import Item, Skip, SourceError, discover
from dalle_jax.data.imaging import resize_center_crop
from dalle_jax.data.local_info import LocalDatasetInfo
from dalle_jax.data.summary import SKIP_REASONS, prepared_summary

CAPTION_MODES = ("each_line", "random")
IMAGE_FORMATS = ("png", "jpeg")
SKIPPED_FILE = "skipped.jsonl"

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
    """Options of one imported dataset."""

    source: str = ""
    resolution: int = 64
    caption_mode: str = "each_line"
    validation_fraction: float = 0.05
    image_field: str = "image"
    caption_field: str = "caption"
    image_format: str = "png"
    splits: tuple = ("train",)


def split_of(key: str, validation_fraction: float) -> str:
    """'validation' for a stable `validation_fraction` share of keys, else 'train'."""
    h = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2**64
    return "validation" if h < validation_fraction else "train"


def decode_image(data: bytes, resolution: int):
    """Bytes to uint8 (R, R, 3); raises on unreadable or truncated data."""
    if not data:
        raise ValueError("zero-byte file")
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # TFDS's create_thumbnail sets it True process-wide
    with Image.open(io.BytesIO(data)) as img:
        img.load()  # decodes fully: a truncated file raises here
        return resize_center_crop(img, resolution)


class ImageTextFolder(tfds.core.GeneratorBasedBuilder):
    """A user's captioned images (folder tree, CSV/JSONL manifest, webdataset tar shards)."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [FolderConfig(name="placeholder", description="use prepare()")]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.skipped: dict[tuple, dict] = {}  # (key, path, reason) -> {"path", "reason", "detail"}

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return LocalDatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(cfg.resolution, cfg.resolution, 3),
                                             encoding_format=cfg.image_format),
                "caption": tfds.features.Text(),
                "source": tfds.features.Text(),
            }),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split) for split in self.builder_config.splits}

    def _skip(self, skip: Skip) -> None:
        ident = (skip.key, skip.path, skip.reason)  # each split's pass sees the same skips again
        if ident not in self.skipped:
            log.warning("skipping %s (%s): %s", skip.path, skip.reason, skip.detail)
            self.skipped[ident] = {"path": skip.path, "reason": skip.reason, "detail": skip.detail}

    def _download_and_prepare(self, dl_manager, download_config=None):
        """Generates the splits, then lists the skips in the still-incomplete folder.

        TFDS renames that folder into place only after this returns, so prepared data always
        comes with its `skipped.jsonl` (an interrupted run leaves neither).
        """
        super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
        with open(os.path.join(self.data_dir, SKIPPED_FILE), "w", encoding="utf-8") as f:
            for row in self.skipped.values():
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def _generate_examples(self, split: str):
        cfg = self.builder_config
        for candidate in discover(cfg.source, cfg.image_field, cfg.caption_field):
            if isinstance(candidate, Skip):
                self._skip(candidate)
                continue
            if split_of(candidate.key, cfg.validation_fraction) != split:
                continue
            try:
                image = decode_image(candidate.read(), cfg.resolution)
            except Exception as e:  # noqa: BLE001 - any undecodable file is skipped, never fatal
                self._skip(Skip(candidate.path, "corrupt_image", f"{type(e).__name__}: {e}",
                                candidate.key))
                continue
            captions = candidate.lines if cfg.caption_mode == "each_line" else ["\n".join(candidate.lines)]
            for i, caption in enumerate(captions):
                yield f"{candidate.key}#{i}", {"image": image, "caption": caption, "source": candidate.path}


def _config_name(name: str, options: dict) -> str:
    """`<name>-<R>px-<digest of every option>`: other options never reuse stale data."""
    clean = re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("_.-") or "data"
    digest = hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:6]
    return f"{clean}-{options['resolution']}px-{digest}"


def _plan_splits(source, validation_fraction, image_field, caption_field) -> tuple:
    """Splits that get at least one candidate (no image decoded); errors if none is usable."""
    splits, reasons = set(), {}
    for c in discover(source, image_field, caption_field):
        if isinstance(c, Item):
            splits.add(split_of(c.key, validation_fraction))
        else:
            reasons[c.reason] = reasons.get(c.reason, 0) + 1
    if not splits:
        raise SourceError(f"source {source!r} has no usable image+caption pair (skipped: {reasons})")
    return tuple(s for s in ("train", "validation") if s in splits)


def _build(data_dir: str, config_name: str, options: dict, splits: list[str]) -> ImageTextFolder:
    """Writes the dataset; a split whose every image turned out unreadable is left out."""
    skipped: dict[tuple, dict] = {}  # kept across attempts: a dropped split's skips still count
    while True:
        builder = ImageTextFolder(config=FolderConfig(name=config_name, splits=tuple(splits), **options),
                                  data_dir=data_dir)
        builder.skipped = skipped
        try:
            builder.download_and_prepare(file_format="array_record")
            break
        except AssertionError as e:  # TFDS refuses a split with no example
            empty = [s for s in splits if f'split "{s}"' in str(e)]
            if "No examples were yielded" not in str(e) or not empty:
                raise
            for leftover in glob.glob(os.path.join(os.path.dirname(builder.data_dir), "incomplete.*")):
                shutil.rmtree(leftover, ignore_errors=True)
            splits.remove(empty[0])
            if not splits:
                counts = {r: sum(v["reason"] == r for v in skipped.values()) for r in SKIP_REASONS}
                raise SourceError(
                    f"source {options['source']!r} has no readable image: skipped {counts}"
                ) from None
    return builder


def prepare(
    data_dir: str,
    source: str,
    *,
    name: str | None = None,
    resolution: int = 64,
    caption_mode: str = "each_line",
    validation_fraction: float = 0.05,
    image_field: str = "image",
    caption_field: str = "caption",
    image_format: str = "png",
) -> dict:
    """Imports `source` under `data_dir` (or reuses an import with the same options); summary out."""
    if caption_mode not in CAPTION_MODES:
        raise ValueError(f"caption_mode={caption_mode!r}; choose one of {list(CAPTION_MODES)}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format={image_format!r}; choose one of {list(IMAGE_FORMATS)}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not 8 <= resolution <= 1024:
        raise ValueError(f"resolution={resolution} is outside [8, 1024]")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction={validation_fraction} is outside [0, 1)")
    source = os.path.abspath(source)
    options = dict(source=source, resolution=resolution, caption_mode=caption_mode,
                   validation_fraction=validation_fraction, image_field=image_field,
                   caption_field=caption_field, image_format=image_format)
    config_name = _config_name(name or os.path.basename(source.rstrip("/")), options)
    builder = ImageTextFolder(config=FolderConfig(name=config_name, **options), data_dir=data_dir)
    if not builder.is_prepared():
        builder = _build(data_dir, config_name, options,
                         list(_plan_splits(source, validation_fraction, image_field, caption_field)))
    return prepared_summary("image_text_folder", config_name, builder.data_dir,
                            {s: info.num_examples for s, info in builder.info.splits.items()},
                            read_skip_counts(builder.data_dir))


def read_skip_counts(path: str) -> dict[str, int]:
    """Skip counts by reason, read back from `skipped.jsonl` in a prepared dataset's folder."""
    counts = dict.fromkeys(SKIP_REASONS, 0)
    try:
        with open(os.path.join(path, SKIPPED_FILE), encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    reason = json.loads(line)["reason"]
                    counts[reason] = counts.get(reason, 0) + 1
    except FileNotFoundError:
        log.warning("%s has no %s: skip counts unknown, reported as 0", path, SKIPPED_FILE)
    return counts
