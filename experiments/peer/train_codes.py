"""Trains the peer, lucidrains' dalle-pytorch 1.6.6, on our image codes and BPE ids for a set time.

Run with the peer's Python (experiments/peer/setup.sh) on the .npz of export_codes.py:

  PEER_PY=$(bash experiments/peer/setup.sh | tail -n 1)
  $PEER_PY experiments/peer/train_codes.py --data=workdirs/shapes/peer/data.npz \\
      --seconds=1200 --out=workdirs/shapes/peer

The peer's `DALLE` takes the exported transformer's shape: width, depth, heads, head size, text
length and vocabulary, the codes' grid and vocabulary, and each layer's attention pattern mapped to
the package's own (`row` → `axial_row`, `column` → `axial_col`, `conv` → `conv_like`, whose kernel
the package fixes at 5), loss weight image : text as ours; everything else is the package's
default (rotary embeddings, token shift). The `DiscreteVAE` it requires only tells it the code
grid: it is never run, since training takes code ids in place of images and sampling returns the
codes before they would be decoded. Training: AdamW with our β, weight decay (on matrices only),
gradient clipping, peak learning rate and warm-up steps, then a cosine decay to our end learning
rate over the fraction of --seconds spent (the step count is not known in advance); our batch, a
random caption line per scene each time, captions dropped at our rate; forward passes under
PyTorch's CPU bfloat16 autocast (--autocast off: float32).

The clock counts training steps only: --seconds of them. At each fraction of --eval_at the clock
stops and the validation split's bits per image token are measured (every scene, its first caption
line). Then --samples code grids are drawn for each evaluation prompt (temperature --temperature,
no top-k, as ours). Writes OUT/curve.jsonl (one line per evaluation) and OUT/samples.npz
(`<split>_codes` (prompts, samples, grid²), `<split>_prompts`), and prints one JSON line.
experiments/peer/judge_codes.py then judges those samples with our dVAE and caption checker.
"""

import argparse
import contextlib
import json
import math
import os
import sys
import time

import numpy as np

import bench  # this folder's harness: the peer's import, versions, machine

KINDS = {"row": "axial_row", "column": "axial_col", "conv": "conv_like", "full": "full"}
PEER_CONV_KERNEL = 5  # SparseConvCausalAttention's default; dalle-pytorch does not expose it


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the .npz of export_codes.py")
    p.add_argument("--seconds", type=float, required=True, help="training time, evaluations excluded")
    p.add_argument("--out", required=True, help="folder for curve.jsonl and samples.npz")
    p.add_argument("--eval_at", type=bench.word_list, default=["0.25", "0.5", "0.75", "1"],
                   help="fractions of --seconds at which validation is measured")
    p.add_argument("--samples", type=int, default=8, help="code grids drawn per evaluation prompt")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--autocast", choices=("off", "bf16"), default="bf16")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--eval_batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.samples < 0:
        p.error(f"--seconds must be positive and --samples ≥ 0 (got {args.seconds}, {args.samples})")
    args.eval_at = sorted(float(f) for f in args.eval_at)
    if not args.eval_at or args.eval_at[0] <= 0 or args.eval_at[-1] != 1:
        p.error(f"--eval_at {args.eval_at}: fractions in (0, 1], the last one 1")
    return args


def build(torch, dalle_pytorch, c):
    """The peer's DALLE in the exported transformer's shape."""
    if c["conv_kernel"] != PEER_CONV_KERNEL and "conv" in c["kinds"]:
        bench.say(f"note: the peer's conv_like kernel is {PEER_CONV_KERNEL}, ours {c['conv_kernel']}")
    # DiscreteVAE insists on a power-of-two image side; only image_size // 2**num_layers (the
    # grid) reaches DALLE, so it is built at 64 and told the grid's side.
    vae = dalle_pytorch.DiscreteVAE(image_size=64, num_layers=3, num_tokens=c["image_vocab"],
                                    codebook_dim=32, hidden_dim=16)
    vae.image_size = c["grid"] * 8
    return dalle_pytorch.DALLE(
        dim=c["width"], vae=vae, num_text_tokens=c["text_vocab"], text_seq_len=c["text_len"],
        depth=c["depth"], heads=c["heads"], dim_head=c["head_dim"],
        attn_types=tuple(KINDS[k] for k in c["kinds"]),
        loss_img_weight=c["image_weight"] / c["text_weight"])


def optimizer(torch, model, c):
    """AdamW as ours: decay on matrices only."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": c["weight_decay"]},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=c["learning_rate"], betas=(c["b1"], c["b2"]), eps=1e-8)


def learning_rate(c, step, fraction):
    """Linear warm-up over our steps, then cosine to our end rate over the time fraction spent."""
    peak, end = c["learning_rate"], c["end_learning_rate"]
    cosine = end + (peak - end) * 0.5 * (1 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))
    return cosine * min(1.0, (step + 1) / max(c["warmup_steps"], 1))


def image_bits(torch, model, text, codes, batch, amp):
    """Mean bits per image token of the codes given their captions."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for s in range(0, len(codes), batch):
            t = torch.from_numpy(text[s:s + batch]).long()
            i = torch.from_numpy(codes[s:s + batch]).long()
            with amp():
                logits = model(t, i)
            logits = logits[:, model.text_seq_len:].float()
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), (i + model.num_text_tokens).reshape(-1),
                reduction="sum")
            total += float(nll)
            count += i.numel()
    model.train()
    return total / count / math.log(2)


def first_lines(arrays, split):
    """Each scene's first caption line's ids."""
    owner = arrays[f"{split}_owner"]
    _, first = np.unique(owner, return_index=True)
    return arrays[f"{split}_text"][first]


def sample_codes(torch, model, text, count, temperature, amp):
    """(P, count, grid²) codes drawn for text ids (P, L), the package's generate_images."""
    model.vae.decode = lambda codes: codes  # return the codes, not pixels
    rows = torch.from_numpy(np.repeat(text, count, axis=0)).long()
    out = []
    for s in range(0, len(rows), 64):
        with amp():
            out.append(model.generate_images(rows[s:s + 64], filter_thres=0.0,
                                             temperature=temperature).numpy())
    return np.concatenate(out).reshape(len(text), count, -1)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    dalle_pytorch, stub = bench.import_peer()
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    arrays = dict(np.load(args.data))
    c = json.loads(str(arrays.pop("config")))
    model = build(torch, dalle_pytorch, c)
    opt = optimizer(torch, model, c)

    def amp():
        if args.autocast == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    codes, text, owner = arrays["train_codes"], arrays["train_text"], arrays["train_owner"]
    lines_of = [[] for _ in range(len(codes))]
    for row, scene in enumerate(owner):
        lines_of[scene].append(row)
    val_text, val_codes = first_lines(arrays, "validation"), arrays["validation_codes"]
    os.makedirs(args.out, exist_ok=True)
    curve_path = os.path.join(args.out, "curve.jsonl")
    open(curve_path, "w").close()
    batch, spent, step, order, losses = c["batch"], 0.0, 0, np.array([], int), []
    marks = list(args.eval_at)
    bench.say(f"peer: training for {args.seconds:.0f} s at batch {batch}")
    while marks:
        if len(order) < batch:
            order = np.concatenate([order, rng.permutation(len(codes))])
        idx, order = order[:batch], order[batch:]
        rows = [lines_of[i][rng.integers(len(lines_of[i]))] for i in idx]
        start = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = learning_rate(c, step, spent / args.seconds)
        with amp():
            loss = model(torch.from_numpy(text[rows]).long(), torch.from_numpy(codes[idx]).long(),
                         return_loss=True, null_cond_prob=c["caption_dropout"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if c["grad_clip_norm"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), c["grad_clip_norm"])
        opt.step()
        spent += time.perf_counter() - start
        step += 1
        losses.append(float(loss))
        if step % 50 == 0:
            bench.say(f"peer: step {step}, {spent:.0f} s, loss {np.mean(losses[-50:]):.3f}")
        if spent >= marks[0] * args.seconds:
            record = {"step": step, "train_seconds": round(spent, 1),
                      "fraction": marks.pop(0), "train_loss": float(np.mean(losses[-50:])),
                      "validation_bits_per_image_token": image_bits(
                          torch, model, val_text, val_codes, args.eval_batch, amp)}
            bench.say(f"peer: {record}")
            with open(curve_path, "a") as f:
                f.write(json.dumps(record) + "\n")
    samples = {}
    model.eval()
    for split in ("validation", "heldout"):
        if args.samples and f"{split}_prompt_text" in arrays:
            bench.say(f"peer: sampling {args.samples} per prompt of {split}")
            t0 = time.perf_counter()
            samples[f"{split}_codes"] = sample_codes(torch, model, arrays[f"{split}_prompt_text"],
                                                     args.samples, args.temperature, amp)
            samples[f"{split}_prompts"] = arrays[f"{split}_prompts"]
            samples[f"{split}_sample_seconds"] = np.float64(time.perf_counter() - t0)
    np.savez_compressed(os.path.join(args.out, "samples.npz"), **samples)
    print(json.dumps({
        "name": "dalle-pytorch", "version": bench.installed("dalle-pytorch"),
        "torch": torch.__version__, "taming_stub": stub, "cpu": bench.cpu_name(),
        "autocast": args.autocast, "threads": args.threads, "seconds": args.seconds,
        "steps": step, "steps_per_s": step / spent, "final": record,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "peak_rss_mib": bench.peak_rss_mib(), "samples_per_prompt": args.samples,
        "temperature": args.temperature, "config": c}))


if __name__ == "__main__":
    main()
