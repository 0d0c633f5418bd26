"""`image_text_folder`: imports a user's images and captions (folders, manifests, tar shards)."""
