"""Models: dVAE, VQ-VAE, the DALL·E transformer, attention masks, CLIP."""
