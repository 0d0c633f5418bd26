"""Stage 2, the transformer over `[text ids ; image codes]` with the paper's static sparse attention.

`transformer.DalleTransformer` is the model; `attention_masks` builds the row, column and
convolutional patterns as numpy; `attention` runs them (`dense`, `blocksparse`, `splash`), with
`band_attention` the block-sparse softmax core; `gelu` is the MLP's activation.
"""
