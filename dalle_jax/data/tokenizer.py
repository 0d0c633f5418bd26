"""Byte-level BPE text tokenizer (HF `tokenizers`): trained on captions, lower-cased, fixed length.

Every caption becomes exactly `text_len` ids. Id 0 is the pad marker; the transformer replaces each
pad by a learned padding token of its own position (DALL·E, §2.2), so the pad id here is only a
placeholder. Byte-level BPE has all 256 bytes in its base alphabet, so any Unicode text (emoji,
CJK, accents) encodes, and decodes back to its normalised, lower-cased form.

BPE dropout (Provilkov et al. 2020; DALL·E drops 10% of merges on training captions):
`encode(text, dropout=p, rng=…)` applies the learned merges itself, skipping each candidate merge
with probability p, from a numpy Generator, so a seeded loader gives the same ids on a resumed run
(the `tokenizers` library's own dropout draws from an unseeded generator). At p = 0 it gives the
library's ids exactly.
"""

from __future__ import annotations

import json
from typing import Iterable, Sequence

import numpy as np
from etils import epath
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from dalle_jax.text_ids import PAD_ID

PAD_TOKEN = "<pad>"  # the token at PAD_ID
# The byte alphabet plus the pad marker: the smallest vocabulary that can encode any text.
MIN_VOCAB_SIZE = len(pre_tokenizers.ByteLevel.alphabet()) + 1


def _empty_bpe() -> Tokenizer:
    """An untrained byte-level BPE with NFKC + lower-case normalisation."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


class TextTokenizer:
    """Fixed-length byte-level BPE: `encode` gives int32 ids of length `text_len`, padded with 0."""

    def __init__(self, tokenizer: Tokenizer, text_len: int):
        if text_len <= 0:
            raise ValueError(f"text_len must be positive, got {text_len}")
        if tokenizer.token_to_id(PAD_TOKEN) != PAD_ID:
            raise ValueError(f"tokenizer must have {PAD_TOKEN!r} at id {PAD_ID}")
        self._tok = tokenizer
        self.text_len = text_len
        self._tok.no_padding()
        self._tok.no_truncation()
        # A caption that happens to contain the text "<pad>" is text, not padding.
        self._tok.encode_special_tokens = True
        self._merges: tuple[dict[tuple[str, str], int], dict[str, int]] | None = None

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        captions: Iterable[str],
        vocab_size: int,
        text_len: int,
        *,
        min_frequency: int = 2,
        show_progress: bool = False,
    ) -> "TextTokenizer":
        """Trains a BPE of at most `vocab_size` entries (pad marker included) on `captions`."""
        if vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(
                f"vocab_size={vocab_size} is below the byte alphabet plus pad ({MIN_VOCAB_SIZE})"
            )
        tok = _empty_bpe()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[PAD_TOKEN],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=show_progress,
        )
        tok.train_from_iterator(captions, trainer=trainer)
        return cls(tok, text_len)

    @classmethod
    def load(cls, path: str, text_len: int) -> "TextTokenizer":
        """Loads a tokenizer saved by `save` (one JSON file)."""
        path = epath.Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no tokenizer file at {path}")
        return cls(Tokenizer.from_str(path.read_text()), text_len)

    @classmethod
    def from_json(cls, text: str, text_len: int) -> "TextTokenizer":
        """Builds from the JSON string of `to_json` (used to ship the tokenizer to workers)."""
        return cls(Tokenizer.from_str(text), text_len)

    def save(self, path: str) -> None:
        """Writes the tokenizer as one JSON file (atomically; local or gs://)."""
        path = epath.Path(path)
        tmp = path.parent / f"{path.name}.tmp"
        tmp.write_text(self._tok.to_str())
        tmp.replace(path)

    def to_json(self) -> str:
        """The tokenizer as a JSON string."""
        return self._tok.to_str()

    # --- use ----------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of entries actually in the vocabulary (≤ the size it was trained for)."""
        return self._tok.get_vocab_size()

    def normalize(self, text: str) -> str:
        """The text as the tokenizer sees it (NFKC, lower-cased)."""
        return self._tok.normalizer.normalize_str(text)

    def token_ids(self, text: str) -> list[int]:
        """All ids of `text`, without truncation or padding."""
        return self._tok.encode(text).ids

    def encode(self, text: str, *, dropout: float = 0.0,
               rng: np.random.Generator | None = None) -> np.ndarray:
        """int32 ids of shape (text_len,): truncated to text_len, padded with PAD_ID.

        With `dropout` > 0, each BPE merge is skipped with that probability (draws from `rng`).
        """
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"BPE dropout must be in [0, 1), got {dropout}")
        if dropout == 0.0:
            return self.encode_batch([text])[0]
        if rng is None:
            raise ValueError("BPE dropout needs a numpy Generator `rng`")
        return self._fixed_length([self.dropout_token_ids(text, dropout, rng)])[0]

    def dropout_token_ids(self, text: str, dropout: float, rng: np.random.Generator) -> list[int]:
        """All ids of `text` by BPE with each candidate merge skipped with probability `dropout`.

        Per pre-tokenised word: repeatedly merge the adjacent pair of lowest merge rank among
        those that survive a fresh dropout draw, until none survives (or one symbol is left).
        """
        if self._merges is None:  # merge ranks and vocabulary, read once per tokenizer
            merges = json.loads(self._tok.to_str())["model"]["merges"]
            ranks = {tuple(m.split(" ", 1) if isinstance(m, str) else m): rank
                     for rank, m in enumerate(merges)}
            self._merges = (ranks, self._tok.get_vocab())
        ranks, vocab = self._merges
        ids: list[int] = []
        for word, _ in self._tok.pre_tokenizer.pre_tokenize_str(self.normalize(text)):
            symbols = list(word)
            while len(symbols) > 1:
                pairs = [(ranks.get(pair), i)
                         for i, pair in enumerate(zip(symbols, symbols[1:]))]
                pairs = [(rank, i) for rank, i in pairs if rank is not None]
                kept = [p for p, draw in zip(pairs, rng.random(len(pairs))) if draw >= dropout]
                if not kept:
                    break
                _, i = min(kept)
                symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
            ids.extend(vocab[s] for s in symbols)
        return ids

    def token_count(self, text: str) -> int:
        """How many ids `text` takes before truncation to text_len."""
        return len(self._tok.encode(text).ids)

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        """int32 ids of shape (len(texts), text_len)."""
        return self._fixed_length([enc.ids for enc in self._tok.encode_batch(list(texts))])

    def _fixed_length(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """Each row of ids truncated to text_len and padded with PAD_ID."""
        out = np.full((len(rows), self.text_len), PAD_ID, dtype=np.int32)
        for row, ids in zip(out, rows):
            ids = ids[: self.text_len]
            row[: len(ids)] = ids
        return out

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of `ids`, pads dropped."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1) if int(i) != PAD_ID]
        return self._tok.decode(ids, skip_special_tokens=True)
