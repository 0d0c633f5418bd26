"""The built-in synthetic `shapes` dataset: coloured shapes or coloured words, with captions."""
