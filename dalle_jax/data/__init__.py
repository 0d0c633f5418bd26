"""Datasets (TFDS builders writing array_record), the BPE text tokenizer and the grain loader."""
