"""The ids every stage agrees on: the BPE tokenizer writes them, the models and losses read them.

Text is a row of `text_len` int32 ids; a row shorter than that is filled with `PAD_ID`, which the
transformer maps to position-specific padding tokens (paper §B.2) and which CLIP and the losses
mask out.
"""

PAD_ID = 0
