"""Checkpoints prove themselves: checksums written at save, checked at restore; a damaged step
(bytes flipped in, or truncation of, one of its array files) is named, and resuming falls back
to the newest intact step."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle_jax.training import checksums
from dalle_jax.training.checkpoint import Checkpointer, DamagedCheckpoint


def _state(seed: float) -> dict:
    big = jnp.arange(1 << 16, dtype=jnp.float32) * 1e-3 + seed
    return {"params": {"w": big, "b": jnp.full((7,), seed, jnp.float32)},
            "ema": {"w": big * 0.5, "b": jnp.ones((7,), jnp.float32)},
            "extra": {}, "step": jnp.asarray(int(seed), jnp.int32)}


def _abstract(state):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        state)


def _save_two(workdir) -> Checkpointer:
    ckpt = Checkpointer(str(workdir), async_save=False)
    ckpt.save(1, _state(1.0), {"position": 10})
    ckpt.save(2, _state(2.0), {"position": 20})
    ckpt.wait()
    return ckpt


def _array_files(ckpt: Checkpointer, step: int) -> list[str]:
    folder = os.path.join(ckpt.directory, str(step), "state")
    return [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs
            if os.sep + "d" + os.sep in os.path.join(d, f) + os.sep or "/d/" in d + "/"]


def _largest_array_file(ckpt: Checkpointer, step: int) -> str:
    return max(_array_files(ckpt, step), key=os.path.getsize)


def _flip_throughout(path: str, every: int = 1024) -> None:
    """Inverts 16 bytes of every `every`: no array stored in the file stays whole."""
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        for start in range(0, len(data), every):
            data[start:start + 16] = bytes(b ^ 0xFF for b in data[start:start + 16])
        f.seek(0)
        f.write(data)


def _flip(path: str, count: int = 4096) -> None:
    with open(path, "r+b") as f:
        size = os.path.getsize(path)
        f.seek(size // 3)
        data = bytearray(f.read(count))
        f.seek(size // 3)
        f.write(bytes(b ^ 0xFF for b in data))


def _truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def test_checksums_see_one_changed_element_and_a_swap():
    x = jnp.arange(100, dtype=jnp.float32)
    base = checksums.of({"x": x})
    assert checksums.of({"x": x.at[57].set(57.5)}) != base
    assert checksums.of({"x": x.at[3].set(4.0).at[4].set(3.0)}) != base
    assert checksums.mismatches({"x": x}, base) == []
    assert checksums.mismatches({"x": x + 1}, base) == ["x"]
    bf = checksums.of({"y": x.astype(jnp.bfloat16)})
    assert bf != checksums.of({"y": (x + 1).astype(jnp.bfloat16)})


@pytest.mark.parametrize("damage", [_flip, _truncate], ids=["flipped", "truncated"])
def test_a_damaged_step_is_named_and_restore_falls_back(tmp_path, caplog, damage):
    ckpt = _save_two(tmp_path)
    damage(_largest_array_file(ckpt, 2))
    with pytest.raises(DamagedCheckpoint, match="checkpoint step 2 .* is damaged"):
        ckpt.restore(_abstract(_state(0.0)), step=2)
    with caplog.at_level(logging.WARNING):
        state, data = ckpt.restore(_abstract(_state(0.0)))
    assert ckpt.restored_step == 1 and data == {"position": 10}
    np.testing.assert_array_equal(state["params"]["w"], _state(1.0)["params"]["w"])
    assert any("step 2" in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    ckpt.close()


def test_every_step_damaged_is_an_error_not_a_fresh_start(tmp_path):
    ckpt = _save_two(tmp_path)
    for step in (1, 2):
        _flip(_largest_array_file(ckpt, step))
    with pytest.raises(DamagedCheckpoint, match=r"every checkpoint .* \(steps 2, 1\)"):
        ckpt.restore(_abstract(_state(0.0)))
    ckpt.close()


def test_a_damaged_data_state_is_caught(tmp_path):
    ckpt = _save_two(tmp_path)
    data_dir = os.path.join(ckpt.directory, "2", "data")
    path = next(os.path.join(d, f) for d, _, fs in os.walk(data_dir) for f in fs)
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("20", "21"))
    state, data = ckpt.restore(_abstract(_state(0.0)))
    assert ckpt.restored_step == 1 and data == {"position": 10}
    ckpt.close()


def test_inference_restore_checks_the_ema_in_float32_and_in_bfloat16(tmp_path):
    _save_two(tmp_path).close()
    ckpt = Checkpointer(str(tmp_path), async_save=False)  # as `load_ema` reads: afresh
    abstract = _abstract(_state(0.0))
    for dtype in (jnp.float32, jnp.bfloat16):
        target = {**abstract, "ema": jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, dtype, sharding=x.sharding), abstract["ema"])}
        out = ckpt.restore_inference(target, 2)
        assert out["ema"]["w"].dtype == dtype
    # Which data file holds the EMA is up to orbax's writers: damage every one, throughout.
    for path in _array_files(ckpt, 2):
        _flip_throughout(path)
    with pytest.raises(DamagedCheckpoint, match="checkpoint step 2"):
        ckpt.restore_inference(abstract, 2)
    ckpt.close()
