"""Speed of the peer, lucidrains' dalle-pytorch 1.6.6, on this machine's CPU.

Builds `dalle_pytorch.DALLE` on a `DiscreteVAE` of the given image size, layer count and codebook
(random weights; the VAE only gives the transformer its image shapes and decodes the sampled codes),
then measures, with `time.perf_counter`:

- training (unless --skip-train): --warmup untimed steps, then --steps timed ones, each
  `DALLE(text, codes, return_loss=True)`, backward and `Adam(lr=3e-4).step()` at --batch. Text ids
  (in [1, num_text_tokens): no padding id 0) and image code ids are random with a fixed seed; the
  image goes in as code ids, so a step is the transformer alone. Reports seconds per step (mean,
  min, max), tokens per second (tokens = batch × (text length + image codes)) and the peak RSS.
- generation, for each mode of --gen-cache and each batch b of --gen-batches: one
  `generate_images` call for one prompt repeated b times (top-k at --filter-thres, default 0.5 as
  in the package), after one untimed no-grad forward; the time includes decoding the codes with
  the VAE. Reports seconds per image. Modes:
    off    generate_images() as shipped: no cache, every step reruns the whole prefix;
    on     use_cache=True as shipped: at cond_scale=1 this is the same as off, because
           DALLE.forward_with_cond_scale drops its `cache` argument there;
    fixed  use_cache=True with the package's cache repaired for this run (see repaired_cache):
           the cache reaches the model, and each non-`full` attention layer keeps its own past
           inputs. Full attention layers then run one token a step; the sparse ones still recompute
           the whole sequence. Where `off` ran at the same batch, the record has the largest
           absolute difference between the two runs' images (0 when the sampled codes agree).

The VAE's own training is not timed (--skip-vae is accepted and is the only behaviour).

Runs on CPU with --threads torch threads, in float32, or with --autocast bf16 under PyTorch's CPU
bfloat16 autocast (weights and Adam stay float32; the forward passes run in autocast, the backward
follows the forward's dtypes). If no real `taming` package is installed, the stand-in in stub/
beside this file is put on sys.path: dalle_pytorch imports two names from it and never uses them.

Prints one JSON line (configuration, versions, figures) on stdout; progress goes to stderr.
bash experiments/peer/setup.sh builds the Python it needs and prints its path:

  PEER_PY=$(bash experiments/peer/setup.sh | tail -n 1)
  $PEER_PY experiments/peer/bench.py --name tiny --dim 64 --depth 2 --heads 2 --dim-head 32 \\
      --text-seq-len 16 --num-text-tokens 256 --image-size 32 --vae-layers 2 \\
      --num-image-tokens 64 --attn-types full --batch 2 --steps 2 --warmup 1 \\
      --gen-batches 1,2 --gen-cache off,fixed
"""

import argparse
import contextlib
import datetime
import functools
import importlib.util
import json
import os
import platform
import resource
import sys
import time
from importlib import metadata

STUB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stub")
CACHE_MODES = ("off", "on", "fixed")


def say(*parts):
    print(*parts, file=sys.stderr, flush=True)


def peak_rss_mib():
    """The process's peak resident set so far, MiB (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def int_list(text):
    return [int(x) for x in text.split(",") if x.strip()]


def word_list(text):
    return [x.strip() for x in text.split(",") if x.strip()]


def cache_modes(text):
    modes = word_list(text)
    for m in modes:
        if m not in CACHE_MODES:
            raise argparse.ArgumentTypeError(f"unknown cache mode {m!r} (one of {', '.join(CACHE_MODES)})")
    return modes


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="peer", help="label copied into the JSON line")
    model = p.add_argument_group("transformer")
    model.add_argument("--dim", type=int, default=512)
    model.add_argument("--depth", type=int, default=8)
    model.add_argument("--heads", type=int, default=8)
    model.add_argument("--dim-head", type=int, default=64)
    model.add_argument("--text-seq-len", type=int, default=64)
    model.add_argument("--num-text-tokens", type=int, default=4096, help="text vocabulary")
    model.add_argument("--attn-types", type=word_list, default=["full"],
                       help="comma list of full, axial_row, axial_col, conv_like; the package repeats it "
                            "over the depth")
    vae = p.add_argument_group("VAE (gives the image shapes and decodes generated codes)")
    vae.add_argument("--image-size", type=int, default=128)
    vae.add_argument("--vae-layers", type=int, default=3, help="the code grid is image-size / 2**vae-layers")
    vae.add_argument("--num-image-tokens", type=int, default=1024, help="codebook size")
    vae.add_argument("--vae-codebook-dim", type=int, default=512)
    vae.add_argument("--vae-hidden-dim", type=int, default=64)
    vae.add_argument("--skip-vae", action="store_true",
                     help="accepted for compatibility: VAE training is never timed here")
    run = p.add_argument_group("run")
    run.add_argument("--batch", type=int, default=8, help="training batch")
    run.add_argument("--steps", type=int, default=5, help="timed training steps")
    run.add_argument("--warmup", type=int, default=1, help="untimed training steps before them")
    run.add_argument("--skip-train", action="store_true")
    run.add_argument("--gen-batches", type=int_list, default=[1, 8],
                     help="comma list of generation batch sizes; '' skips generation")
    run.add_argument("--gen-cache", type=cache_modes, default=["off", "fixed"],
                     help="comma list of generation modes: off, on, fixed (see above)")
    run.add_argument("--filter-thres", type=float, default=0.5, help="generate_images top-k threshold")
    run.add_argument("--autocast", choices=("off", "bf16"), default="off",
                     help="bf16: forward passes under torch.autocast('cpu', dtype=torch.bfloat16)")
    run.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    run.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.steps < 1 and not args.skip_train:
        p.error("--steps must be at least 1 (or pass --skip-train)")
    return args


def import_peer():
    """dalle_pytorch, and whether the taming stand-in had to be put on the path."""
    stub = importlib.util.find_spec("taming") is None
    if stub:
        sys.path.insert(0, STUB)
    import warnings

    warnings.filterwarnings("ignore")  # the package's import-time deprecation noise
    import dalle_pytorch

    return dalle_pytorch, stub


def installed(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextlib.contextmanager
def repaired_cache(dalle):
    """While open, generate_images(use_cache=True) on this model runs dalle-pytorch 1.6.6's own
    key/value cache, and runs it correctly. Two faults of the shipped package are mended, on this
    instance only (nothing else in the package changes, and both are undone on exit):

    1. `DALLE.forward_with_cond_scale` does not hand `cache` on to the model when cond_scale is 1
       (the default), so the cache is never used. Here it is handed on; other cond_scales still go
       to the shipped method.
    2. Every non-`full` attention layer is wrapped in `transformer.NonCached`, which keeps the
       layer's past inputs in `cache[cache_key]`, but no caller gives it a key: all such layers
       share `cache[None]`, and from the second one on a layer is fed another layer's inputs.
       Here each gets a key of its own.
    """
    from dalle_pytorch.transformer import NonCached

    shipped = dalle.forward_with_cond_scale

    def forward_with_cond_scale(*args, cond_scale=1, cache=None, **kwargs):
        if cond_scale == 1:
            return dalle(*args, cache=cache, **kwargs)
        return shipped(*args, cond_scale=cond_scale, cache=cache, **kwargs)

    wrappers = [m for m in dalle.modules() if isinstance(m, NonCached)]
    dalle.forward_with_cond_scale = forward_with_cond_scale  # instance attributes shadow the class's
    for i, m in enumerate(wrappers):
        m.forward = functools.partial(NonCached.forward, m, cache_key=f"noncached_{i}")
    try:
        yield
    finally:
        del dalle.forward_with_cond_scale
        for m in wrappers:
            del m.forward


def main(argv=None):
    began = time.perf_counter()
    args = parse(argv)
    import torch

    torch.set_num_threads(args.threads)
    dalle_pytorch, stub = import_peer()

    def amp():
        if args.autocast == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    grid = args.image_size // 2 ** args.vae_layers
    image_len = grid * grid
    seq_len = args.text_seq_len + image_len

    torch.manual_seed(args.seed)
    vae = dalle_pytorch.DiscreteVAE(
        image_size=args.image_size, num_layers=args.vae_layers, num_tokens=args.num_image_tokens,
        codebook_dim=args.vae_codebook_dim, hidden_dim=args.vae_hidden_dim, num_resnet_blocks=0)
    dalle = dalle_pytorch.DALLE(
        dim=args.dim, vae=vae, num_text_tokens=args.num_text_tokens, text_seq_len=args.text_seq_len,
        depth=args.depth, heads=args.heads, dim_head=args.dim_head, attn_types=tuple(args.attn_types),
        shift_tokens=True, rotary_emb=True, reversible=False, optimize_for_inference=False)
    trainable = [p for p in dalle.parameters() if p.requires_grad]  # the VAE inside is frozen
    say(f"{args.name}: DALLE with {sum(p.numel() for p in trainable) / 1e6:.2f} M trainable parameters, "
        f"sequence {args.text_seq_len} + {image_len}, attention {','.join(args.attn_types)}, "
        f"{args.threads} threads, autocast {args.autocast}")

    record = {
        "name": args.name,
        "impl": "dalle-pytorch",
        "harness": "experiments/peer/bench.py",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": {
            "dalle_pytorch": dalle_pytorch.__version__,
            "torch": torch.__version__,
            "rotary_embedding_torch": installed("rotary-embedding-torch"),
            "axial_positional_embedding": installed("axial-positional-embedding"),
            "einops": installed("einops"),
            "python": platform.python_version(),
            "taming_stub": stub,
        },
        "machine": {"cpu": cpu_name(), "nproc": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch_interop_threads": torch.get_num_interop_threads()},
        "config": {
            "dim": args.dim, "depth": args.depth, "heads": args.heads, "dim_head": args.dim_head,
            "text_seq_len": args.text_seq_len, "num_text_tokens": args.num_text_tokens,
            "image_size": args.image_size, "vae_layers": args.vae_layers, "image_fmap": grid,
            "image_seq_len": image_len, "seq_len": seq_len, "num_image_tokens": args.num_image_tokens,
            "vae_codebook_dim": args.vae_codebook_dim, "vae_hidden_dim": args.vae_hidden_dim,
            "vae_resnet_blocks": 0, "attn_types": list(args.attn_types), "shift_tokens": True,
            "rotary_emb": True, "reversible": False, "optimize_for_inference": False,
            "loss_img_weight": dalle.loss_img_weight, "ff_mult": 4, "batch": args.batch, "seed": args.seed,
            "dtype": "float32", "autocast": "bfloat16" if args.autocast == "bf16" else None,
            "filter_thres": args.filter_thres,
        },
        "vae_params": sum(p.numel() for p in vae.parameters()),
        "dalle_params_trainable": sum(p.numel() for p in trainable),
        "dalle_params_total": sum(p.numel() for p in dalle.parameters()),
        "dalle_total_tokens_vocab": dalle.total_tokens,
    }
    if args.autocast == "bf16":
        record["autocast"] = "bfloat16"  # the precision the run's matmuls ran in (float32 when absent)

    rng = torch.Generator().manual_seed(args.seed)
    text = torch.randint(1, args.num_text_tokens, (args.batch, args.text_seq_len), generator=rng)
    codes = torch.randint(0, args.num_image_tokens, (args.batch, image_len), generator=rng)

    if not args.skip_train:
        dalle.train()
        adam = torch.optim.Adam(trainable, lr=3e-4)

        def train_step():
            with amp():
                loss = dalle(text, codes, return_loss=True)
            adam.zero_grad(set_to_none=True)
            loss.backward()
            adam.step()
            return loss.item()

        t = time.perf_counter()
        for _ in range(args.warmup):
            train_step()
        warmup_s = time.perf_counter() - t
        times = []
        for i in range(args.steps):
            t = time.perf_counter()
            loss = train_step()
            times.append(time.perf_counter() - t)
            say(f"  train step {i + 1}/{args.steps}: {times[-1]:.3f} s, loss {loss:.3f}")
        total = sum(times)
        tokens = args.batch * seq_len
        record["dalle_train"] = {
            "steps": args.steps, "warmup": args.warmup, "warmup_s": warmup_s,
            "s_per_step": total / args.steps, "s_per_step_min": min(times), "s_per_step_max": max(times),
            "tokens_per_step": tokens, "tokens_per_s": tokens * args.steps / total, "last_loss": loss,
            "peak_rss_mib_so_far": peak_rss_mib(),
            "note": "tokens = batch*(text_seq_len+image_seq_len); image given as code ids",
        }
        say("train", json.dumps(record["dalle_train"]))
        del adam
        dalle.zero_grad(set_to_none=True)

    record["generate"] = []
    if args.gen_batches and args.gen_cache:
        dalle.eval()
        with torch.no_grad(), amp():  # untimed: first-call costs of a full-length forward
            dalle(text, codes)
        off_images = {}
        for mode in args.gen_cache:
            for b in args.gen_batches:
                prompt = text[:1].expand(b, -1).contiguous()
                repair = repaired_cache(dalle) if mode == "fixed" else contextlib.nullcontext()
                torch.manual_seed(args.seed)
                with repair, torch.no_grad(), amp():
                    t = time.perf_counter()
                    images = dalle.generate_images(prompt, filter_thres=args.filter_thres,
                                                   use_cache=mode != "off")
                    took = time.perf_counter() - t
                assert images.shape == (b, 3, args.image_size, args.image_size), images.shape
                entry = {"batch": b, "mode": mode, "use_cache_arg": mode != "off", "s_total": took,
                         "s_per_image": took / b, "s_per_token_step": took / image_len,
                         "sampled_tokens": image_len, "peak_rss_mib_so_far": peak_rss_mib()}
                if mode == "off":
                    off_images[b] = images
                elif b in off_images:
                    entry["max_abs_diff_vs_off"] = (images.float() - off_images[b].float()).abs().max().item()
                record["generate"].append(entry)
                say("generate", json.dumps(entry))

    record["peak_rss_mib"] = peak_rss_mib()
    record["wall_s"] = round(time.perf_counter() - began, 1)
    print(json.dumps(record), flush=True)
    return record


if __name__ == "__main__":
    main()
