"""Tokenizer: round trips on varied text, fixed length, vocabulary size, save/load."""

import numpy as np
import pytest

from dalle_jax.data.tokenizer import MIN_VOCAB_SIZE, PAD_ID, TextTokenizer

CORPUS = [
    "a red circle above a blue square",
    "A small green triangle in the top left",
    "the word 'sun' in yellow letters",
    "two hearts, one purple and one orange",
] * 30

VARIED = [
    "A Red Circle",
    "café crème brûlée, naïve façade",
    "日本語のテキスト と 中文 和 한국어",
    "emoji 🐱🚀👍🏽 and ZWJ 👩‍👩‍👧",
    "tabs\tand\nnewlines  and   spaces",
    "math ∑ ∫ √ ≠ and arrows → ←",
    "",
    "<pad> is just text here",
]


@pytest.fixture(scope="module")
def tok():
    return TextTokenizer.train(CORPUS, vocab_size=320, text_len=64)


def test_round_trip_any_unicode(tok):
    for text in VARIED:
        ids = tok.token_ids(text)
        assert len(ids) < 64, text
        assert PAD_ID not in ids  # nothing in a caption becomes the pad marker
        assert tok.decode(tok.encode(text)) == tok.normalize(text) == tok.normalize(text).lower()


def test_fixed_length_truncation_and_padding(tok):
    short = TextTokenizer.from_json(tok.to_json(), text_len=5)
    batch = short.encode_batch(["a", "a red circle above a blue square " * 5, ""])
    assert batch.shape == (3, 5) and batch.dtype == np.int32
    assert (batch[2] == PAD_ID).all() and (batch[1] != PAD_ID).all()
    assert batch[0, 0] != PAD_ID and (batch[0, 1:] == PAD_ID).all()
    assert short.decode(batch[1]) == tok.decode(tok.token_ids("a red circle above a blue square " * 5)[:5])


def test_vocab_size_is_respected_and_merges_learned(tok):
    assert tok.vocab_size == 320
    big = TextTokenizer.train(CORPUS, vocab_size=5000, text_len=8)
    assert MIN_VOCAB_SIZE < big.vocab_size <= 5000
    # BPE merges: a frequent word is one token, not its bytes.
    assert len(big.token_ids("a red circle")) == 3
    ids = TextTokenizer.train(CORPUS * 3, vocab_size=1000, text_len=8).encode_batch(VARIED)
    assert ids.max() < 1000 and ids.min() >= 0


def test_lower_cased(tok):
    np.testing.assert_array_equal(tok.encode("A RED CIRCLE"), tok.encode("a red circle"))


def test_save_load(tok, tmp_path):
    path = str(tmp_path / "tokenizer.json")
    tok.save(path)
    again = TextTokenizer.load(path, text_len=64)
    np.testing.assert_array_equal(again.encode_batch(VARIED), tok.encode_batch(VARIED))


def test_errors_name_values(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=100"):
        TextTokenizer.train(CORPUS, vocab_size=100, text_len=8)
    with pytest.raises(ValueError, match="text_len must be positive, got 0"):
        TextTokenizer.train(CORPUS, vocab_size=300, text_len=0)
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        TextTokenizer.load(str(tmp_path / "nothing.json"), 8)


def test_bpe_dropout_is_seeded_and_keeps_the_text(tok):
    rng = np.random.default_rng(0)
    for text in CORPUS[:4] + VARIED:  # no dropout: exactly the library's BPE
        assert tok.dropout_token_ids(text, 0.0, rng) == tok.token_ids(text)
    text = CORPUS[0]
    full = tok.token_ids(text)
    seen = {tuple(tok.encode(text, dropout=0.1, rng=np.random.default_rng(s))) for s in range(20)}
    assert len(seen) > 1  # merges are dropped, differently per draw
    for ids in seen:
        assert tok.decode(ids) == tok.normalize(text)  # always the same text
        assert np.count_nonzero(ids) >= len(full)  # dropped merges only lengthen the encoding
    a = tok.encode(text, dropout=0.1, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, tok.encode(text, dropout=0.1, rng=np.random.default_rng(7)))
    bytes_only = tok.dropout_token_ids(text, 0.999999, np.random.default_rng(0))
    assert len(bytes_only) == len(text.encode())  # (nearly) every merge dropped: one id per byte
    with pytest.raises(ValueError, match="dropout must be in"):
        tok.encode(text, dropout=1.0, rng=rng)
    with pytest.raises(ValueError, match="Generator"):
        tok.encode(text, dropout=0.1)
