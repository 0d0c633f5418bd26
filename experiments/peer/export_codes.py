"""Writes what the peer needs to train on exactly our data: one .npz of image codes and BPE ids.

Run with the project's Python, after the transformer's codes exist:

  python experiments/peer/export_codes.py --workdir=workdirs/shapes/dalle \\
      --out=workdirs/shapes/peer/data.npz --captions=64

For each split the transformer's dataset holds (train, validation, heldout): `<split>_codes`
(N, grid²) int16, the dVAE's codes of every scene; `<split>_text` (M, text_len) int32, the ids of
every caption line, as the workdir's own BPE tokenizer gives them (0 pads, as in dalle-pytorch);
`<split>_owner` (M,) the scene each line belongs to. For the evaluated splits, `<split>_prompts`
(the first line of the first --captions scenes, the captions `evaluate` samples for) and
`<split>_prompt_text`. `config` (a JSON string) carries the transformer's shape, optimizer and
batch, so the peer is built and trained alike (experiments/peer/train_codes.py).
"""

import argparse
import json
import sys

import numpy as np


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="a transformer workdir trained on image_codes")
    p.add_argument("--out", required=True, help="the .npz to write")
    p.add_argument("--captions", type=int, default=64, help="evaluation captions per split")
    p.add_argument("--eval_splits", default="validation,heldout")
    return p.parse_args(argv)


def export(workdir: str, out: str, captions: int, eval_splits: list[str]) -> dict:
    """Writes the .npz; returns a summary (rows per split)."""
    from dalle_jax.data.captions import caption_lines
    from dalle_jax.data.sources import open_builder
    from dalle_jax.data import pipeline
    from dalle_jax.models.dalle.attention_masks import layer_kinds
    from dalle_jax.training import checkpoint

    config = checkpoint.load_config(workdir)
    data, m = config.data, config.model
    if data.dataset != "image_codes":
        raise SystemExit(f"{workdir} trained on {data.dataset!r}, not on image codes")
    tokenizer = pipeline.ensure_tokenizer(config, workdir)
    builder = open_builder(data.dataset, data.data_dir, data.config or None)
    arrays, summary = {}, {}
    for split in builder.info.splits:
        source = builder.as_data_source(split=split)
        codes, text, owner = [], [], []
        for i in range(len(source)):
            record = source[i]
            codes.append(np.asarray(record["codes"], np.int16).reshape(-1))
            lines = caption_lines(record[data.caption_key])
            text.append(tokenizer.encode_batch(lines))
            owner += [i] * len(lines)
        arrays[f"{split}_codes"] = np.stack(codes)
        arrays[f"{split}_text"] = np.concatenate(text).astype(np.int32)
        arrays[f"{split}_owner"] = np.asarray(owner, np.int32)
        if split in eval_splits:
            first = [caption_lines(source[i][data.caption_key])[0]
                     for i in range(min(captions, len(source)))]
            arrays[f"{split}_prompts"] = np.asarray(first)
            arrays[f"{split}_prompt_text"] = tokenizer.encode_batch(first).astype(np.int32)
        summary[split] = {"scenes": len(codes), "captions": len(owner)}
    o = config.optimizer
    shape = dict(
        grid=m.grid, text_len=m.text_len, text_vocab=m.text_vocab, image_vocab=m.image_vocab,
        width=m.width, depth=m.depth, heads=m.heads, head_dim=m.head_dim,
        conv_kernel=m.conv_kernel, kinds=list(layer_kinds(m.depth, m.pattern)),
        batch=data.global_batch_size, caption_dropout=config.text.caption_dropout,
        image_weight=config.loss.image_weight, text_weight=config.loss.text_weight,
        learning_rate=o.learning_rate, warmup_steps=o.warmup_steps,
        end_learning_rate=o.get("end_learning_rate", 0.0), b1=o.get("b1", 0.9),
        b2=o.get("b2", 0.999), weight_decay=o.get("weight_decay", 0.0),
        grad_clip_norm=o.get("grad_clip_norm", 0.0), steps=config.train.num_steps)
    np.savez_compressed(out, config=json.dumps(shape), **arrays)
    return {"out": out, "splits": summary, "config": shape}


def main(argv):
    import os

    args = parse(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    splits = [s.strip() for s in args.eval_splits.split(",") if s.strip()]
    print(json.dumps(export(args.workdir, args.out, args.captions, splits)))


if __name__ == "__main__":
    main(sys.argv[1:])
