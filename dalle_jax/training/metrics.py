"""Metric logging: JSON lines always, TensorBoard summaries, one place for both (local or gs://)."""

from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np
from etils import epath

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
    """Appends `{"step", "split", name: value…}` to `workdir/metrics.jsonl` and writes TensorBoard scalars."""

    def __init__(self, workdir: str, *, tensorboard: bool = True, resume_step: int | None = None,
                 active: bool = True):
        """`resume_step`: drop records logged after this step (a run resumed from its checkpoint
        logs those steps again, so the file keeps one curve). `active=False` (every process of a
        multi-host run but the first) writes nothing and only returns the records."""
        self.active = active
        self.path = epath.Path(workdir) / METRICS_FILE
        self._file, self._tb = None, None
        if not active:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(workdir) if r["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = self.path.open("a")
        if tensorboard:
            import tensorflow as tf  # only for tf.summary; already a dependency of data preparation

            self._tf = tf
            self._tb = tf.summary.create_file_writer(os.path.join(os.fspath(workdir), "tensorboard"))

    def write(self, step: int, split: str, values: Mapping[str, float]) -> dict:
        """Logs scalar `values` at `step` under `split` ('train', 'eval', …); returns the record."""
        record = {"step": int(step), "split": split}
        record.update({k: float(np.asarray(v)) for k, v in values.items()})
        if not self.active:
            return record
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            with self._tb.as_default(step=int(step)):
                for k, v in record.items():
                    if k not in ("step", "split"):
                        self._tf.summary.scalar(f"{split}/{k}", v)
            self._tb.flush()
        return record

    def close(self) -> None:
        """Flushes and closes both outputs."""
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str, split: str | None = None) -> list[dict]:
    """The records of `workdir/metrics.jsonl` (optionally of one split)."""
    path = epath.Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]
