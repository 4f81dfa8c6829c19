"""Explainability: what the filters say about each class (filter maps, saliency, faithfulness, plots)."""
