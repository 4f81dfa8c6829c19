"""The interactive demo: forget classes in a browser (``hf-unlearn demo``), locally or as a Hub Space.

The logic (:class:`UnlearnDemo`) and the Space files (:mod:`hf_unlearn.demo.space`) need no
Gradio; only :mod:`hf_unlearn.demo.app` imports it (``pip install "hf_unlearn[demo]"``).

Example:

```py
>>> from hf_unlearn.demo import UnlearnDemo
>>> demo = UnlearnDemo.from_pretrained("runs/quickstart/adapter")
>>> demo.accuracy(["Coat"])["forget_acc"]
0.0
```
"""

from .core import DemoInputError, UnlearnDemo, check_image, recorded_dataset

__all__ = ["DemoInputError", "UnlearnDemo", "check_image", "recorded_dataset"]
