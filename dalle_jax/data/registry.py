"""Preparing a dataset by name: the built-in `shapes`, a user's `image_text_folder`, or TFDS's catalog.

Each preparer returns the same summary: `{"dataset", "config", "path", "splits", "skipped"}`.
"""

from __future__ import annotations

from typing import Any, Callable


class UnknownDatasetError(ValueError):
    """The dataset name is neither ours nor in the TFDS catalog."""


def _shapes(data_dir: str, **options: Any) -> dict:
    from dalle_jax.data.shapes import shapes  # imported on use: building data needs TF

    return shapes.prepare(data_dir, **options)


def _image_text_folder(data_dir: str, **options: Any) -> dict:
    if not options.get("source"):
        raise ValueError("dataset 'image_text_folder' needs --source=PATH (a folder, manifest or .tar)")
    from dalle_jax.data.image_text_folder import image_text_folder

    return image_text_folder.prepare(data_dir, options.pop("source"), **options)


# Options each preparer accepts (the CLI passes only these, and names any other it was given).
PREPARERS: dict[str, tuple[Callable[..., dict], tuple[str, ...]]] = {
    "shapes": (
        _shapes,
        ("variant", "resolution", "num_train", "num_validation", "num_test", "num_heldout", "seed"),
    ),
    "image_text_folder": (
        _image_text_folder,
        ("source", "name", "resolution", "caption_mode", "validation_fraction", "image_field",
         "caption_field", "image_format"),
    ),
}


def prepare(dataset: str, data_dir: str, **options: Any) -> dict:
    """Prepares `dataset` under `data_dir` with `options` (None values are left at defaults)."""
    options = {k: v for k, v in options.items() if v is not None}
    if dataset in PREPARERS:
        fn, accepted = PREPARERS[dataset]
        extra = sorted(set(options) - set(accepted))
        if extra:
            raise ValueError(f"dataset {dataset!r} does not take option(s) {extra}; it takes {list(accepted)}")
        return fn(data_dir, **options)
    from dalle_jax.data import catalog

    if not catalog.is_catalog_name(dataset):
        raise UnknownDatasetError(
            f"unknown dataset {dataset!r}: use one of {sorted(PREPARERS)} or a TFDS catalog name"
        )
    if options:
        raise ValueError(f"catalog dataset {dataset!r} takes no options, got {sorted(options)}")
    return catalog.prepare(dataset, data_dir)
