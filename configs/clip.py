"""The reranker: a contrastive text–image model (CLIP-style) trained on images and captions.

  python -m dalle_jax.train --config=configs/clip.py:small --workdir=workdirs/clip_small
  python -m dalle_jax.sample --workdir=workdirs/dalle_small --clip_workdir=workdirs/clip_small …

Presets: `tiny` (tests, seconds), `small` (the `shapes` experiment on a 2-core CPU). It reads the
same prepared datasets and BPE settings as the other stages; its text_len and resolution must be
the transformer's and the dVAE's, so that it can score their samples against their prompts.
"""

import ml_collections

from dalle_jax import config_parts


def _base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(dict(
        # Which trainer runs this config.
        family="clip",
        # Text: BPE vocabulary and slots (as the transformer's `text`).
        text_vocab=16384,
        text_len=256,
        # Images: side in pixels and the vision transformer's patch side.
        resolution=256,
        patch=16,
        # A convolutional stem instead of linear patches: log2(patch) 3×3 stride-2 ReLU
        # convolutions, this many channels wide and doubling at each (0: linear patches).
        stem_channels=0,
        # Computation dtype of the stem and the towers ('float32' or 'bfloat16'; parameters,
        # softmax, pooling and embeddings stay float32).
        dtype="float32",
        # Width, heads and depth of each tower; the shared embedding width.
        width=512,
        heads=8,
        text_depth=12,
        image_depth=12,
        embed_dim=512,
        # Initial temperature of the InfoNCE logits (learned; its log-inverse is capped at ln 100).
        init_temperature=0.07,
    ))
    c.optimizer = ml_collections.ConfigDict(dict(
        # AdamW with a linear warm-up, then cosine to end_learning_rate at decay_steps.
        learning_rate=5e-4,
        end_learning_rate=1e-5,
        warmup_steps=2_000,
        decay_steps=500_000,
        b1=0.9,
        b2=0.98,
        eps=1e-6,
        weight_decay=0.2,
        grad_clip_norm=1.0,
        # Parameter moving average used for evaluation and reranking.
        ema_decay=0.999,
    ))
    c.train = config_parts.train_config(image_every=0)
    # `shapes` object captions only: also rank each caption above a copy with one colour, shape,
    # place or relation swapped (NegCLIP-style hard negatives; `data.shapes.negatives`).
    c.train.hard_negatives = False
    # Which of colour, shape, position, relation those training negatives swap (comma-separated;
    # validation's `negative_accuracy` always swaps any of them).
    c.train.negative_kinds = "colour,shape,position,relation"
    # `shapes` object scenes only: also rank each caption's image above the same scene with one
    # object's shape changed (hard negative images; `data.shapes.negative_images`). The image
    # tower then runs on twice the images per step.
    c.train.negative_images = False
    # What those negative images change: 'shape' (one object redrawn as another shape) and/or
    # 'position' (two objects trade places, or a lone object moves from the cell its caption
    # names); validation's `negative_image_accuracy` changes either.
    c.train.negative_image_kinds = "shape"
    c.partitioning = ml_collections.ConfigDict(dict(
        rules=dict(embed="fsdp", heads="tensor", mlp="tensor", vocab="tensor", head_dim=None,
                   layers=None, norm=None, batch=("data", "fsdp")),
    ))
    c.mesh = config_parts.mesh_config()
    c.data = config_parts.data_config(dataset="image_text_folder", resolution=256,
                                      global_batch_size=256)
    c.text = config_parts.text_config()
    return c


def _tiny(c):
    c.model.update(text_vocab=512, text_len=16, resolution=32, patch=8, width=32, heads=2,
                   text_depth=1, image_depth=1, embed_dim=16)
    c.optimizer.update(learning_rate=1e-3, warmup_steps=2, decay_steps=20, ema_decay=0.9)
    c.train.update(num_steps=6, log_every=1, eval_every=3, eval_batches=2, checkpoint_every=3,
                   async_checkpoints=False, tensorboard=False)
    c.data = config_parts.data_config(
        resolution=32, global_batch_size=8,
        shapes=dict(variant="objects", num_train=256, num_validation=32, num_test=32,
                    num_heldout=32, seed=0),
    )
    c.text = config_parts.text_config(vocab_size=512, text_len=16)


def _small(c):
    c.model.update(text_vocab=4096, text_len=64, resolution=128, patch=16, width=256, heads=4,
                   text_depth=2, image_depth=4, embed_dim=128)
    c.optimizer.update(learning_rate=1e-3, warmup_steps=200, decay_steps=4_000, weight_decay=0.1,
                       ema_decay=0.99)
    c.train.update(num_steps=4_000, log_every=50, eval_every=500, eval_batches=8,
                   checkpoint_every=500)
    c.data = config_parts.data_config(resolution=128, global_batch_size=64)
    c.text = config_parts.text_config(vocab_size=4096, text_len=64)


PRESETS = {"tiny": _tiny, "small": _small}


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    """The config of `preset`."""
    c = _base()
    config_parts.pick_preset(PRESETS, preset, __file__)(c)
    c.preset = preset
    return c
