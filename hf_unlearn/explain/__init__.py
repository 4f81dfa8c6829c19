"""Explainability: what the weight filters say about each class.

- :mod:`.filters`: filter maps (``1 - alpha`` per class and unit), usage, row similarity,
  clustering, the base model's confusion and its correlation with the similarity;
- :mod:`.saliency`: image maps from the filters, with Grad-CAM and a random map as references;
- :mod:`.faithfulness`: RISE deletion/insertion curves and AUCs;
- :mod:`.plots`: the figures; :mod:`.report`: ``explain.json`` / ``explain.md``;
- :mod:`.job`: the whole analysis (:func:`~.job.explain_adapter`) and the ``hf-unlearn explain`` job;
- :mod:`.common`: what they share (model, logits, class ids, image batches).

Example:

```py
>>> from hf_unlearn.explain import faithfulness, filters, saliency
>>> maps = filters.filter_maps(adapter)                                    # {layer: (N, out) of 1 - alpha}
>>> sal = saliency.filter_saliency(adapter, pixel_values, classes="Coat")  # (B, H, W) in [0, 1]
>>> faithfulness.deletion_auc(adapter, pixel_values, sal, target="Coat")   # per image
```
"""
