"""Configuration of the weight-filter (WF-Net) PEFT method."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from peft.config import PeftConfig


class UnlearnPeftType(str, enum.Enum):
    """PEFT method types added by hf_unlearn.

    PEFT only accepts names that are members of ``peft.PeftType``; a ``str`` Enum member hashes like
    its string, so the ``"WEIGHT_FILTER"`` written in ``adapter_config.json`` finds our entries in
    PEFT's mapping dicts (see ``hf_unlearn.tuners.weight_filter.__init__``).
    """

    WEIGHT_FILTER = "WEIGHT_FILTER"


# Default modules to filter, by transformers ``model_type``. Inner layers only: the stem and the
# classifier head stay unfiltered, since filtering the logits is an output mask, not unlearning.
# ViT names are those of transformers >= 5.9 (``q_proj`` ... ``fc2``); pyproject pins that range.
DEFAULT_TARGET_MODULES: dict[str, Union[str, list[str]]] = {
    "vit": ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"],
    "convnext": ["dwconv", "pwconv1", "pwconv2"],
    "resnet": r".*encoder\.stages\.\d+\.layers\.\d+\.(layer\.\d+|shortcut)\.convolution",
}


@dataclass
class WeightFilterConfig(PeftConfig):
    """Configuration of a weight-filter adapter: one learned row of filters per class, per layer.

    For each wrapped layer ``l`` the adapter holds a matrix ``alpha_l`` of shape
    ``(num_classes, out_features)`` with values in ``[0, 1]``. Forgetting class ``c`` multiplies
    output unit ``k`` of every wrapped layer (equivalently row ``k`` of its weight and bias) by
    ``alpha_l[c, k]``; forgetting a set of classes multiplies by the product of their rows.

    Args:
        num_classes (`int`): Number of classes of the base classifier (its ``config.num_labels``).
            Left out, it is read from the model; given, it must match.
        target_modules (`list[str]` or `str`, *optional*): Module names (suffix match) or a regex
            (full match) of the layers to filter. Defaults per ``model_type`` for ViT, ConvNeXt and
            ResNet: see ``DEFAULT_TARGET_MODULES``.
        exclude_modules (`list[str]` or `str`, *optional*): Modules never to filter.
        modules_to_save (`list[str]`, *optional*): Extra modules trained and saved with the adapter.
        parametrization (`"sigmoid"` or `"clamp"`): ``alpha = sigmoid(theta)`` (smooth, the default)
            or ``alpha = clamp(theta, 0, 1)``.
        init_value (`float`): Initial filter value in ``(0, 1]``. 1.0 means "no filtering" exactly
            (only reachable with ``"clamp"``; sigmoid logits are clipped to ``init_logit_max``).
        init_logit_max (`float`): Largest initial logit for the sigmoid parametrisation (3.0 gives
            alpha = 0.953: near-identity, with gradients that still move it; measured best).
        base_model_signature (`dict`, *optional*): Filled in when the adapter is created: model type,
            class name, number of labels and the size of every filtered layer. Checked on load so
            an adapter never attaches silently to another architecture or size.

    Example:

    ```py
    >>> import hf_unlearn  # registers the method with PEFT
    >>> from peft import get_peft_model
    >>> from hf_unlearn import WeightFilterConfig
    >>> peft_model = get_peft_model(model, WeightFilterConfig())  # targets chosen by model_type
    >>> logits = peft_model(pixel_values=x, forget=[3]).logits      # behave as if class 3 was unlearned
    ```
    """

    num_classes: Optional[int] = field(
        default=None, metadata={"help": "Number of classes (rows); defaults to the model's num_labels."}
    )
    target_modules: Optional[Union[list[str], str]] = field(
        default=None,
        metadata={"help": "Modules to filter: names (suffix match) or a regex. Default: per model_type."},
    )
    exclude_modules: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "Modules never to filter: names or a regex."}
    )
    modules_to_save: Optional[list[str]] = field(
        default=None, metadata={"help": "Extra modules to train and save with the adapter."}
    )
    parametrization: Literal["sigmoid", "clamp"] = field(
        default="sigmoid", metadata={"help": "How raw parameters map to filters in [0, 1]."}
    )
    init_value: float = field(default=1.0, metadata={"help": "Initial filter value in (0, 1]."})
    init_logit_max: float = field(
        default=3.0, metadata={"help": "Largest initial logit for the sigmoid parametrisation."}
    )
    base_model_signature: Optional[dict] = field(
        default=None, metadata={"help": "Set on creation; checked on load. Do not edit."}
    )

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = UnlearnPeftType.WEIGHT_FILTER
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, list):
            self.exclude_modules = set(self.exclude_modules)
        if self.parametrization not in ("sigmoid", "clamp"):
            raise ValueError(
                f"parametrization must be 'sigmoid' or 'clamp', got {self.parametrization!r}."
            )
        if not 0.0 < float(self.init_value) <= 1.0:
            raise ValueError(f"init_value must be in (0, 1], got {self.init_value}.")
        if self.num_classes is not None and int(self.num_classes) < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes}.")
