"""Data: image-classification datasets (local, Hub, the built-in offline sets) and their loaders."""
