"""Judging generated `shapes` images against their captions without the model that drew them."""
