"""hf_unlearn: make Hugging Face image classifiers forget classes with weight-filter adapters.

Importing the package registers the ``WEIGHT_FILTER`` method with PEFT, so that
``PeftModel.from_pretrained`` can load saved adapters in a fresh process.

Example:

```py
>>> import hf_unlearn
>>> adapter = hf_unlearn.UnlearnAdapter.from_pretrained("runs/wf-resnet")
>>> adapter(pixel_values=x, forget="Coat").logits
```
"""

__version__ = "0.1.0"

from .tuners.weight_filter import (  # noqa: E402  (registration happens on this import)
    UnlearnPeftType,
    WeightFilterConfig,
    WeightFilterModel,
    per_sample,
)
from .adapter import UnlearnAdapter  # noqa: E402

__all__ = ["UnlearnAdapter", "UnlearnPeftType", "WeightFilterConfig", "WeightFilterModel", "per_sample", "__version__"]
