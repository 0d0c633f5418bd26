"""Stage 1, the dVAE: images → a grid of codes → images.

`model.DVAE` is the whole model (a gumbel-softmax codebook as in the paper, or a VQ-VAE codebook),
built from `encoder_decoder` (the paper's convolutional encoder and decoder), `quantizers` (the
two codebooks and their losses) and `pixels` (the logit-Laplace likelihood and its pixel map);
`convert_openai` loads OpenAI's released PyTorch weights into it.
"""
