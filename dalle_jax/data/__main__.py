"""Data commands.

  python -m dalle_jax.data prepare --dataset=shapes --data_dir=DIR [--resolution=64] [--num_train=N]
  python -m dalle_jax.data prepare --dataset=image_text_folder --source=PATH --data_dir=DIR [--name=NAME]
  python -m dalle_jax.data inspect --config=configs/data.py:tiny --workdir=DIR [--num_batches=4]
  python -m dalle_jax.data encode --tokenizer=DIR|vqgan:DIR --dataset=shapes --data_dir=DIR [--splits=train,validation]

`prepare` and `encode` end by printing one JSON line; `inspect` prints a JSON summary and writes a PNG grid.
Bad values get a one-line error and exit status 2. On a pod slice every host runs the same
command (`DALLE_JAX_COORDINATOR` & co., or `DALLE_JAX_DISTRIBUTED=auto`): `prepare` is written
by the first host while the others wait; in `encode` each host encodes its own share of the
images on its own devices, and the first writes the codes.
"""

from __future__ import annotations

import argparse
import json
import sys

from dalle_jax.cli import fail, join_hosts, parse_flags, print_commands, wants_help
from dalle_jax.xla_cpu.huge_pages import use_huge_pages

USAGE = "usage: python -m dalle_jax.data {prepare,inspect,encode} [flags]  (--help on each)"


def prepare_main(argv: list[str]) -> None:
    """`prepare`: builds one dataset and prints its summary."""
    p = argparse.ArgumentParser(prog="python -m dalle_jax.data prepare")
    p.add_argument("--dataset", required=True, help="shapes, image_text_folder or a TFDS catalog name")
    p.add_argument("--data_dir", required=True, help="where prepared datasets are written")
    p.add_argument("--resolution", type=int, help="image side in pixels")
    p.add_argument("--seed", type=int, help="shapes: scene seed")
    p.add_argument("--variant", help="shapes: 'objects', 'bold' or 'words'")
    for split in ("train", "validation", "test", "heldout"):
        p.add_argument(f"--num_{split}", type=int, help=f"shapes: examples in {split}")
    p.add_argument("--source", help="image_text_folder: a folder, a CSV/JSONL manifest or .tar shards")
    p.add_argument("--name", help="image_text_folder: name of the prepared dataset")
    p.add_argument("--caption_mode", help="image_text_folder: 'each_line' or 'random'")
    p.add_argument("--validation_fraction", type=float, help="image_text_folder: share held for validation")
    p.add_argument("--image_field", help="image_text_folder manifests: image path column")
    p.add_argument("--caption_field", help="image_text_folder manifests: caption column")
    p.add_argument("--image_format", help="image_text_folder: 'png' or 'jpeg' storage")
    args = vars(p.parse_args(argv))
    join_hosts()
    from dalle_jax.data import registry
    from dalle_jax.parallel import hosts

    dataset, data_dir = args.pop("dataset"), args.pop("data_dir")
    try:  # on a pod, the first host writes and the others then read what it wrote
        summary = hosts.primary_first("preparing the data",
                                      lambda: registry.prepare(dataset, data_dir, **args))
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    print(json.dumps(summary))


def inspect_main(argv: list[str]) -> None:
    """`inspect`: a config's data, tokenizer and sharded batches, summarised."""
    from absl import flags
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file("config", None, "config file[:preset]", lock_config=True,
                                             sys_argv=["inspect", *argv])
    workdir = flags.DEFINE_string("workdir", None, "where the tokenizer and batch.png go")
    num_batches = flags.DEFINE_integer("num_batches", 4, "batches to draw")
    flags.mark_flags_as_required(["config", "workdir"])
    parse_flags("python -m dalle_jax.data inspect", argv)
    from dalle_jax.data.preview import preview

    try:
        summary = preview(config.value, workdir.value, num_batches.value)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    print(json.dumps(summary))


def encode_main(argv: list[str]) -> None:
    """`encode`: a prepared dataset's images → stage-1 codes, written as the `image_codes` dataset."""
    p = argparse.ArgumentParser(prog="python -m dalle_jax.data encode")
    p.add_argument("--tokenizer", "--dvae_workdir", dest="tokenizer", required=True,
                   help="the image tokenizer: a trained stage-1 workdir, vqgan:DIR (a converted "
                        "VQGAN) or vqgan:PRESET:CKPT (taming's checkpoint; needs torch)")
    p.add_argument("--dataset", required=True, help="the prepared dataset to encode")
    p.add_argument("--data_dir", required=True, help="where it is prepared (and where codes go)")
    p.add_argument("--config", help="its prepared config, if it has several")
    p.add_argument("--splits", help="comma-separated splits (default: all)")
    p.add_argument("--out_data_dir", help="write the codes here instead of --data_dir")
    p.add_argument("--batch_size", type=int, default=64, help="images per encoder call")
    p.add_argument("--resolution", type=int,
                   help="image side to encode at (default: the dVAE's, or the VQGAN's 256)")
    p.add_argument("--image_key", help="the source's image field (default: the dVAE's, or image)")
    p.add_argument("--caption_key", help="the source's caption field (default: the dVAE's, or "
                                         "caption)")
    args = p.parse_args(argv)
    join_hosts()
    from dalle_jax.data.image_codes import image_codes
    from dalle_jax.generation.codec import load_codec

    try:
        summary = image_codes.prepare(
            load_codec(args.tokenizer), args.dataset, args.data_dir, config=args.config,
            splits=tuple(s for s in (args.splits or "").split(",") if s) or None,
            out_data_dir=args.out_data_dir, batch_size=args.batch_size,
            resolution=args.resolution, image_key=args.image_key, caption_key=args.caption_key)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    print(json.dumps(summary))


COMMANDS = {"prepare": prepare_main, "inspect": inspect_main, "encode": encode_main}


def main(argv: list[str]) -> None:
    """Dispatches to a command."""
    if argv and wants_help(argv[:1]):
        print_commands("python -m dalle_jax.data", __doc__, COMMANDS)
    if not argv or argv[0] not in COMMANDS:
        fail(f"unknown command {argv[0]!r}; {USAGE}" if argv else USAGE)
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    use_huge_pages()  # restarts once with glibc's huge-page tunable, where it helps
    main(sys.argv[1:])
