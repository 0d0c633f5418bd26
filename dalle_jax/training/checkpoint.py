"""orbax checkpoints of a run: the train state (sharded arrays) and the data iterator position.

`workdir/checkpoints/<step>/{state, data, checksums}`; keeps the newest `keep` (async writes,
atomic renames). The workdir may be a local path or a bucket URL (`gs://…`). In a multi-host run
every process saves and restores the same steps together; `data` holds each process's data
iterator position, and each gets its own back. Every step carries the checksums of its arrays and of its data state
(`checksums.py`), checked when it is read: a damaged step is named in one line; resuming falls
back to the newest intact step (never to a fresh start), and inference refuses it. The resolved
config is written beside them as `workdir/config.json`, and the workdir's `tokenizer.json`
completes what sampling and evaluation need.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from dalle_jax.parallel import hosts
from dalle_jax.storage import absolute
from dalle_jax.training import checksums

CONFIG_FILE = "config.json"
# Messages of tensorstore/orbax reading a damaged array file (truncated, cut short, undecodable).
_READ_ERRORS = ("OUT_OF_RANGE", "DATA_LOSS", "Error reading", "Error decoding",
                "error while reading")
# The EMA's sums are also kept as rounded to this dtype: what a sampler reads it in.
_CAST = jnp.bfloat16


class DamagedCheckpoint(ValueError):
    """A checkpoint step whose files cannot be read or whose arrays fail their checksums."""


def _data_digest(data_state) -> str:
    return hashlib.sha256(json.dumps(data_state, sort_keys=True).encode()).hexdigest()


def _sums_at_save(state: dict, data_state) -> dict:
    sums = {"state": checksums.of(state), "data": None if data_state is None
            else _data_digest(data_state)}
    if "ema" in state:
        cast = jax.tree.map(lambda x: x.astype(_CAST) if x.dtype == jnp.float32 else x,
                            {"ema": state["ema"]})
        sums[jnp.dtype(_CAST).name] = checksums.of(cast)
    return sums


class Checkpointer:
    """Saves and restores `(state, data_state)` under `workdir/checkpoints`."""

    def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
        self.directory = absolute(os.path.join(workdir, "checkpoints"))  # orbax wants it absolute
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=async_save),
        )
        self.restored_step: int | None = None  # the step the last `restore` read

    def latest_step(self) -> int | None:
        """The newest saved step, or None."""
        return self.manager.latest_step()

    def save(self, step: int, state: dict, data_state: dict | None = None, *,
             force: bool = False) -> None:
        """Starts writing step `step` with its checksums (returns before the write ends when
        async; the checksums are computed first, on the devices)."""
        if data_state is not None:  # every process's position, written by the first one
            data_state = {"processes": hosts.gather_json(data_state)}
        items = {"state": ocp.args.StandardSave(state),
                 "checksums": ocp.args.JsonSave(_sums_at_save(state, data_state))}
        if data_state is not None:
            items["data"] = ocp.args.JsonSave(data_state)
        self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def _read(self, step: int, items: dict) -> dict:
        """The items of step `step`, with its checksums (None for a step saved without);
        a file that cannot be read is a `DamagedCheckpoint` naming the step."""
        folder = epath.Path(self.directory) / str(step)
        if (folder / "checksums").is_dir():
            items = {**items, "checksums": ocp.args.JsonRestore()}
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # orbax wraps tensorstore's errors in a plain Exception
            chain, cause = [], e
            while cause is not None and len(chain) < 8:
                chain.append(str(cause))
                cause = cause.__cause__ or cause.__context__
            if not any(marker in text for marker in _READ_ERRORS for text in chain):
                raise
            reading = next((t for t in chain if any(m in t for m in _READ_ERRORS)), chain[0])
            first = reading.strip().splitlines()[0] if reading.strip() else type(e).__name__
            raise DamagedCheckpoint(f"checkpoint step {step} in {self.directory} is damaged: "
                                    f"{first[:300]}") from e
        return {k: restored[k] for k in items if k != "checksums"}, (
            restored["checksums"] if "checksums" in items else None)

    def _check(self, step: int, tree: dict, expected: dict | None) -> None:
        if expected is None:
            logging.warning("checkpoint step %d has no checksums (saved by an older version): "
                            "not verified", step)
            return
        bad = checksums.mismatches(tree, expected)
        if bad:
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            raise DamagedCheckpoint(f"checkpoint step {step} in {self.directory} is damaged: "
                                    f"{bad[0]}{more} fail their checksums")

    def _restore_step(self, abstract_state: dict, step: int, with_data: bool):
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        have_data = with_data and (epath.Path(self.directory) / str(step) / "data").is_dir()
        if have_data:
            items["data"] = ocp.args.JsonRestore()
        restored, sums = self._read(step, items)
        self._check(step, restored["state"], sums and sums["state"])
        data = restored["data"] if have_data else None
        if have_data and sums and sums.get("data") not in (None, _data_digest(data)):
            raise DamagedCheckpoint(f"checkpoint step {step} in {self.directory} is damaged: "
                                    "its data iterator state fails its checksum")
        return restored["state"], data if data is None else _own_data_state(data, step)

    def restore(self, abstract_state: dict, step: int | None = None, *,
                with_data: bool = True) -> tuple[dict, dict | None]:
        """(state placed on the shardings of `abstract_state`, data state or None) of step
        `step`, or of the newest intact step: a damaged one is logged in one line and the step
        before it tried, down to the oldest kept; if none is intact, `DamagedCheckpoint`."""
        steps = [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        damaged = []
        for s in steps:
            try:
                state, data = self._restore_step(abstract_state, s, with_data)
            except DamagedCheckpoint as e:
                if step is not None:
                    raise
                logging.warning("%s; falling back to the step before", e)
                damaged.append(s)
                continue
            logging.info("restored step %d from %s", s, self.directory)
            self.restored_step = s
            if damaged:
                self._set_aside(damaged)
            return state, data
        raise DamagedCheckpoint(f"every checkpoint in {self.directory} is damaged (steps "
                                f"{', '.join(map(str, damaged))}): nothing intact to resume from")

    def _set_aside(self, steps: list[int]) -> None:
        """Moves damaged steps out of the way of the resumed run (which saves those step
        numbers again) into `checkpoints_damaged/`, kept for inspection, not deleted."""
        aside = epath.Path(self.directory + "_damaged")
        if hosts.is_primary():
            aside.mkdir(parents=True, exist_ok=True)
            for s in steps:
                target, n = aside / str(s), 1
                while target.exists():
                    target, n = aside / f"{s}.{n}", n + 1
                (epath.Path(self.directory) / str(s)).rename(target)
                logging.warning("moved damaged checkpoint step %d to %s", s, target)
        hosts.barrier("damaged checkpoints set aside")
        self.manager.reload()

    def restore_inference(self, abstract: dict, step: int) -> dict:
        """Only `{'ema': …, 'extra': …}` of step `step`'s train state, on the shardings and in the
        dtypes of `abstract` (ShapeDtypeStructs): what inference needs. The parameters and the
        optimizer's moments are never read, so a model whose train state does not fit the
        devices can still be sampled (a 12B model's EMA in bfloat16 is 25 GB of a 197 GB
        state)."""
        target = {k: abstract[k] for k in ("ema", "extra")}
        restore_args = ocp.checkpoint_utils.construct_restore_args(target)
        restored, sums = self._read(step, {"state": ocp.args.PyTreeRestore(
            item=target, restore_args=restore_args, partial_restore=True)})
        state = {k: restored["state"].get(k, {}) or {} for k in ("ema", "extra")}
        cast = any(x.dtype == _CAST for x in jax.tree.leaves(target["ema"]))
        expected = sums and (sums.get(jnp.dtype(_CAST).name) if cast else sums["state"])
        self._check(step, {"ema": state["ema"]} if cast else state, expected)
        if cast:
            self._check(step, {"extra": state["extra"]}, sums and sums["state"])
        logging.info("restored the EMA of step %d from %s", step, self.directory)
        return state

    def wait(self) -> None:
        """Blocks until pending async writes are done."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Finishes writes and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def _own_data_state(saved: dict, step: int, index: int | None = None,
                    count: int | None = None) -> dict | None:
    """Process `index` of `count`'s data iterator state out of a step's `data` item (default:
    this process of this run).

    Every process reads its own rows of the same global batches (`data.loader.HostRows`), so a
    position counts global batches and is the same on every host: a step written by another
    process count resumes exactly where all of its hosts agree. Positions that disagree (never
    written by this loader) cannot be split anew: the iterator then starts afresh, said in a
    warning."""
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    if "processes" not in saved:  # written before positions were kept per process
        saved = {"processes": [saved]}
    positions = saved["processes"]
    if len(positions) == count:
        return positions[index]
    if all(p == positions[0] for p in positions):
        logging.info("checkpoint step %d holds the data positions of %d processes, this run has "
                     "%d: all at the same global batch, where this run resumes", step,
                     len(positions), count)
        return positions[0]
    logging.warning("checkpoint step %d holds %d processes' data positions that disagree, this "
                    "run has %d: the data iterator starts afresh (seen records may come again)",
                    step, len(positions), count)
    return None


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the resolved config as JSON into the workdir."""
    folder = epath.Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2, sort_keys=True))
    return os.path.join(workdir, CONFIG_FILE)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in `workdir` was trained with; a clear error if there is none."""
    path = epath.Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{workdir} has no {CONFIG_FILE}: is it a training workdir?")
    return ml_collections.ConfigDict(json.loads(path.read_text()))
