"""Data: image-classification datasets (local, Hub, the built-in offline sets) and their loaders.

The pipeline, one module per step (import from the module; this package re-exports nothing):

* ``data.loading``: :func:`~hf_unlearn.data.loading.load_image_dataset` / ``wrap_dataset`` -> an
  ``ImageClassificationData`` (dataset, image/label columns, class names); ``check_labels_match``.
* ``data.builtin``: the offline sets ``fashion_mnist``, ``fashion_mnist_100``, ``digits``, and the IDX reader.
* ``data.transforms``: decoding and the model's image processor (``make_transform``,
  ``to_tensor_dataset``, ``check_processor_fits``).
* ``data.loaders``: ``build_dataloader``, ``class_subset`` (forget/retain splits), ``subsample``.
* ``data.tensors``: the one tensor dataset (``TensorDictDataset``) and collate function.

```py
>>> from hf_unlearn.data.loading import load_image_dataset
>>> from hf_unlearn.data.loaders import build_dataloader, class_subset
>>> forget = class_subset(load_image_dataset("fashion_mnist", split="test"), ["coat"])
>>> loader = build_dataloader(forget, processor, num_channels=1, batch_size=256, shuffle=False, seed=0)
```
"""
