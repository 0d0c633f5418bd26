"""Stage 1: the discrete VAE (paper) or a VQ-VAE, trained on images.

  python -m dalle_jax.train --config=configs/dvae.py:shapes --workdir=workdirs/dvae_shapes
  python -m dalle_jax.train --config=configs/dvae.py:shapes --config.model.quantizer=vq \
      --config.optimizer.learning_rate=2e-3 --config.optimizer.grad_clip_norm=0 \
      --config.decoder_phase.from_step=0 --workdir=…

Presets: `tiny` (tests: 32 px, a few steps), `shapes` (64 px `shapes`, a 2-core CPU experiment
of about half an hour), `paper` (256 px → 32×32 codes from 8192, the published recipe).
Re-running the same command on the same workdir resumes from the newest checkpoint.
"""

import ml_collections

from dalle_jax import config_parts


def _base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(dict(
        # Which stage-1 trainer runs this config.
        family="dvae",
        # 'gumbel' (the paper's relaxation) or 'vq' (nearest codebook vector, EMA codebook).
        quantizer="gumbel",
        # Codebook size (paper 8192).
        vocab_size=8192,
        # Width of the first group; groups are n_hid·{1, 2, 4, 8} (paper 256).
        n_hid=256,
        # Residual blocks per group (paper 2).
        n_blk_per_group=2,
        # 2× max-pools in the encoder (and 2× upsamplings in the decoder): 3 gives the paper's
        # grid, 8× smaller than the image; 2 a 4× grid (beyond the paper; experiments/dvae_shapes).
        downsample=3,
        # Decoder width right after the 1×1 input convolution from the codes (paper 128).
        n_init=128,
        # vq only: width of the codebook vectors.
        embed_dim=64,
        # gumbel only: the encoder's logits from a 1×1 convolution ('conv', the paper), or as
        # scaled negative squared distances of `embed_dim`-wide vectors to a learned codebook
        # ('distance': the same family of encoders, factored), or 'tied': that codebook's vectors
        # are also the decoder's input, as in a VQ-VAE (beyond the paper; experiments/dvae_shapes).
        gumbel_logits="conv",
        # Reconstruction likelihood: the paper's 'logit_laplace' (the decoder's 6 channels are μ and
        # ln b) or 'gaussian' (mean sigmoid(μ) on mapped pixels, fixed scale `sigma`; ln b unused):
        # a squared error that weighs every pixel alike (experiments/dvae_shapes).
        likelihood="logit_laplace",
        sigma=0.1,
        # Computation dtype of the residual groups ('float32' or 'bfloat16'); parameters float32.
        dtype="float32",
    ))
    c.gumbel = ml_collections.ConfigDict(dict(
        # Temperature τ, cosine 1 → 1/16 over the first 150,000 updates (linear tended to diverge).
        start_temperature=1.0,
        end_temperature=1.0 / 16,
        anneal_steps=150_000,
        # Feed the decoder the one-hot argmax with the soft sample's gradient.
        straight_through=False,
        # One-hot forward with ReinMax's second-order gradient estimate (Liu et al. 2023) in place
        # of the soft sample's (beyond the paper; on `shapes` it lost codes and 2–3 dB,
        # experiments/dvae_shapes).
        reinmax=False,
        # Scale of the gumbel noise, cosine start → end over noise_steps (paper: 1 throughout, a
        # sample of softmax(logits)). Fading it to 0 trains on the noiseless argmax codes that
        # `encode` hands to the transformer; short runs need this (experiments/dvae_shapes).
        start_noise=1.0,
        end_noise=1.0,
        noise_steps=150_000,
        # 'distance' / 'tied' logits only (beyond the paper): restart a code whose moving-average
        # use (decay `restart_decay`) falls below this share of the mean use per code, moving its
        # codebook vector to an encoder vector of the batch, as VQ does (0: never).
        restart_below=0.0,
        restart_decay=0.99,
        # Where restarted vectors come from: 'random' ones of the batch, or 'error': drawn in
        # proportion to their squared distance to their code.
        restart_from="error",
    ))
    c.kl = ml_collections.ConfigDict(dict(
        # KL weight β against the uniform prior, cosine 0 → 6.6 over the first 5,000 updates.
        start_beta=0.0,
        end_beta=6.6,
        anneal_steps=5_000,
        # Beyond the paper: weight of KL(batch-mean posterior ‖ uniform) (same per-value scale),
        # which asks for even codebook use without flattening each position's posterior.
        marginal_beta=0.0,
        # Its posteriors are softmax(logits / marginal_temperature): below 1 it follows argmax use.
        marginal_temperature=1.0,
    ))
    c.vq = ml_collections.ConfigDict(dict(
        # Weight of ‖z − sg(e)‖² in the loss.
        commitment=0.25,
        # Moving-average decay of the codebook counts and sums.
        ema_decay=0.99,
        # Laplace smoothing of the counts.
        ema_eps=1e-5,
        # Restart a code whose average count is below this share of the mean count (0: never).
        restart_below=0.03,
        # Where restarted codes come from: 'random' vectors of the batch, or 'error': vectors
        # drawn in proportion to their squared distance to their code (k-means++ seeding).
        restart_from="random",
    ))
    # Beyond the paper: each training image's colour channels in a random one of their six
    # orders (False: as stored). Objects then appear in colours and colour–shape pairs the data
    # never shows together, so codes learn outlines apart from colour (the `shapes` quickstart).
    c.augment = ml_collections.ConfigDict(dict(permute_channels=False))
    c.optimizer = ml_collections.ConfigDict(dict(
        # AdamW; learning rate cosine 1e-4 → 1.25e-6 over 1,200,000 updates.
        learning_rate=1e-4,
        end_learning_rate=1.25e-6,
        decay_steps=1_200_000,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=1e-4,
        # Clip gradients by global norm (0: off; the paper does not).
        grad_clip_norm=0.0,
        # Parameter moving average used for evaluation and encoding.
        ema_decay=0.999,
    ))
    # Beyond the paper: a last phase that trains the decoder alone (from_step 0: never). From
    # `from_step` on, the encoder (and codebook) stay frozen at their moving average, the one
    # `encode` and evaluation use, and the decoder learns to decode exactly the codes the
    # transformer will see (a `tied` codebook, the decoder's input vectors, stays frozen too:
    # it decides the codes); the learning rate restarts at `learning_rate` and falls by cosine
    # to optimizer.end_learning_rate at `end_step` (0: at optimizer.decay_steps; a later end_step
    # cuts the joint cosine short at from_step).
    c.decoder_phase = ml_collections.ConfigDict(dict(from_step=0, learning_rate=1e-3, end_step=0))
    c.train = config_parts.train_config(num_steps=1_200_000)
    # Logical axis → mesh axis; parameters shard their output channels over `fsdp`.
    c.partitioning = ml_collections.ConfigDict(dict(
        rules=dict(conv_out="fsdp", vocab="fsdp", embed=None, conv_in=None,
                   conv_height=None, conv_width=None),
    ))
    c.mesh = config_parts.mesh_config()
    return c


def _tiny(c):
    c.model.update(vocab_size=64, n_hid=16, n_blk_per_group=1, n_init=16, embed_dim=16)
    c.gumbel.update(anneal_steps=20, end_noise=0.0, noise_steps=10)
    c.kl.anneal_steps = 10
    c.optimizer.update(learning_rate=1e-3, end_learning_rate=1e-4, decay_steps=100)
    c.train.update(num_steps=6, log_every=1, eval_every=3, eval_batches=2, image_every=3,
                   checkpoint_every=3, async_checkpoints=False, tensorboard=False)
    c.data = config_parts.data_config(
        resolution=32, global_batch_size=8,
        shapes=dict(variant="objects", num_train=256, num_validation=32, num_test=32,
                    num_heldout=32, seed=0),
    )
    c.text = config_parts.text_config(vocab_size=512, text_len=16)


def _shapes(c):
    # Measured on a 2-core CPU (experiments/dvae_shapes): a narrow network (n_hid 16, 0.074 s
    # per step at batch 8, 2.3× the images/s of n_hid 32) taking many small steps, and a squared
    # error (`gaussian`) instead of the logit-Laplace, which at this length left the few object
    # pixels blurred (+3.5 dB at 1,200 steps).
    # Gumbel logits are distances to a codebook whose vectors the decoder also sees (`tied`), with
    # unused codes restarted on badly coded encoder vectors, as in a VQ-VAE (3,000-step trials:
    # 26.0 → 27.5 dB, experiments/dvae_shapes).
    c.model.update(vocab_size=512, n_hid=16, n_blk_per_group=1, n_init=64, embed_dim=32,
                   likelihood="gaussian", gumbel_logits="tied")
    # Gumbel: with the paper's full noise every position's argmax collapses onto one code while the
    # information travels in which other code wins the gumbel-max, so argmax codes decode badly.
    # This preset trains on hard one-hot samples (straight-through) and fades the noise to 0 over
    # 2,000 steps: from then on the decoder sees exactly the argmax codes that `encode` gives.
    # Since the per-position KL keeps the logits nearly flat while few codes win the argmax, β ends
    # at 0.1 and the batch's marginal use of codes, sharpened at τ 0.25, is pulled towards uniform
    # (3,000-step trials: 23.4 → 26.0 dB, 8% → 58% of codes). τ falls to 1/4 over the same 2,000
    # steps, so the straight-through gradient is that of a sharper softmax than the one the KL
    # flattens; with restarts the codes no longer collapse as they did at 1/16 without them
    # (3,000-step trials: τ 1, 27.47 dB; 1/4, 27.80; 1/10, 27.79).
    c.gumbel.update(end_temperature=0.25, anneal_steps=2_000, straight_through=True, end_noise=0.0,
                    noise_steps=2_000, restart_below=0.03)
    c.kl.update(end_beta=0.1, anneal_steps=1_000, marginal_beta=6.6, marginal_temperature=0.25)
    # VQ: dead codes restart on the badly coded patches (objects), not uniformly (background).
    # experiments/dvae_shapes runs it at learning rate 2e-3 without clipping, for 18,000 steps,
    # without the decoder phase.
    c.vq.restart_from = "error"
    # 16,000 joint steps: 23.5 min on a 2-core CPU with a 314 GFLOP/s peak (0.088 s a step), 36.5
    # min (τ 1) and 38.9 min (τ → 1/4) on one with 184–200 GFLOP/s (0.14 s); experiments/dvae_shapes.
    c.optimizer.update(learning_rate=2e-3, end_learning_rate=1e-5, decay_steps=18_000,
                       ema_decay=0.99, grad_clip_norm=5.0)
    # The joint cosine over 18,000 steps is cut at 12,000; the last 8,000 of 20,000 steps train
    # the decoder alone on the frozen encoder's codes (at about 0.6× a joint step's time), with
    # their own cosine to 20,000: 30.04 dB on 1,000 images (6,000 to 18,000: 29.93; 4,000 of
    # 16,000: 29.90; 16,000 joint steps: 29.67). On a 2-core AMD EPYC, 24.5 min for 18,000
    # steps (37.5 on a 2-core Xeon, the same result to the bit), 26.8 for 20,000 measured end to
    # end (experiments/dvae_shapes).
    c.decoder_phase.update(from_step=12_000, learning_rate=2e-3, end_step=20_000)
    c.train.update(num_steps=20_000, log_every=100, eval_every=2_000, eval_batches=32,
                   image_every=4_000, checkpoint_every=4_000)
    # The 20,000 train images (240 MiB) decoded once into memory, read in this process.
    c.data = config_parts.data_config(resolution=64, global_batch_size=8, worker_count=0,
                                      cache=True)
    c.text = config_parts.text_config(vocab_size=2048, text_len=32)


def _paper(c):
    c.train.update(log_every=100, eval_every=10_000, image_every=10_000, checkpoint_every=10_000)
    c.data = config_parts.data_config(dataset="image_text_folder", resolution=256,
                                      global_batch_size=512, worker_count=8)
    c.text = config_parts.text_config(vocab_size=16384, text_len=256)


PRESETS = {"tiny": _tiny, "shapes": _shapes, "paper": _paper}


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    """The config of `preset`."""
    c = _base()
    config_parts.pick_preset(PRESETS, preset, __file__)(c)
    c.preset = preset
    return c
