"""taming-transformers' VQGAN in NNX (encoding and decoding) and its weight converter."""
