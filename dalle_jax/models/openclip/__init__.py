"""OpenAI's and LAION's CLIP (open_clip's ViT models) in NNX: model, BPE tokenizer, converter."""
