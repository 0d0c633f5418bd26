"""Generation: key/value-cached sampling of image codes, reranking, and the `sample` command."""
