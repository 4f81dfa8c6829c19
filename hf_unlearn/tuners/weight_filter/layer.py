"""Weight-filter layers: a ``(num_classes, out_features)`` filter matrix per adapter on a Linear or Conv2d.

Scaling output unit ``k`` of ``y = W x + b`` by ``a_k`` equals scaling row ``k`` of ``W`` and ``b``.
So the filter is applied on the layer's output, which lets every sample of a batch use its own
row, and it can be folded into the weights ("merge") for a plain model with zero overhead.
"""

from __future__ import annotations

import contextvars
import math
from types import MappingProxyType
from typing import Any, Mapping, Optional

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn
from torch.nn import functional as F

from .config import WeightFilterConfig
from .selection import selection_on


UNSET: Any = object()  # "no per-call selection": the forgetting(...) context applies


class SelectionKey:
    """Identity of one ``WeightFilterModel``'s layers in :data:`SELECTIONS` (a deep copy gets its own).

    ``training_fallback`` is the one piece of shared state: the selection a checkpointed training
    call keeps for its backward pass, which autograd may recompute on a thread that does not see
    the caller's context (CUDA's device threads). Serving never sets it.
    """

    __slots__ = ("training_fallback", "__weakref__")

    def __init__(self) -> None:
        self.training_fallback: Optional[torch.Tensor] = None


# Which classes the layers forget, per execution context (thread / asyncio task): a mapping
# SelectionKey -> (forgetting-context selection, this call's selection or UNSET). A request's
# selection thus travels with the request; concurrent calls from other threads never see it.
SELECTIONS: contextvars.ContextVar[Mapping] = contextvars.ContextVar(
    "hf_unlearn_weight_filter_selections", default=MappingProxyType({})
)


class WeightFilterLayer(BaseTunerLayer):
    """Mixin owning the learned filters of one wrapped layer.

    ``weight_filter_theta[adapter]`` holds raw parameters of shape ``(num_classes, out_features)``;
    ``filters(adapter)`` maps them into ``[0, 1]``. ``selection`` (read-only) is what the current
    call forgets, read from the :data:`SELECTIONS` context variable that ``WeightFilterModel`` sets:
    a ``(B, K)`` LongTensor of class ids padded with -1 (``B == 1``: one choice for the whole
    batch), or None for "forget nothing", in which case the layer is exactly its base layer.
    """

    adapter_layer_names = ("weight_filter_theta",)
    other_param_names = ("weight_filter_parametrization",)

    def __init__(self, base_layer: nn.Module, **kwargs) -> None:
        self.base_layer = base_layer
        self.weight_filter_theta = nn.ParameterDict({})
        self.weight_filter_parametrization: dict[str, str] = {}
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self._selection_key: Optional[SelectionKey] = None  # set by WeightFilterModel
        # Inference-time caches (see `_padded_filters` and `_inference_scale`): each adapter's
        # filters with the identity row appended, and the scale of recent selections.
        self._filter_cache: dict[str, tuple[tuple, torch.Tensor, torch.Tensor]] = {}
        self._scale_cache: dict = {}
        self._merge_backup: Optional[tuple[torch.Tensor, Optional[torch.Tensor]]] = None

        base = self.get_base_layer()
        if isinstance(base, nn.Linear):
            self.in_features, self.out_features = base.in_features, base.out_features
        elif isinstance(base, nn.Conv2d):
            self.in_features, self.out_features = base.in_channels, base.out_channels
        else:
            raise TypeError(
                f"Weight filters support nn.Linear and nn.Conv2d layers, not {type(base).__name__}."
            )

    def update_layer(self, adapter_name: str, config: WeightFilterConfig, **kwargs) -> None:
        if config.parametrization == "sigmoid":
            # logit(1.0) is +inf, where the sigmoid has no gradient: start at a high but finite logit.
            value = min(_logit(config.init_value), config.init_logit_max)
        else:
            value = config.init_value
        theta = torch.full((config.num_classes, self.out_features), float(value))
        self.weight_filter_theta[adapter_name] = nn.Parameter(theta)
        self.weight_filter_parametrization[adapter_name] = config.parametrization
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    @property
    def selection(self) -> Optional[torch.Tensor]:
        """The current call's selection in this thread/task (None: behave as the base layer)."""
        key = self._selection_key
        entry = SELECTIONS.get().get(key)
        if entry is not None:
            context, call = entry
            return context if call is UNSET else call
        return key.training_fallback if key is not None else None

    def filters(self, adapter_name: str) -> torch.Tensor:
        """Filter values in [0, 1], shape ``(num_classes, out_features)``."""
        theta = self.weight_filter_theta[adapter_name]
        if self.weight_filter_parametrization.get(adapter_name, "sigmoid") == "sigmoid":
            return torch.sigmoid(theta)
        return theta.clamp(0.0, 1.0)

    def selection_scale(
        self, selection: torch.Tensor, adapter_names: Optional[list[str]] = None
    ) -> Optional[torch.Tensor]:
        """Per-sample output scale ``(B, out_features)`` for a selection, or None if no adapter applies.

        Row -1 is the identity; a set of classes multiplies its rows. Only the selected rows take
        part in the graph, so only they receive gradient.
        """
        scale = None
        for name in adapter_names if adapter_names is not None else self.active_adapters:
            if name not in self.weight_filter_theta:
                continue
            padded = self._padded_filters(name)
            num_classes = padded.shape[0] - 1
            # Ids were validated against num_classes by WeightFilterModel; no check here, since
            # reading a tensor value in every layer would force a device sync per layer.
            sel = selection_on(selection, padded.device)  # one copy for all layers, not one sync each
            index = torch.where(sel < 0, torch.full_like(sel, num_classes), sel)
            rows = padded[index[:, 0]] if index.shape[1] == 1 else padded[index].prod(dim=1)
            scale = rows if scale is None else scale * rows
        return scale

    def _padded_filters(self, name: str) -> torch.Tensor:
        """Filters of adapter ``name`` with an all-ones row appended (index ``num_classes`` = no filter).

        Without gradients the result is cached, keyed on what an update of the parameter changes:
        its version (bumped by an optimizer step, ``load_state_dict``, any in-place edit of the
        parameter under ``torch.no_grad()``), its storage (``.data = ...``, ``load_state_dict(assign=True)``,
        ``.to()``), device and dtype. An in-place edit through ``.data`` bumps nothing (PyTorch's
        ``.data`` is invisible to autograd's version counter): call :meth:`clear_caches` after one.
        """
        theta = self.weight_filter_theta[name]
        if torch.is_grad_enabled() and theta.requires_grad:
            alpha = self.filters(name)
            return torch.cat([alpha, alpha.new_ones(1, alpha.shape[1])], dim=0)
        key = (theta._version, theta.data_ptr(), theta.device, theta.dtype,
               self.weight_filter_parametrization.get(name))
        cached = self._filter_cache.get(name)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                alpha = self.filters(name)
                padded = torch.cat([alpha, alpha.new_ones(1, alpha.shape[1])], dim=0)
            # The entry keeps the parameter's storage alive (theta.detach()), so a tensor swapped
            # in later with `.data = ...` cannot reuse its address and match the key by accident.
            cached = (key, padded, theta.detach())
            self._filter_cache[name] = cached
        return cached[1]

    def _inference_scale(self, selection: torch.Tensor) -> Optional[torch.Tensor]:
        # Without gradients the same selection object is usually run many times (served classes,
        # an evaluation sweep): reuse its scale while neither the selection nor a filter changed.
        # A filter change shows as a new padded-filters tensor (see `_padded_filters`), so this
        # cache is exactly as fresh as that one. Keyed by selection, so threads serving different
        # classes do not evict each other; each entry is one immutable tuple, read and written in
        # one step (safe under concurrency).
        filters = tuple(self._padded_filters(n) for n in self.active_adapters if n in self.weight_filter_theta)
        cached = self._scale_cache.get(id(selection))
        if (cached is not None and cached[0] is selection and len(cached[1]) == len(filters)
                and all(a is b for a, b in zip(cached[1], filters))):
            return cached[2]
        scale = self.selection_scale(selection)
        if len(self._scale_cache) >= 64:
            self._scale_cache = {}  # replaced, not cleared: a concurrent reader keeps its dict
        self._scale_cache[id(selection)] = (selection, filters, scale)
        return scale

    def clear_caches(self) -> None:
        """Forget the cached filters and scales: needed only after editing a filter through ``.data``.

        Example:

        ```py
        >>> layer.weight_filter_theta["default"].data[3] = 8.0   # no version bump
        >>> layer.clear_caches()
        ```
        """
        self._filter_cache = {}
        self._scale_cache = {}

    def _broadcast(self, scale: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _forward_scaled_weight(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check_batch(self, scale: torch.Tensor, result: torch.Tensor) -> None:
        if scale.shape[0] not in (1, result.shape[0]):
            raise ValueError(
                f"The per-sample selection has {scale.shape[0]} entries but the batch has "
                f"{result.shape[0]} samples: give one entry per sample, or one class/set for all."
            )

    def _filtered_forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        selection = self.selection  # read once: the context variable lookup is per call
        if self.merged:
            if selection is not None:
                raise RuntimeError(
                    "This layer has filters merged into its weights; selecting classes again would "
                    "apply them twice. Call `unmerge_adapter()` first, or use the merged model alone."
                )
            return self.base_layer(x, *args, **kwargs)
        if selection is None:
            return self.base_layer(x, *args, **kwargs)
        if not torch.is_grad_enabled():
            scale = self._inference_scale(selection)
            if scale is not None and scale.shape[0] == 1 and type(self.base_layer) in (nn.Linear, nn.Conv2d):
                # One row for the whole batch: scaling the weight rows costs O(weights) instead of
                # an extra pass over the activations, so serving one class runs at exported speed.
                return self._forward_scaled_weight(x, scale[0])
        else:
            scale = self.selection_scale(selection)
        result = self.base_layer(x, *args, **kwargs)
        if scale is None:
            return result
        self._check_batch(scale, result)
        scale = self._broadcast(scale.to(result.dtype), result)
        if not torch.is_grad_enabled():
            return result.mul_(scale)  # the base layer's fresh output; nothing else holds it
        return result * scale

    def merged_tensors(
        self, adapter_names: list[str], safe_merge: bool = False
    ) -> Optional[tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """The base ``(weight, bias)`` with the selected row(s) folded in, or None if no adapter applies.

        Changes nothing; with ``safe_merge`` a non-finite result raises ``ValueError``. Needs one
        selection for the whole model (see :meth:`merge`).
        """
        selection = self.selection
        if selection is None or selection.shape[0] != 1:
            raise ValueError(
                "Merging weight filters needs the class(es) to forget for the whole model: "
                "`with peft_model.forgetting(classes): model = peft_model.merge_and_unload()`, "
                "or `UnlearnAdapter.export(forget=classes)`."
            )
        base = self.get_base_layer()
        scale = self.selection_scale(selection, adapter_names)
        if scale is None:
            return None
        scale = scale[0].detach().to(base.weight.device, torch.float32)
        shape = (-1,) + (1,) * (base.weight.ndim - 1)
        new_weight = (base.weight.data.float() * scale.view(shape)).to(base.weight.dtype)
        new_bias = None
        if base.bias is not None:
            new_bias = (base.bias.data.float() * scale).to(base.bias.dtype)
        if safe_merge and not (
            torch.isfinite(new_weight).all() and (new_bias is None or torch.isfinite(new_bias).all())
        ):
            raise ValueError(f"Non-finite values after merging adapters {adapter_names}; nothing changed.")
        return new_weight, new_bias

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        """Fold the selected row (or product of rows) into the base weight and bias.

        Needs one selection for the whole model, e.g.
        ``with peft_model.forgetting([3]): plain = peft_model.merge_and_unload()``.
        """
        adapter_names = check_adapters_to_merge(self, adapter_names)
        if not adapter_names:
            return
        merged = self.merged_tensors(adapter_names, safe_merge)
        if merged is None:
            return
        base = self.get_base_layer()
        if self._merge_backup is None:
            bias = base.bias.data.clone() if base.bias is not None else None
            self._merge_backup = (base.weight.data.clone(), bias)
        base.weight.data, new_bias = merged
        if new_bias is not None:
            base.bias.data = new_bias
        self.merged_adapters.extend(adapter_names)

    def unmerge(self) -> None:
        """Restore the exact original weights (kept aside at merge; dividing by ~0 filters is unsafe)."""
        if not self.merged or self._merge_backup is None:
            return
        base = self.get_base_layer()
        weight, bias = self._merge_backup
        base.weight.data = weight
        if bias is not None:
            base.bias.data = bias
        self._merge_backup = None
        self.merged_adapters = []


class _FilteredModule(nn.Module, WeightFilterLayer):
    """What the Linear and Conv2d wrappers share; they differ only in the channel axis."""

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: WeightFilterConfig, **kwargs) -> None:
        super().__init__()
        WeightFilterLayer.__init__(self, base_layer)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        # nn.Module comes first in the MRO, so forward must be defined on the concrete class.
        return self._filtered_forward(x, *args, **kwargs)

    def __repr__(self) -> str:
        return "weight_filter." + super().__repr__()


class Linear(_FilteredModule):
    """Weight filters on an ``nn.Linear`` (features last: ``(B, ..., out)``, e.g. ViT, ConvNeXt pwconv)."""

    def _broadcast(self, scale: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        return scale.view(scale.shape[0], *([1] * (result.ndim - 2)), scale.shape[1])

    def _forward_scaled_weight(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        base = self.base_layer
        scale = scale.to(base.weight.dtype)
        bias = base.bias * scale if base.bias is not None else None
        return F.linear(x, base.weight * scale[:, None], bias)


class Conv2d(_FilteredModule):
    """Weight filters on an ``nn.Conv2d`` (channels first: ``(B, out, H, W)``), depthwise included."""

    def _broadcast(self, scale: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        return scale.view(scale.shape[0], scale.shape[1], *([1] * (result.ndim - 2)))

    def _forward_scaled_weight(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        base = self.base_layer
        scale = scale.to(base.weight.dtype)
        bias = base.bias * scale if base.bias is not None else None
        return base._conv_forward(x, base.weight * scale.view(-1, 1, 1, 1), bias)


def _logit(p: float) -> float:
    if p >= 1.0:
        return math.inf
    return math.log(p / (1.0 - p))
