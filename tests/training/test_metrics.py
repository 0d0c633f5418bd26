"""MetricWriter: JSON lines, one curve after a resume, and silent on non-primary processes."""

import os

from dalle_jax.training.metrics import MetricWriter, read_metrics


def test_resume_keeps_one_curve_and_inactive_writes_nothing(tmp_path):
    w = MetricWriter(str(tmp_path), tensorboard=False)
    for step in (1, 2, 3):
        w.write(step, "train", {"loss": 1.0 / step})
    w.close()
    w = MetricWriter(str(tmp_path), tensorboard=False, resume_step=2)  # resumed from step 2
    assert w.write(3, "train", {"loss": 0.25})["loss"] == 0.25
    w.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path, "train")] == [
        (1, 1.0), (2, 0.5), (3, 0.25)]
    other = tmp_path / "other"
    w = MetricWriter(str(other), tensorboard=True, resume_step=2, active=False)
    assert w.write(1, "train", {"loss": 2})["loss"] == 2.0
    w.close()
    assert not os.path.exists(other)
