"""Data-only config: the dataset, tokenizer and mesh every training run starts from.

Preview what a training run would be fed (prepares `shapes` if needed, trains the tokenizer into
the workdir, draws batches on the mesh, writes a grid PNG):

  python -m dalle_jax.data inspect --config=configs/data.py:tiny --workdir=workdirs/data_tiny

Presets: `tiny` (tests: 32 px, a few hundred scenes), `small` (a CPU experiment: 64 px),
`paper` (the paper's sizes: 256 px, 256 BPE tokens from 16384; needs --config.data.source).
"""

import ml_collections

from dalle_jax import config_parts


def _tiny():
    return dict(
        data=config_parts.data_config(
            resolution=32, global_batch_size=8,
            shapes=dict(variant="objects", num_train=256, num_validation=32, num_test=32,
                        num_heldout=32, seed=0),
        ),
        text=config_parts.text_config(vocab_size=512, text_len=16),
    )


def _small():
    return dict(
        data=config_parts.data_config(resolution=64, global_batch_size=32, worker_count=2),
        text=config_parts.text_config(vocab_size=2048, text_len=32),
    )


def _paper():
    return dict(
        data=config_parts.data_config(
            dataset="image_text_folder", resolution=256, global_batch_size=1024, worker_count=8
        ),
        text=config_parts.text_config(vocab_size=16384, text_len=256),
    )


PRESETS = {"tiny": _tiny, "small": _small, "paper": _paper}


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    """The config of `preset`."""
    config = ml_collections.ConfigDict(config_parts.pick_preset(PRESETS, preset, __file__)())
    config.preset = preset
    config.mesh = config_parts.mesh_config()
    return config
