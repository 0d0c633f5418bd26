"""CLIP's own BPE tokenizer (OpenAI CLIP, open_clip), built on the `tokenizers` library.

From the merges file CLIP ships (`bpe_simple_vocab_16e6.txt.gz`): the vocabulary is the 256 byte
symbols, the same with the end-of-word mark `</w>`, one entry per merge (48,894 of them) and
`<start_of_text>`, `<end_of_text>`: 49,408 ids. A text is cleaned as CLIP cleans it (HTML entities
unescaped twice, ftfy's repairs where ftfy is installed, runs of white space made one space,
lower case), split into words by CLIP's pattern (contractions, runs of letters, single digits,
runs of other symbols), each word's UTF-8 bytes mapped to byte symbols and merged by rank, the
last symbol of each word marked `</w>`. `encode_batch` gives (N, context) int32 rows: the start
token, the ids, the end token, zeros after; a longer text is cut and ends in the end token.
"""

from __future__ import annotations

import gzip
import html

import numpy as np
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

NUM_MERGES = 49152 - 256 - 2
START, END = "<start_of_text>", "<end_of_text>"
WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def byte_symbols() -> list[str]:
    """The printable stand-ins of the 256 bytes (GPT-2's and CLIP's byte alphabet), in CLIP's
    vocabulary order: the printable bytes as themselves, then the others as chr(256 + n)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def _clean(text: str) -> str:
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    return html.unescape(html.unescape(text)).strip()


class ClipTokenizer:
    """CLIP's BPE over `context` slots; see the module docstring."""

    def __init__(self, merges_path: str, context: int = 77):
        with gzip.open(merges_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1:NUM_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        symbols = byte_symbols()
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += [START, END]
        self.vocab = {token: i for i, token in enumerate(vocab)}
        self.start_id, self.end_id = self.vocab[START], self.vocab[END]
        self.context = context
        tok = Tokenizer(models.BPE(self.vocab, merges, end_of_word_suffix="</w>"))
        tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(r"\s+"), " "),
                                               normalizers.Strip(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(WORDS), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        self._tok = tok

    def ids(self, text: str) -> list[int]:
        """The BPE ids of `text`, without start and end tokens."""
        return self._tok.encode(_clean(text), add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> np.ndarray:
        """(len(texts), context) int32: start, ids, end, zeros; cut to fit, still ending in end."""
        out = np.zeros((len(texts), self.context), np.int32)
        for row, text in zip(out, texts):
            ids = [self.start_id] + self.ids(text) + [self.end_id]
            if len(ids) > self.context:
                ids = ids[:self.context - 1] + [self.end_id]
            row[:len(ids)] = ids
        return out
