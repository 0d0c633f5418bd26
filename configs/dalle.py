"""Stage 2: the DALL·E transformer over [text tokens ; image codes].

  python -m dalle_jax.data encode --tokenizer=workdirs/dvae --data_dir=data   # codes + captions
  python -m dalle_jax.train --config=configs/dalle.py:small --workdir=workdirs/dalle_small
  python -m dalle_jax.bench plan --config=configs/dalle.py:paper --mesh=data:64,fsdp:8,tensor:4

Presets: `tiny` (tests, seconds), `small` (CPU experiments: about 30M parameters, grid 16, text 64),
`vqgan` (`small` on taming's f16-16384 VQGAN codes: 16 × 16 of 16384 at 256 px), `paper` (64
layers, 62 heads of 64, width 3968, text 256 / 16384, image 1024 / 8192: ≈ 12B).
"""

import ml_collections

from dalle_jax import config_parts


def _base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(dict(
        # Which trainer runs this config.
        family="dalle",
        # Text BPE vocabulary (paper 16384; the tokenizer's `text.vocab_size`) and slots (paper 256).
        text_vocab=16384,
        text_len=256,
        # Image codes: the dVAE vocabulary (paper 8192) and the side of the code grid (paper 32).
        image_vocab=8192,
        grid=32,
        # Width, layers, heads and head width (paper 3968 = 62 × 64, 64 layers).
        width=3968,
        depth=64,
        heads=62,
        head_dim=64,
        # Heads stored (0: `heads`): slots past `heads` stay zero and masked, the same model, so
        # that a tensor axis of 4 or 8 divides them (paper: 62 heads in 64 slots).
        head_slots=64,
        # MLP width as a multiple of the model width.
        mlp_ratio=4,
        # 'dense' (masked einsum, the reference), 'blocksparse' (skips untouched blocks), 'splash'
        # (the Pallas TPU kernel, under shard_map on a mesh), 'cudnn' (cuDNN's fused attention on
        # GPUs, bfloat16) or 'auto' (splash on TPUs, cudnn on GPUs where it compiles, else
        # blocksparse; logged).
        attention="blocksparse",
        # cudnn: 'cudnn' (the kernel) or 'xla' (the same jax.nn.dot_product_attention call as plain
        # XLA: runs anywhere; what the CPU tests do).
        cudnn_impl="cudnn",
        # splash off TPUs: run the kernel in Pallas interpret mode (slow; what the CPU tests do).
        splash_interpret=False,
        # splash query and key blocks (0: block_size), rounded up to multiples of 128.
        splash_block_q=0,
        splash_block_kv=0,
        # 'sparse' (the paper's row / column / conv layers) or 'full' (dense causal everywhere).
        pattern="sparse",
        # Side of the convolutional attention window of the last layer (paper 11 at grid 32).
        conv_kernel=11,
        # Query/key block of blocksparse and splash (splash rounds it up to a multiple of 128).
        block_size=128,
        # Computation dtype ('float32' or 'bfloat16'); parameters stay float32.
        dtype="bfloat16",
        # What the backward pass recomputes: 'none', 'dots' (keep q, k, v and the MLP
        # pre-activation; recompute attention, output projection, norms, GELU) or 'full' (keep
        # each layer's input; a second forward pass).
        remat="full",
    ))
    c.loss = ml_collections.ConfigDict(dict(
        # Text and image cross-entropies, each averaged over its own tokens, then weighted.
        text_weight=1 / 8,
        image_weight=7 / 8,
    ))
    c.optimizer = ml_collections.ConfigDict(dict(
        # AdamW (paper: β1 0.9, β2 0.96, ε 1e-8, weight decay 4.5e-2 on weight matrices only).
        b1=0.9,
        b2=0.96,
        eps=1e-8,
        weight_decay=4.5e-2,
        # Linear warm-up from 0 to the peak over warmup_steps (paper: 4.5e-4 over 5,000).
        learning_rate=4.5e-4,
        warmup_steps=5_000,
        # After warm-up: 'plateau' (halve when the training loss stops falling, as the paper) or
        # 'cosine' (to end_learning_rate at decay_steps).
        decay="plateau",
        end_learning_rate=4.5e-6,
        decay_steps=1_000_000,
        # plateau: factor, patience and cooldown in reports of `plateau_window` steps' mean loss.
        plateau_factor=0.5,
        plateau_patience=10,
        plateau_cooldown=10,
        plateau_window=1_000,
        plateau_min_scale=1 / 32,
        # Clip gradients by global norm (paper 4).
        grad_clip_norm=4.0,
        # Average gradients over this many batches before an update (1: off).
        accumulate_steps=1,
        # Parameter moving average kept for sampling (paper 0.99).
        ema_decay=0.99,
    ))
    c.train = config_parts.train_config(eval_every=10_000, image_every=0)
    c.partitioning = ml_collections.ConfigDict(dict(
        # Logical axis → mesh axis. Weights: FSDP over the width (`fsdp`) and over a second
        # dimension (`fsdp_transpose`: the head width, and the MLP and vocabulary after
        # `tensor`), so that fsdp × fsdp_transpose devices share each weight even where the
        # width alone does not divide (3968 = 2⁷·31: fsdp up to 128, × 2); tensor parallel over
        # heads, MLP and vocabulary. Activations: the batch over data, fsdp and fsdp_transpose.
        # A rule's later mesh axes apply where the earlier ones leave them free: the biases,
        # which have no width dimension for `fsdp`, take it after `tensor`.
        rules=dict(embed="fsdp", heads="tensor", head_dim="fsdp_transpose",
                   heads_flat=("tensor", "fsdp_transpose", "fsdp"),
                   mlp=("tensor", "fsdp_transpose"), mlp_bias=("tensor", "fsdp_transpose", "fsdp"),
                   vocab=("tensor", "fsdp_transpose"),
                   layers=None, norm=None, batch=("data", "fsdp", "fsdp_transpose")),
    ))
    # Mesh axis sizes (one may be -1: what the others leave). TPU slices: see
    # experiments/tpu/README.md for the meshes that fit each preset.
    c.mesh = config_parts.mesh_config({"data": -1, "fsdp": 1, "fsdp_transpose": 1, "tensor": 1})
    return c


def _tiny(c):
    c.model.update(text_vocab=512, text_len=16, image_vocab=64, grid=4, width=32, depth=4,
                   heads=2, head_slots=0, head_dim=16, conv_kernel=3, block_size=16,
                   dtype="float32", remat="none")
    # Codes of `shapes` at 32 px from a tiny dVAE (`python -m dalle_jax.data encode`).
    c.data = config_parts.data_config(dataset="image_codes", image_key="codes", resolution=32,
                                      global_batch_size=8)
    c.text = config_parts.text_config(vocab_size=512, text_len=16)
    c.train.update(num_steps=6, log_every=1, eval_every=3, eval_batches=2, checkpoint_every=3,
                   async_checkpoints=False, tensorboard=False)
    c.optimizer.update(learning_rate=1e-3, warmup_steps=2, decay="cosine", decay_steps=20)


def _small(c):
    c.model.update(text_vocab=4096, text_len=64, image_vocab=1024, grid=16, width=512, depth=8,
                   heads=8, head_slots=0, head_dim=64, conv_kernel=11, block_size=32,
                   dtype="float32", remat="dots")
    c.data = config_parts.data_config(dataset="image_codes", image_key="codes", resolution=128,
                                      global_batch_size=8)
    c.train.update(num_steps=20_000, log_every=50, eval_every=1_000, eval_batches=8,
                   checkpoint_every=1_000)
    c.optimizer.update(learning_rate=1e-3, warmup_steps=500, decay="cosine", decay_steps=20_000,
                       end_learning_rate=1e-5)
    c.text = config_parts.text_config(vocab_size=4096, text_len=64)


def _vqgan(c):
    """`small` on the codes of taming's f16-16384 VQGAN: 16 × 16 codes of 256 px images
    (`python -m dalle_jax.data encode --tokenizer=vqgan:DIR --resolution=256`)."""
    _small(c)
    c.model.image_vocab = 16384
    c.data.resolution = 256


def _paper(c):
    c.data = config_parts.data_config(dataset="image_codes", image_key="codes", resolution=256,
                                      global_batch_size=1024, worker_count=8)
    c.text = config_parts.text_config(vocab_size=16384, text_len=256, bpe_dropout=0.1)


PRESETS = {"tiny": _tiny, "small": _small, "vqgan": _vqgan, "paper": _paper}


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    """The config of `preset`."""
    c = _base()
    config_parts.pick_preset(PRESETS, preset, __file__)(c)
    c.preset = preset
    return c
