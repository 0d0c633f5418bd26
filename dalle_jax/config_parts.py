"""Config pieces every model family shares: data, text tokenizer and device mesh.

Config files under `configs/` assemble these into one `ml_collections.ConfigDict` per preset; the
command line overrides any field (`--config.data.resolution=32`), and ml_collections rejects an
unknown field or a wrong type with the field's name.
"""

from __future__ import annotations

from typing import Mapping

import ml_collections


def data_config(**values) -> ml_collections.ConfigDict:
    """Where the data is and how it is batched; keyword arguments replace defaults."""
    c = ml_collections.ConfigDict()
    # 'shapes' (built in), 'image_text_folder' (your files) or a TFDS catalog name.
    c.dataset = "shapes"
    # Folder of prepared datasets (TFDS layout: DATASET/CONFIG/VERSION).
    c.data_dir = "data"
    # Prepared config to read; '' = the only one there.
    c.config = ""
    # Side of the square images, in pixels (paper: 256).
    c.resolution = 64
    # image_text_folder only: the folder, manifest or .tar shards to import.
    c.source = ""
    # shapes only: sizes of the splits, the variant ('objects', 'bold' or 'words') and the scene seed.
    c.shapes = ml_collections.ConfigDict(
        dict(variant="objects", num_train=20000, num_validation=1000, num_test=1000,
             num_heldout=1000, seed=0)
    )
    # Record fields (nested with '/'); catalog datasets differ, e.g. coco_captions: 'captions/text'.
    c.image_key = "image"
    c.caption_key = "caption"
    c.train_split = "train"
    c.eval_split = "validation"
    # Examples per step over all hosts (paper: 1024); must divide over the mesh's batch axes.
    c.global_batch_size = 32
    # Shuffling and caption-choice seed.
    c.seed = 0
    # grain worker processes per host (0: decode in the training process).
    c.worker_count = 0
    # Training: decode this host's train records once and keep them in memory (a progress bar at
    # start; at most half the machine's memory): the same batches as reading the split, without a
    # PNG decode per example. For small images read many times (the CPU presets).
    c.cache = False
    c.update(values)
    return c


def text_config(**values) -> ml_collections.ConfigDict:
    """The BPE text tokenizer; keyword arguments replace defaults."""
    c = ml_collections.ConfigDict()
    # BPE vocabulary including the pad marker (paper: 16384).
    c.vocab_size = 16384
    # Text tokens per example, truncated/padded (paper: 256).
    c.text_len = 256
    # A merge must be seen this often to be learned.
    c.min_frequency = 2
    # Train captions read to learn the BPE (all of them if fewer).
    c.max_train_captions = 200_000
    # Probability of skipping each BPE merge of a training caption (paper 0.1; 0: off).
    c.bpe_dropout = 0.0
    # Probability of training on an empty caption instead (0: off). Beyond the paper: it teaches
    # the unconditional logits that classifier-free guidance (`sample --guidance`) mixes in.
    c.caption_dropout = 0.0
    c.update(values)
    return c


def train_config(**values) -> ml_collections.ConfigDict:
    """The training loop's schedule of logging, evaluation and checkpoints; keyword arguments
    replace defaults."""
    c = ml_collections.ConfigDict()
    # Updates in total; re-running with a larger value continues the run.
    c.num_steps = 1_000_000
    # Seed of the parameters (and of the stage's noise).
    c.seed = 0
    c.log_every = 100
    # Validation metrics every this many steps, over this many batches.
    c.eval_every = 5_000
    c.eval_batches = 16
    # Images (reconstructions or samples) as PNG every this many steps (0: never).
    c.image_every = 5_000
    c.checkpoint_every = 5_000
    c.keep_checkpoints = 3
    c.async_checkpoints = True
    c.tensorboard = True
    # A non-finite loss stops the run ('stop') or skips that update and counts it ('skip').
    c.on_nonfinite = "stop"
    c.update(values)
    return c


def mesh_config(axes: Mapping[str, int] | None = None) -> ml_collections.ConfigDict:
    """Mesh axis sizes; one may be -1 (all remaining devices). Default: pure data parallel."""
    return ml_collections.ConfigDict(dict(axes or {"data": -1, "fsdp": 1, "tensor": 1}))


def pick_preset(presets: Mapping[str, object], name: str, config_file: str):
    """presets[name], or a ValueError listing the presets of `config_file`."""
    if name not in presets:
        raise ValueError(f"unknown preset {name!r} for {config_file}; choose one of {sorted(presets)}")
    return presets[name]
