"""The `image_codes` dataset: a prepared image dataset turned into dVAE codes + captions."""
