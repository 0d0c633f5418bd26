"""`LocalDatasetInfo`: the tfds `DatasetInfo` of datasets that are only ever built on this machine.

When a builder's dataset is not prepared yet, tfds looks its metadata up on the public TFDS bucket,
and makes a temporary directory for it first that it never removes (one empty `/tmp/tmp…tfds`
per builder). The datasets of this package are never on that bucket, so the look-up is skipped.
"""

from __future__ import annotations

import tensorflow_datasets as tfds


class LocalDatasetInfo(tfds.core.DatasetInfo):
    """A `tfds.core.DatasetInfo` that never consults the TFDS bucket."""

    def initialize_from_bucket(self) -> None:
        """Nothing to fetch: the dataset is generated locally (see the module docstring)."""
