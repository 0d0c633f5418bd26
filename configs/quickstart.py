"""Quickstart: a small dVAE, transformer and CLIP on `shapes`, end to end, then samples.

  python -m dalle_jax.train --config=configs/quickstart.py --workdir=workdirs/quickstart

writes workdirs/quickstart/{dvae,codes,dalle,clip}/ and samples.png (+ samples.json with CLIP
scores and the caption checker's verdict on every sample) for `sample.prompts`. Presets: `default`
(`shapes` `bold` scenes at 72 px, 9 × 9 codes, at most 10 minutes on 2 CPU cores) and `tiny`
(32 px, a minute or two: tests and the notebook's CI run) and `experiment` (the default's world
and dVAE on 20,000 scenes, an 8-layer transformer and a longer-trained CLIP: the models of
experiments/shapes, 43 minutes on 2 CPU cores). Each section is the full config
of its stage (configs/dvae.py, dalle.py, clip.py), so any field can be overridden, e.g.
`--config.dalle.train.num_steps=3000`. Re-running resumes every stage.
"""

import importlib.util
import os

import ml_collections

_HERE = os.path.dirname(os.path.abspath(__file__))


def _stage_config(name: str, preset: str) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location(f"quickstart_{name}", os.path.join(_HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset)


def _shared_data(c, resolution: int, num_train: int, batches: tuple[int, int, int],
                 variant: str = "bold"):
    """Every stage reads the same `shapes` scenes (the transformer through their codes); batches
    are the dVAE's, the transformer's and CLIP's."""
    shapes = dict(variant=variant, num_train=num_train, num_validation=512, num_test=256,
                  num_heldout=512, seed=0)
    for stage, batch in zip((c.dvae, c.dalle, c.clip), batches):
        stage.data.update(resolution=resolution, global_batch_size=batch)
    for stage in (c.dvae, c.clip):
        stage.data.update(worker_count=0)
        stage.data.shapes.update(shapes)


def _default(c):
    # A VQ-VAE sized for `bold` scenes (measured on a 2-core CPU: at 3,000 steps of 8 images,
    # 4 minutes, its reconstructions pass the caption checker on 99% of seen and 97% of held-out
    # scenes; 1,500 steps of 16 reached 90% and 76%). Channel permutations show it every colour
    # with every shape, held-out pairs included, so it codes outlines apart from colour.
    c.dvae.model.update(vocab_size=512, n_hid=16, n_blk_per_group=1, n_init=64, embed_dim=32,
                        quantizer="vq")
    c.dvae.augment.permute_channels = True
    c.dvae.optimizer.update(learning_rate=2e-3, decay_steps=3000, grad_clip_norm=0.0)
    # The VQ-VAE trains jointly to the end (the `shapes` decoder phase is for 18,000 steps).
    c.dvae.decoder_phase.from_step = 0
    c.dvae.train.update(num_steps=3000, eval_every=3000, eval_batches=4, image_every=3000,
                        checkpoint_every=1000, log_every=100)
    text_len, text_vocab = 24, 1024
    c.dalle.model.update(text_vocab=text_vocab, text_len=text_len, image_vocab=512, grid=9,
                         width=256, depth=4, heads=4, head_dim=64, conv_kernel=5, block_size=32,
                         dtype="bfloat16", remat="none")
    c.dalle.optimizer.update(learning_rate=1e-3, warmup_steps=100, decay="cosine",
                             decay_steps=800, end_learning_rate=1e-5)
    c.dalle.train.update(num_steps=800, log_every=50, eval_every=400, eval_batches=4,
                         checkpoint_every=400, keep_checkpoints=1)
    c.clip.model.update(text_vocab=text_vocab, text_len=text_len, resolution=72, patch=8,
                        width=128, heads=4, text_depth=2, image_depth=2, embed_dim=64)
    c.clip.optimizer.update(learning_rate=1e-3, warmup_steps=50, decay_steps=300,
                            weight_decay=0.1, ema_decay=0.99)
    c.clip.train.update(num_steps=300, log_every=50, eval_every=300, eval_batches=4,
                        checkpoint_every=300, keep_checkpoints=1)
    for stage in (c.dvae, c.dalle, c.clip):
        stage.text.update(vocab_size=text_vocab, text_len=text_len)
    # `bold` scenes at 72 px: a grid cell is 3 × 3 of the dVAE's 8-pixel codes.
    _shared_data(c, resolution=72, num_train=5_000, batches=(8, 32, 64))
    # Temperature 0.7: a model of a few minutes draws cleaner outlines below 1 (measured: 56% of
    # samples pass the caption checker at 0.7, 48% at 1; classifier-free guidance did not help).
    c.sample.update(num_samples=8, rerank=4, temperature=0.7)


def _experiment(c):
    _default(c)
    # The transformer of experiments/shapes: twice the quickstart's depth, 3.75 times its steps.
    steps = 3000
    c.dalle.model.update(depth=8)
    c.dalle.optimizer.update(warmup_steps=200, decay_steps=steps)
    c.dalle.train.update(num_steps=steps, eval_every=1000, checkpoint_every=1000)
    # A CLIP that has seen the hard negative captions (one colour, shape or place changed).
    c.clip.model.update(image_depth=4, text_depth=2)
    c.clip.optimizer.update(warmup_steps=100, decay_steps=1200)
    c.clip.train.update(num_steps=1200, hard_negatives=True, eval_every=1200, checkpoint_every=400)
    _shared_data(c, resolution=72, num_train=20_000, batches=(8, 32, 64))


def _tiny(c):
    c.dvae.augment.permute_channels = True  # as the default preset
    text_len, text_vocab = 16, 512
    c.dalle.model.update(text_vocab=text_vocab, text_len=text_len)
    c.clip.model.update(text_vocab=text_vocab, text_len=text_len)
    for stage in (c.dvae, c.dalle, c.clip):
        stage.text.update(vocab_size=text_vocab, text_len=text_len)
        stage.train.update(num_steps=4, eval_every=4, checkpoint_every=4, tensorboard=False)
    _shared_data(c, resolution=32, num_train=256, batches=(8, 8, 8))
    for stage in (c.dvae, c.clip):
        stage.data.shapes.update(num_validation=32, num_test=32, num_heldout=32)
    c.sample.update(prompts=["a red circle", "a blue square"], num_samples=2, rerank=1)


PRESETS = {"default": _default, "tiny": _tiny, "experiment": _experiment}


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    """The config of `preset`."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} for {__file__}; choose one of {sorted(PRESETS)}")
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(dict(family="pipeline"))
    # Where the prepared `shapes` data lives (the codes go into the workdir).
    c.data_dir = "data"
    # Splits of the dataset to encode into codes (the transformer trains and validates on them).
    c.encode_splits = ["train", "validation", "heldout"]
    # Which of the stages dvae, codes, dalle, clip, samples this run trains or draws (comma list).
    c.stages = "dvae,codes,dalle,clip,samples"
    stage_preset = "tiny" if preset == "tiny" else "shapes"
    c.dvae = _stage_config("dvae", stage_preset)
    c.dalle = _stage_config("dalle", "tiny")
    c.clip = _stage_config("clip", "tiny")
    c.sample = ml_collections.ConfigDict(dict(
        prompts=["a green heart in the bottom right", "a purple circle in the top left",
                 "an orange square at the top", "a yellow star below a blue circle"],
        num_samples=8, rerank=4, seed=0, temperature=1.0, top_k=0, top_p=1.0, guidance=1.0,
        # Judge every sample with the `shapes` caption checker (samples.json, the log line).
        judge=True))
    PRESETS[preset](c)
    c.preset = preset
    return c
