"""A small classifier of the eight `shapes` outlines, trained on freshly rendered masks.

It sees a binary mask (the pixels of one colour) cropped to its bounding box, padded to a square
and resized to `SIDE`×`SIDE`; it knows nothing of the generator. Training data are single shapes
drawn by the dataset's own renderer at random sizes, positions and resolutions, then blurred,
thresholded and speckled so that it also reads the soft outlines of decoded samples. A two-layer
MLP trained with optax for a few seconds; `load_or_train` keeps its weights in a .npz file.
"""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from PIL import Image, ImageDraw, ImageFilter

from dalle_jax.data.shapes.render import draw_shape
from dalle_jax.data.shapes.vocabulary import SHAPES
from dalle_jax.parallel import hosts

SIDE = 16


def crop_mask(mask: np.ndarray) -> np.ndarray:
    """float32 (SIDE, SIDE) of a boolean mask's bounding box, centred in a square and resized."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return np.zeros((SIDE, SIDE), np.float32)
    box = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = box.shape
    side = max(h, w)
    square = np.zeros((side, side), bool)
    square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = box
    image = Image.fromarray(square.astype(np.uint8) * 255).resize((SIDE, SIDE), Image.BILINEAR)
    return np.asarray(image, np.float32) / 255.0


def rendered_masks(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(masks (count, SIDE, SIDE) float32, labels (count,)): random single shapes, degraded."""
    rng = np.random.default_rng(seed)
    masks, labels = [], []
    for _ in range(count):
        label = int(rng.integers(len(SHAPES)))
        canvas = int(rng.choice([32, 64, 128]))
        r = rng.uniform(0.06, 0.2) * canvas
        img = Image.new("L", (canvas, canvas), 0)
        cx, cy = rng.uniform(r + 1, canvas - r - 1, size=2)
        draw_shape(ImageDraw.Draw(img), SHAPES[label], cx, cy, r, 255)
        if rng.random() < 0.7:  # the soft edges of a decoder
            img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, max(0.4, 0.12 * r))))
        mask = np.asarray(img) > rng.uniform(60, 190)
        mask ^= rng.random(mask.shape) < rng.uniform(0, 0.01) * (rng.random() < 0.5)
        masks.append(crop_mask(mask))
        labels.append(label)
    return np.stack(masks), np.asarray(labels, np.int32)


def _logits(params: dict, x: jax.Array) -> jax.Array:
    h = jax.nn.relu(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def train(*, count: int = 12000, steps: int = 3000, seed: int = 0) -> dict:
    """Parameters of a classifier trained on `count` rendered masks."""
    x, y = rendered_masks(count, seed)
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {"w1": jax.random.normal(k1, (SIDE * SIDE, 256)) * (SIDE * SIDE) ** -0.5,
              "b1": jnp.zeros(256),
              "w2": jax.random.normal(k2, (256, len(SHAPES))) * 256 ** -0.5,
              "b2": jnp.zeros(len(SHAPES))}
    tx = optax.adam(optax.cosine_decay_schedule(3e-3, steps))
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, idx):
        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(_logits(p, x[idx]), y[idx]).mean()
        g = jax.grad(loss)(params)
        u, opt = tx.update(g, opt)
        return optax.apply_updates(params, u), opt

    rng = np.random.default_rng(seed + 1)
    x, y = jnp.asarray(x), jnp.asarray(y)
    for _ in range(steps):
        params, opt = step(params, opt, jnp.asarray(rng.integers(0, count, 128)))
    return jax.device_get(params)


def accuracy(params: dict, count: int = 1000, seed: int = 99) -> float:
    """Share of freshly rendered, degraded masks it names right."""
    x, y = rendered_masks(count, seed)
    return float(np.mean(classify(params, x) == y))


def classify(params: dict, masks: np.ndarray) -> np.ndarray:
    """Shape index (N,) of cropped masks (N, SIDE, SIDE)."""
    return np.asarray(jnp.argmax(_logits(params, jnp.asarray(masks, jnp.float32)), -1))


def load_or_train(path: str | None = None) -> dict:
    """The classifier saved at `path`, or a newly trained one (saved there when a path is given).
    On a pod the first host trains and saves it while the others wait, then they read it."""
    return hosts.primary_first("training the shape classifier", lambda: _load_or_train(path))


def _load_or_train(path: str | None) -> dict:
    target = epath.Path(path) if path else None
    if target is not None and target.exists():
        with np.load(io.BytesIO(target.read_bytes())) as f:
            return {k: f[k] for k in f.files}
    params = train()
    if target is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **params)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f"{target.name}.tmp"
        tmp.write_bytes(buffer.getvalue())
        tmp.replace(target)
    return params
