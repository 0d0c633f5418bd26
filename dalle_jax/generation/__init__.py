"""Inference: trained models restored from their EMA (`restore`, `dvae`), key/value-cached
sampling of image codes, reranking, and the sample grids of the `sample` command."""
