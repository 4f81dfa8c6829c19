"""The Hub: downloading and pushing adapters and exported models, and their model cards."""
