"""Finding prepared data on disk and opening one split as a grain random-access source.

Our builders (`shapes`, `image_text_folder`) write `DATA_DIR/<dataset>/<config>/<version>/`; a
TFDS catalog dataset lives where TFDS puts it. Either way the split is read through
`as_data_source` (array_record, random access), which decodes images with numpy/PIL.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds
from etils import epath

OUR_DATASETS = ("shapes", "image_text_folder", "image_codes")


class DatasetNotFoundError(ValueError):
    """No prepared data matches what was asked."""


def find_prepared(data_dir: str, dataset: str, config: str | None = None) -> str:
    """Directory of a prepared dataset of ours: `data_dir/dataset/config/version`.

    With `config` unset, the dataset must have exactly one prepared config.
    """
    pattern = f"{dataset}/{config or '*'}/*/dataset_info.json"  # a local folder or gs://
    # Highest version last, compared as versions (1.10.0 > 1.2.0), not as strings.
    found = sorted((os.fspath(p.parent) for p in epath.Path(data_dir).glob(pattern)),
                   key=lambda d: tfds.core.Version(os.path.basename(d)))
    if not found:
        what = f"{dataset!r}" + (f" config {config!r}" if config else "")
        how = (f"`python -m dalle_jax.data encode --tokenizer=DIR --data_dir={data_dir} …`"
               if dataset == "image_codes" else
               f"`python -m dalle_jax.data prepare --dataset={dataset} --data_dir={data_dir}`")
        raise DatasetNotFoundError(f"no prepared {what} under data_dir={data_dir!r}; run {how} first")
    configs = sorted({os.path.basename(os.path.dirname(p)) for p in found})
    if len(configs) > 1:
        raise DatasetNotFoundError(
            f"{dataset!r} has several prepared configs under {data_dir!r}: {configs}; "
            "choose one with data.config"
        )
    return found[-1]  # the highest version of the one config


def open_builder(dataset: str, data_dir: str, config: str | None = None) -> tfds.core.DatasetBuilder:
    """A read-only builder for prepared data: ours by directory, others from the TFDS catalog."""
    if dataset in OUR_DATASETS:
        return tfds.builder_from_directory(find_prepared(data_dir, dataset, config))
    name = f"{dataset}/{config}" if config else dataset
    try:
        return tfds.builder(name, data_dir=data_dir, file_format="array_record")
    except tfds.core.registered.DatasetNotFoundError as e:
        raise DatasetNotFoundError(f"unknown dataset {dataset!r}: {str(e).splitlines()[0]}") from e


def open_split(dataset: str, data_dir: str, split: str, config: str | None = None):
    """The random-access source of one split; errors name the split and the ones that exist."""
    builder = open_builder(dataset, data_dir, config)
    splits = builder.info.splits
    if splits and split not in splits:
        raise DatasetNotFoundError(
            f"dataset {dataset!r} has no split {split!r}; it has {sorted(splits)}"
        )
    return builder.as_data_source(split=split)
