"""The weight-filter PEFT method, registered with PEFT when this package is imported.

PEFT has no plugin entry point and ``register_peft_method`` only accepts existing ``PeftType``
members, so the three mapping dicts are filled directly with a ``str`` Enum member: it hashes like
the ``"WEIGHT_FILTER"`` string stored in ``adapter_config.json``.
"""

from peft import mapping as _peft_mapping

from .config import DEFAULT_TARGET_MODULES, UnlearnPeftType, WeightFilterConfig
from .layer import Conv2d, Linear, WeightFilterLayer
from .model import WeightFilterModel, compare_layouts
from .selection import normalize_selection, per_sample, resolve_class
from .model import FORGET_KWARG

_peft_mapping.PEFT_TYPE_TO_CONFIG_MAPPING[UnlearnPeftType.WEIGHT_FILTER] = WeightFilterConfig
_peft_mapping.PEFT_TYPE_TO_TUNER_MAPPING[UnlearnPeftType.WEIGHT_FILTER] = WeightFilterModel
_peft_mapping.PEFT_TYPE_TO_PREFIX_MAPPING[UnlearnPeftType.WEIGHT_FILTER] = WeightFilterModel.prefix

__all__ = [
    "DEFAULT_TARGET_MODULES",
    "FORGET_KWARG",
    "Conv2d",
    "Linear",
    "UnlearnPeftType",
    "WeightFilterConfig",
    "WeightFilterLayer",
    "WeightFilterModel",
    "compare_layouts",
    "normalize_selection",
    "per_sample",
    "resolve_class",
]
