"""Where files live: a local path, or object storage (`gs://bucket/...`) that a pod's hosts share.

Every reader and writer of the project goes through `etils.epath` (or hands the path as it is to
orbax, TFDS or TensorBoard, which read URLs themselves), so a workdir or data_dir may be either.
`absolute` is the one place a path is rewritten.
"""

from __future__ import annotations

import os


def absolute(path: str) -> str:
    """A local path made absolute; a URL such as gs://bucket/run as it is."""
    path = os.fspath(path)
    return path if "://" in path else os.path.abspath(path)
