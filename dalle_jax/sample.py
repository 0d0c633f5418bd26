"""Draw images for text prompts from a trained transformer; optionally rerank them with CLIP.

  python -m dalle_jax.sample --workdir=workdirs/dalle_small --prompt="a red circle" \\
      --num_samples=16 --out=samples.png
  python -m dalle_jax.sample --workdir=… --clip_workdir=workdirs/clip_small \\
      --prompts_file=prompts.txt --num_samples=32 --rerank=4 --top_k=64 --out=best.png
  python -m dalle_jax.sample --workdir=… --prompt="a red circle" --complete=photo.png \\
      --keep_rows=4 --out=completed.png

Writes a PNG grid (one row of samples per prompt, captions under the images) and, beside it, a
JSON file (same name, .json) with every sample's prompt, index, CLIP score and rank. With
`--rerank=K` only the K best-scored samples of each prompt go into the grid. `--complete` keeps
the codes of the first `--keep_rows` rows of an image and samples the rest (paper §3). `--judge`
checks each sample of a `shapes` prompt against it (colour, shape, place) and prints the share
that pass.
"""

from __future__ import annotations

import json
import sys

from absl import flags
from etils import epath

from dalle_jax.cli import define_sampling_flags, fail, join_hosts, parse_flags, sampling_settings
from dalle_jax.xla_cpu.huge_pages import use_huge_pages

FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_string("workdir", None, "a trained transformer (dalle) workdir")
    flags.DEFINE_string("dvae_workdir", None, "the image tokenizer that decodes codes: a dVAE "
                        "workdir or vqgan:DIR (default: the one that encoded the transformer's "
                        "training data)")
    flags.DEFINE_string("clip_workdir", None, "what scores samples: a trained CLIP workdir, or "
                        "OpenAI's or LAION's CLIP as openclip:DIR (converted) or "
                        "openclip:ARCH:WEIGHTS.pt (needs torch and open_clip)")
    flags.DEFINE_alias("clip", "clip_workdir")
    flags.DEFINE_multi_string("prompt", [], "a text prompt (repeatable)")
    flags.DEFINE_string("prompts_file", None, "a file with one prompt per line")
    flags.DEFINE_integer("num_samples", 8, "samples per prompt")
    flags.DEFINE_integer("rerank", 0, "keep the best K samples per prompt by CLIP score (0: all)")
    define_sampling_flags()
    flags.DEFINE_string("complete", None, "an image whose first rows are kept (completion)")
    flags.DEFINE_integer("keep_rows", 0, "code rows of --complete to keep")
    flags.DEFINE_integer("seed", 0, "random seed")
    flags.DEFINE_integer("batch_size", 8, "(prompt, sample) rows per jitted batch")
    flags.DEFINE_string("out", "samples.png", "PNG grid to write (and OUT.json with the scores)")
    flags.DEFINE_bool("judge", False, "check each sample against its `shapes` prompt and report "
                      "the share that pass")
    flags.DEFINE_string("mesh", "data:-1", "AXIS:SIZE,… the transformer's EMA is split over by its "
                        "rules (e.g. fsdp:4 for a model too large for one device)")
    flags.mark_flags_as_required(["workdir"])


def read_prompts(prompts: list[str], prompts_file: str | None) -> list[str]:
    """The prompts of --prompt and of --prompts_file (blank lines skipped), in order."""
    out = list(prompts)
    if prompts_file:
        path = epath.Path(prompts_file)
        if not path.exists():
            raise FileNotFoundError(f"no prompts file at {prompts_file}")
        out += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not out:
        raise ValueError("no prompt: give --prompt=TEXT or --prompts_file=FILE")
    return out


def main(argv: list[str]) -> None:
    """Parses flags and runs; errors are one line on stderr."""
    _define_flags()
    parse_flags("python -m dalle_jax.sample", argv)
    join_hosts()
    from dalle_jax.generation.grid import generate
    from dalle_jax.generation.sampling import Settings

    f = FLAGS
    try:
        record = generate(
            workdir=f.workdir, prompts=read_prompts(f.prompt, f.prompts_file), out=f.out,
            num_samples=f.num_samples, rerank=f.rerank,
            settings=Settings(**sampling_settings()), seed=f.seed,
            clip_workdir=f.clip_workdir, dvae_workdir=f.dvae_workdir, complete=f.complete,
            keep_rows=f.keep_rows, batch_size=f.batch_size, mesh=f.mesh, judge=f.judge)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    print(json.dumps({"grid": record["grid"], "samples": len(record["samples"]),
                      **{k: record[k] for k in ("shown_pass_rate", "pass_rate") if k in record}}))


if __name__ == "__main__":
    use_huge_pages()  # restarts once with glibc's huge-page tunable, where it helps
    main(sys.argv[1:])
