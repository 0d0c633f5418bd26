"""Importing a user's data: every good file kept, every bad one counted by reason and listed."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from dalle_jax.data.image_text_folder import image_text_folder as itf
from dalle_jax.data.captions import decode_caption
from dalle_jax.data.image_text_folder.sources import SourceError
from dalle_jax.data.imaging import to_rgb
from dalle_jax.data.summary import SKIP_REASONS
from tests.helpers import image_folders as fx

RES = 16
NO_SKIPS = dict.fromkeys(SKIP_REASONS, 0)


def _all(summary):
    builder = tfds.builder_from_directory(summary["path"])
    out = []
    for split in summary["splits"]:
        source = builder.as_data_source(split)
        out += [source[i] for i in range(len(source))]
    return out


def _skipped(summary):
    with open(os.path.join(summary["path"], itf.SKIPPED_FILE), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("src"))
    expected, reasons = fx.make_folder(root)
    summary = itf.prepare(str(tmp_path_factory.mktemp("data")), root, name="mine", resolution=RES,
                          validation_fraction=0.3)
    return root, expected, reasons, summary


def test_folder_counts_and_every_good_file_kept(folder):
    root, expected, reasons, summary = folder
    assert summary["skipped"] == {**NO_SKIPS, **reasons}
    assert summary["dataset"] == "image_text_folder" and summary["config"].startswith("mine-16px-")
    assert set(summary["splits"]) == {"train", "validation"}
    examples = _all(summary)
    assert sum(summary["splits"].values()) == len(examples) == sum(expected.values())
    kept = {}
    for ex in examples:
        rel = os.path.relpath(ex["source"].decode(), root)
        kept[rel] = kept.get(rel, 0) + 1
        assert ex["image"].shape == (RES, RES, 3) and ex["image"].dtype == np.uint8
    assert kept == expected
    listed = {(os.path.basename(r["path"]), r["reason"]) for r in _skipped(summary)}
    assert listed == {("zero.jpg", "corrupt_image"), ("truncated.png", "corrupt_image"),
                      ("truncated.jpg", "corrupt_image"), ("garbage.png", "corrupt_image"),
                      ("nocaption.png", "missing_caption"), ("emptycap.png", "empty_caption"),
                      ("spacecap.png", "empty_caption")}
    assert all(r["detail"] for r in _skipped(summary))


def test_captions_decoded_leniently_and_split_per_line(folder):
    _, _, _, summary = folder
    by_source = {}
    for ex in _all(summary):
        by_source.setdefault(os.path.basename(ex["source"].decode()), []).append(ex["caption"].decode())
    assert by_source["cafe.png"] == ["un café crème"]
    assert by_source["bom.png"] == ["with a bom"]
    assert by_source["wide.png"] == ["sixteen bits"]
    assert sorted(by_source["multi.png"]) == ["first line", "second line", "third line"]


def test_crop_and_upscale_numerically(folder):
    _, _, _, summary = folder
    images = {os.path.basename(ex["source"].decode()): ex["image"] for ex in _all(summary)}
    thirds = images["thirds.png"].astype(int)  # 10x30: red | green | blue; the crop keeps green
    assert (np.abs(thirds[:, 4:12] - [0, 255, 0]) < 40).all()
    assert thirds[..., 0].max() < 128 and thirds[..., 2].max() < 128  # red and blue thirds cut off
    assert (thirds[..., 1] > 128).all()
    tiny = images["tiny.png"]  # 3x5 upscaled
    assert (np.abs(tiny.astype(int) - [10, 200, 30]) <= 2).all()
    assert (images["i16.png"] == 255).all()  # 16-bit white stays white


def test_random_caption_mode_keeps_one_example_per_image(tmp_path, folder):
    root, expected, reasons, _ = folder
    summary = itf.prepare(str(tmp_path), root, resolution=RES, caption_mode="random",
                          validation_fraction=0.0)
    assert list(summary["splits"]) == ["train"] and summary["skipped"] == {**NO_SKIPS, **reasons}
    examples = _all(summary)
    assert len(examples) == len(expected)
    multi = [ex for ex in examples if ex["source"].decode().endswith("multi.png")]
    assert multi[0]["caption"].decode() == "first line\nsecond line\nthird line"


def test_reuse_returns_same_summary(tmp_path):
    src = tmp_path / "src"
    expected, _ = fx.make_folder(str(src))
    first = itf.prepare(str(tmp_path / "d"), str(src), resolution=RES)
    record = [p for p in os.listdir(first["path"]) if "array_record" in p][0]
    mtime = os.path.getmtime(os.path.join(first["path"], record))
    assert itf.prepare(str(tmp_path / "d"), str(src), resolution=RES) == first
    assert os.path.getmtime(os.path.join(first["path"], record)) == mtime
    assert itf.prepare(str(tmp_path / "d"), str(src), resolution=RES * 2)["config"] != first["config"]
    other = itf.prepare(str(tmp_path / "d"), str(src), name="my-data v2", resolution=RES,
                        caption_mode="random")
    assert other["config"].startswith("my-data_v2-16px-") and other["config"] != first["config"]


def test_tar_shard(tmp_path):
    path = str(tmp_path / "shard-00000.tar")
    expected, reasons = fx.make_tar(path)
    summary = itf.prepare(str(tmp_path / "d"), path, resolution=RES, validation_fraction=0.0)
    assert summary["skipped"] == {**NO_SKIPS, **reasons}
    kept = {}
    for ex in _all(summary):
        key = ex["source"].decode().split(":")[-1].split(".")[0]
        kept[key] = kept.get(key, 0) + 1
    assert kept == expected
    captions = sorted(ex["caption"].decode() for ex in _all(summary))
    assert captions == ["a first sample", "lines", "two", "ünïcode"]


def test_folder_of_shards_and_images_together(tmp_path):
    (tmp_path / "src").mkdir()
    fx.make_tar(str(tmp_path / "src" / "shard.tar"))
    expected, reasons = fx.make_folder(str(tmp_path / "src" / "pics"))
    summary = itf.prepare(str(tmp_path / "d"), str(tmp_path / "src"), resolution=RES)
    assert sum(summary["splits"].values()) == sum(expected.values()) + 4
    assert sum(summary["skipped"].values()) == sum(reasons.values()) + 3


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_manifest(tmp_path, kind):
    path = fx.make_manifests(str(tmp_path))[kind]
    summary = itf.prepare(str(tmp_path / "d"), path, resolution=RES, image_field="file",
                          caption_field="text", validation_fraction=0.0)
    assert summary["skipped"] == {**NO_SKIPS, "missing_image": 1, "empty_caption": 1}
    assert sorted(ex["caption"].decode() for ex in _all(summary)) == ["absolute path", "relative path"]
    with pytest.raises(SourceError, match="no field 'image'"):
        itf.prepare(str(tmp_path / "d2"), path, resolution=RES)


def test_errors_name_the_value(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        itf.prepare(str(tmp_path), str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="is empty"):
        itf.prepare(str(tmp_path / "d"), str(tmp_path / "empty"))
    (tmp_path / "onlybad").mkdir()
    (tmp_path / "onlybad" / "x.png").write_bytes(b"")
    (tmp_path / "onlybad" / "x.txt").write_text("caption")
    with pytest.raises(SourceError, match="no readable image"):
        itf.prepare(str(tmp_path / "d"), str(tmp_path / "onlybad"))
    (tmp_path / "nocaps").mkdir()
    (tmp_path / "nocaps" / "x.png").write_bytes(b"123")
    with pytest.raises(SourceError, match="no usable image"):
        itf.prepare(str(tmp_path / "d"), str(tmp_path / "nocaps"))
    for kwargs, message in ((dict(caption_mode="all"), "caption_mode='all'"),
                            (dict(resolution=0), "resolution=0"),
                            (dict(validation_fraction=1.5), "validation_fraction=1.5"),
                            (dict(image_format="gif"), "image_format='gif'")):
        with pytest.raises(ValueError, match=message):
            itf.prepare(str(tmp_path / "d"), str(tmp_path / "nocaps"), **kwargs)


def test_mode_conversion():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.asarray(to_rgb(rgba)).tolist() == np.full((4, 4, 3), 255).tolist()
    assert (np.asarray(to_rgb(Image.new("CMYK", (2, 2), (0, 255, 255, 0)))) == [255, 0, 0]).all()
    p = Image.new("P", (2, 2), 1)
    p.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    p.info["transparency"] = 1
    assert (np.asarray(to_rgb(p)) == 255).all()
    i16 = Image.fromarray(np.array([[0, 65535]], np.uint16))
    assert np.asarray(to_rgb(i16)).tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_decode_caption():
    assert decode_caption("é".encode("cp1252")) == "é"
    assert decode_caption("\ufeffx".encode("utf-8")) == "x"
    assert decode_caption("日本".encode("utf-16")) == "日本"


def test_split_of_only_unreadable_images_is_dropped_not_its_skips(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    names = [f"img{i}.png" for i in range(200)]
    train = [n for n in names if itf.split_of(n, 0.5) == "train"][:3]
    val = [n for n in names if itf.split_of(n, 0.5) == "validation"][:2]
    png = fx._bytes(Image.fromarray(fx.RGB), "PNG")
    for n in train + val:
        (src / n).write_bytes(png if n in train else png[:40])  # validation ones truncated
        (src / n.replace(".png", ".txt")).write_text(f"caption {n}")
    summary = itf.prepare(str(tmp_path / "d"), str(src), resolution=RES, validation_fraction=0.5)
    assert summary["splits"] == {"train": 3}
    assert summary["skipped"] == {**NO_SKIPS, "corrupt_image": 2}
    assert sorted(os.path.basename(r["path"]) for r in _skipped(summary)) == sorted(val)


def test_stray_csv_in_a_folder_does_not_stop_the_import(tmp_path):
    src = tmp_path / "src"
    expected, reasons = fx.make_folder(str(src))
    (src / "notes.csv").write_text("a,b\n1,2\n")
    summary = itf.prepare(str(tmp_path / "d"), str(src), resolution=RES)
    assert sum(summary["splits"].values()) == sum(expected.values())
    assert summary["skipped"] == {**NO_SKIPS, **reasons}


def test_folder_with_its_own_manifest_and_a_multiline_csv_caption(tmp_path):
    """Images captioned by a manifest in the folder are not `missing_caption`; quoted newlines survive."""
    src = tmp_path / "src"
    (src / "img").mkdir(parents=True)
    png = fx._bytes(Image.fromarray(fx.RGB), "PNG")
    for n in ("a", "b", "c"):
        (src / "img" / f"{n}.png").write_bytes(png)
    (src / "img" / "c.txt").write_text("c from its own file")
    (src / "captions.csv").write_text('image,caption\nimg/a.png,"line one\nline two"\nimg/b.png,bee\n')
    summary = itf.prepare(str(tmp_path / "d"), str(src), resolution=RES, validation_fraction=0.0,
                          image_format="jpeg")
    assert summary["skipped"] == NO_SKIPS
    captions = sorted(ex["caption"].decode() for ex in _all(summary))
    assert captions == ["bee", "c from its own file", "line one", "line two"]
    assert _all(summary)[0]["image"].shape == (RES, RES, 3)


def test_each_skip_logs_a_warning(tmp_path, caplog):
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.png").write_bytes(fx._bytes(Image.fromarray(fx.RGB), "PNG"))
    (src / "good.txt").write_text("fine")
    (src / "bad.png").write_bytes(b"")
    (src / "bad.txt").write_text("broken")
    (src / "lone.png").write_bytes(b"x")
    with caplog.at_level("WARNING"):
        summary = itf.prepare(str(tmp_path / "d"), str(src), resolution=RES, validation_fraction=0.0)
    assert summary["splits"] == {"train": 1}
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "skipping" in r.getMessage()]
    assert len(warned) == 2 and any("corrupt_image" in w for w in warned)
    assert any("missing_caption" in w for w in warned)


def test_hidden_files_ignored_and_unreadable_caption_is_a_skip(tmp_path):
    """`._x.png` / `.ipynb_checkpoints` are not candidates; a broken caption link never stops an import."""
    src = tmp_path / "src"
    (src / ".ipynb_checkpoints").mkdir(parents=True)
    png = fx._bytes(Image.fromarray(fx.RGB), "PNG")
    for n in ("a", "b"):
        (src / f"{n}.png").write_bytes(png)
    (src / "a.txt").write_text("a")
    os.symlink(str(tmp_path / "nowhere.txt"), str(src / "b.txt"))
    (src / "._a.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (src / ".ipynb_checkpoints" / "a.png").write_bytes(png)
    summary = itf.prepare(str(tmp_path / "d"), str(src), resolution=RES, validation_fraction=0.0)
    assert summary["splits"] == {"train": 1}
    assert summary["skipped"] == {**NO_SKIPS, "missing_caption": 1}
    assert [os.path.basename(r["path"]) for r in _skipped(summary)] == ["b.png"]


def test_jsonl_caption_list_keeps_its_lines(tmp_path):
    (tmp_path / "x.png").write_bytes(fx._bytes(Image.fromarray(fx.RGB), "PNG"))
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "x.png", "caption": ["one", "two"]}) + "\n")
    summary = itf.prepare(str(tmp_path / "d"), str(tmp_path / "m.jsonl"), resolution=RES,
                          validation_fraction=0.0)
    assert sorted(ex["caption"].decode() for ex in _all(summary)) == ["one", "two"]


def test_truncated_rejected_even_if_pil_was_told_to_load_truncated_images():
    from PIL import ImageFile

    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    jpg = fx._bytes(Image.fromarray(noise), "JPEG")  # halving it cuts the scan, not the header
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # what TFDS's create_thumbnail does, process-wide
    try:
        with pytest.raises(OSError):
            itf.decode_image(jpg[: len(jpg) // 2], RES)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_high_depth_modes_keep_their_brightness():
    for arr in (np.full((2, 2), 255, np.int32), np.full((2, 2), 65535, np.int32),
                np.full((2, 2), 1.0, np.float32)):
        assert (np.asarray(to_rgb(Image.fromarray(arr))) == 255).all(), arr.dtype
    assert np.asarray(to_rgb(Image.fromarray(np.array([[0, 0.5]], np.float32))))[0, :, 0].tolist() == [0, 128]
    assert (np.asarray(to_rgb(Image.new("La", (2, 2)))) == 255).all()
