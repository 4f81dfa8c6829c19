"""The weight-filter tuner: which layers get filters, how the forgotten classes are chosen per call."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Optional

import torch
from peft.tuners.tuners_utils import BaseTuner, check_adapters_to_merge
from torch import nn

from .config import DEFAULT_TARGET_MODULES, WeightFilterConfig
from .layer import SELECTIONS, UNSET, Conv2d, Linear, SelectionKey, WeightFilterLayer
from .selection import normalize_selection

FORGET_KWARG = "forget"


class WeightFilterModel(BaseTuner):
    """Wraps a transformers image classifier with weight filters (WF-Net, arXiv 2304.02049).

    Created through PEFT (``get_peft_model(model, WeightFilterConfig())``) or loaded with
    ``PeftModel.from_pretrained`` after ``import hf_unlearn``. The classes to forget are chosen
    per call with the ``forget=`` keyword of ``forward`` or with the ``forgetting(...)`` context;
    see ``hf_unlearn.tuners.weight_filter.selection`` for the accepted forms.

    Concurrency: the choice lives in a ``contextvars.ContextVar`` (per thread / asyncio task), not
    on the shared layers, so one model may serve calls with different ``forget=`` from several
    threads at once. A ``forgetting(...)`` context applies to calls in the same thread or task only.

    Editing the filters: inference caches the filters and the scales of recent selections; they
    follow an optimizer step, ``load_state_dict``, an in-place edit under ``torch.no_grad()``,
    ``.data = ...`` and ``.to()`` by themselves. An in-place edit through ``.data`` (e.g.
    ``theta.data.copy_(...)``) bumps no version counter and is not seen: call
    :meth:`clear_filter_caches` after one.

    Example:

    ```py
    >>> import hf_unlearn
    >>> from peft import get_peft_model
    >>> peft_model = get_peft_model(model, hf_unlearn.WeightFilterConfig())
    >>> with peft_model.forgetting("Coat"):
    ...     logits = peft_model(pixel_values=x).logits
    >>> with peft_model.forgetting(["Coat", "Shirt"]):
    ...     plain = peft_model.merge_and_unload()   # a transformers model with both rows folded in
    ```
    """

    prefix: str = "weight_filter_"
    tuner_layer_cls = WeightFilterLayer
    target_module_mapping = DEFAULT_TARGET_MODULES

    def __init__(self, model, config, adapter_name, low_cpu_mem_usage: bool = False, state_dict=None) -> None:
        # The key under which this model's layers find their selection in the SELECTIONS context
        # variable; set before injection creates the layers.
        self._selection_key = SelectionKey()
        self._hook_handles: list = []
        self._layers: Optional[list[WeightFilterLayer]] = None  # cached; reset when layers change
        self._selection_cache: dict = {}
        super().__init__(model, config, adapter_name, low_cpu_mem_usage=low_cpu_mem_usage, state_dict=state_dict)
        # `forget=` travels through PeftModel.forward untouched (PEFT only strips its own keys); a
        # pre-hook on the transformers model takes it out before the model sees its kwargs.
        self._hook_handles = [
            self.model.register_forward_pre_hook(self._forget_pre_hook, with_kwargs=True),
            self.model.register_forward_hook(self._forget_post_hook, always_call=True),
        ]

    # ---------------------------------------------------------------- injection and validation

    def _prepare_adapter_config(self, peft_config: WeightFilterConfig, model_config: dict) -> WeightFilterConfig:
        num_labels = model_config.get("num_labels") or len(model_config.get("id2label") or {}) or None
        if peft_config.num_classes is None:
            if num_labels is None:
                raise ValueError("Could not read num_labels from the model config: pass num_classes=.")
            peft_config.num_classes = int(num_labels)
        elif num_labels is not None and int(peft_config.num_classes) != int(num_labels):
            raise ValueError(
                f"num_classes={peft_config.num_classes} does not match the model's num_labels={num_labels}. "
                "The adapter needs one filter row per class of this classifier: leave num_classes out "
                "to take it from the model."
            )
        if peft_config.target_modules is None:
            model_type = model_config.get("model_type")
            if model_type not in self.target_module_mapping:
                raise ValueError(
                    f"No default target_modules for model_type={model_type!r} (defaults exist for "
                    f"{sorted(self.target_module_mapping)}): pass target_modules= explicitly."
                )
        return super()._prepare_adapter_config(peft_config, model_config)

    def _pre_injection_hook(self, model: nn.Module, config: WeightFilterConfig, adapter_name: str) -> None:
        signature = config.base_model_signature
        if not signature:
            return
        mine = _model_identity(model)
        diffs = [
            f"{key}: adapter was made for {signature.get(key)!r}, this model has {mine[key]!r}"
            for key in ("model_type", "architecture", "num_labels")
            if signature.get(key) is not None and signature.get(key) != mine[key]
        ]
        if diffs:
            raise ValueError(
                f"Adapter {adapter_name!r} does not fit this base model ({'; '.join(diffs)}). "
                "Load it onto the base model named in its adapter_config.json (base_model_name_or_path)."
            )

    def _post_injection_hook(self, model: nn.Module, config: WeightFilterConfig, adapter_name: str) -> None:
        layers = {
            name: module.out_features
            for name, module in model.named_modules()
            if isinstance(module, WeightFilterLayer) and adapter_name in module.weight_filter_theta
        }
        if not config.base_model_signature:
            config.base_model_signature = {**_model_identity(model), "filtered_layers": layers}
            return
        expected = {n: int(v) for n, v in (config.base_model_signature.get("filtered_layers") or {}).items()}
        missing, extra, resized = compare_layouts(expected, layers)
        if missing or extra or resized:
            details = []
            if missing:
                details.append(f"{len(missing)} filtered layer(s) not found, e.g. {missing[:3]}")
            if extra:
                details.append(f"{len(extra)} unexpected layer(s), e.g. {extra[:3]}")
            if resized:
                n = resized[0]
                details.append(
                    f"{len(resized)} layer(s) of another size, e.g. {n}: adapter {expected[n]}, model {layers[n]}"
                )
            raise ValueError(
                f"Adapter {adapter_name!r} was made for a differently sized or shaped model: "
                f"{'; '.join(details)}. Load it onto the base model it was trained on."
            )

    def _create_and_replace(self, config, adapter_name, target, target_name, parent, current_key, **kwargs):
        if isinstance(target, WeightFilterLayer):
            target.update_layer(adapter_name, config)
            return
        if isinstance(target, nn.Conv2d):
            new_module = Conv2d(target, adapter_name, config)
        elif isinstance(target, nn.Linear):
            new_module = Linear(target, adapter_name, config)
        else:
            raise TypeError(
                f"Module {current_key!r} is a {type(target).__name__}; weight filters wrap nn.Linear "
                "and nn.Conv2d only. Adjust target_modules."
            )
        new_module._selection_key = self._selection_key
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _mark_only_adapters_as_trainable(self, model: nn.Module) -> None:
        for name, param in model.named_parameters():
            if self.prefix not in name:
                param.requires_grad = False

    # ---------------------------------------------------------------- choosing what to forget

    @property
    def num_classes(self) -> int:
        return int(self.peft_config[self.active_adapters[0]].num_classes)

    def _label2id(self) -> dict[str, int]:
        config = getattr(self.model, "config", None)
        id2label = getattr(config, "id2label", None) or {}
        return {str(name): int(i) for i, name in id2label.items()}

    def normalize_selection(self, forget: Any) -> Optional[torch.Tensor]:
        """Validate ids/names against this adapter and return the ``(B, K)`` selection tensor."""
        # A served class is asked for again and again: reuse the tensor for plain ids and names,
        # which also lets the layers reuse their cached scales.
        key = forget if isinstance(forget, (int, str)) and not isinstance(forget, bool) else None
        if key is not None and key in self._selection_cache:
            return self._selection_cache[key]
        selection = normalize_selection(forget, self.num_classes, self._label2id())
        if key is not None:
            if len(self._selection_cache) > 4096:
                self._selection_cache.clear()
            self._selection_cache[key] = selection
        return selection

    def filter_layers(self) -> list[WeightFilterLayer]:
        if self._layers is None:
            self._layers = [m for m in self.model.modules() if isinstance(m, WeightFilterLayer)]
        return self._layers

    def _entry(self) -> tuple:
        """This context's ``(forgetting-context selection, call selection or UNSET)``."""
        return SELECTIONS.get().get(self._selection_key, (None, UNSET))

    def _set_entry(self, context: Optional[torch.Tensor], call: Any):
        # A new mapping each time: other contexts (threads, tasks) keep the one they have.
        mapping = dict(SELECTIONS.get())
        if context is None and call is UNSET:
            mapping.pop(self._selection_key, None)  # nothing to remember: keep the mapping small
        else:
            mapping[self._selection_key] = (context, call)
        return SELECTIONS.set(mapping)

    def clear_filter_caches(self) -> None:
        """Drop every layer's cached filters and scales.

        The caches follow every ordinary update of the filters by themselves (an optimizer step,
        ``load_state_dict``, an in-place edit under ``torch.no_grad()``, ``.data = ...``, ``.to()``);
        an in-place edit through ``.data`` is invisible to them (it bumps no version counter), so
        call this after one.

        Example:

        ```py
        >>> for p in peft_model.parameters():
        ...     p.data.mul_(0.5)
        >>> peft_model.base_model.clear_filter_caches()
        ```
        """
        for layer in self.filter_layers():
            layer.clear_caches()

    def inject_adapter(self, *args, **kwargs):
        self._layers = None
        self._selection_cache = {}
        return super().inject_adapter(*args, **kwargs)

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        self._layers = None
        self._selection_cache = {}

    def set_adapter(self, *args, **kwargs):
        self._selection_cache = {}  # another adapter may have another number of classes
        return super().set_adapter(*args, **kwargs)

    @contextmanager
    def forgetting(self, forget: Any):
        """Context in which the model behaves as if ``forget`` had been unlearned.

        It holds for calls made in this thread (or asyncio task) only; other threads are not
        affected. With gradient checkpointing, run ``backward()`` inside the context: the
        recomputed forward needs the same selection.
        """
        selection = self.normalize_selection(forget)
        key = self._selection_key
        previous_fallback = key.training_fallback
        token = self._set_entry(selection, UNSET)
        if self._keeps_for_backward():
            key.training_fallback = selection
        try:
            yield self
        finally:
            SELECTIONS.reset(token)
            key.training_fallback = previous_fallback

    def _keeps_for_backward(self) -> bool:
        return torch.is_grad_enabled() and self.model.training and _checkpointing(self.model)

    def _forget_pre_hook(self, module, args, kwargs):
        # `forget=None` means "no choice for this call": the `forgetting(...)` context, if any, applies.
        forget = kwargs.pop(FORGET_KWARG, None)
        context, call = self._entry()
        if forget is not None:
            selection = self.normalize_selection(forget)
            pixel_values = kwargs.get("pixel_values", args[0] if args else None)
            if selection is not None and isinstance(pixel_values, torch.Tensor):
                if selection.shape[0] not in (1, pixel_values.shape[0]):
                    raise ValueError(
                        f"`forget` has {selection.shape[0]} per-sample entries but the batch has "
                        f"{pixel_values.shape[0]} samples: give one entry per sample, or one class/set for all."
                    )
            self._set_entry(context, selection)
        elif call is not UNSET:
            # An earlier checkpointed call kept its selection for its backward; this call did not ask.
            self._set_entry(context, UNSET)
            self._selection_key.training_fallback = context
        return args, kwargs

    def _forget_post_hook(self, module, args, output):
        context, call = self._entry()
        if call is UNSET:
            return None
        if self._keeps_for_backward():
            # Gradient checkpointing re-runs forward during backward: keep this call's rows until
            # then (the next forward call resets them). Also for autograd threads that do not
            # see this context (training is not meant to run concurrently with serving).
            self._selection_key.training_fallback = call
        else:
            self._set_entry(context, UNSET)
            if self._selection_key.training_fallback is not None:
                self._selection_key.training_fallback = None  # a stale training choice must not leak
        return None

    # ---------------------------------------------------------------- unloading

    def check_safe_merge(self, adapter_names: Optional[list[str]] = None) -> None:
        """Raise ``ValueError`` if merging the current selection would put a non-finite value in any layer.

        PEFT's ``safe_merge`` checks each layer as it merges it, so a bad last layer would leave the
        earlier ones merged (or unloaded); checking them all first makes a refusal change nothing.
        """
        for name, module in self.model.named_modules():
            if not isinstance(module, WeightFilterLayer):
                continue
            names = check_adapters_to_merge(module, adapter_names)
            try:
                if names:
                    module.merged_tensors(names, safe_merge=True)
            except ValueError as err:
                raise ValueError(
                    f"safe_merge: merging {names} into {name} gives non-finite weights (a NaN or inf in the "
                    f"selected filter rows); nothing was merged. Fix those rows or merge without them. ({err})"
                ) from None

    def merge_adapter(self, adapter_names: Optional[list[str]] = None, safe_merge: bool = False) -> None:
        if safe_merge:
            self.check_safe_merge(adapter_names)
        super().merge_adapter(adapter_names=adapter_names, safe_merge=safe_merge)

    def _unload_and_optionally_merge(self, merge: bool = True, progressbar: bool = False, safe_merge: bool = False,
                                     adapter_names: Optional[list[str]] = None):
        if merge and safe_merge:
            self.check_safe_merge(adapter_names)
        model = super()._unload_and_optionally_merge(
            merge=merge, progressbar=progressbar, safe_merge=safe_merge, adapter_names=adapter_names
        )
        self._layers = None
        for handle in self._hook_handles:
            handle.remove()
        self._hook_handles = []
        return model

    def forward(self, *args: Any, **kwargs: Any):
        return self.model(*args, **kwargs)


def compare_layouts(expected: dict, actual: dict) -> tuple[list, list, list]:
    """``(missing, extra, resized)``: sorted names of ``expected`` absent from ``actual``, of ``actual``
    absent from ``expected``, and of both whose sizes differ. Shared by the checks of an adapter's
    layers (after injection) and of its tensor file (before loading), so both judge a mismatch alike.

    Example:

    ```py
    >>> compare_layouts({"a": 4, "b": 8}, {"a": 4, "b": 16, "c": 2})
    ([], ['c'], ['b'])
    ```
    """
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    resized = sorted(n for n in set(expected) & set(actual) if expected[n] != actual[n])
    return missing, extra, resized


def _model_identity(model: nn.Module) -> dict:
    config = getattr(model, "config", None)
    return {
        "model_type": getattr(config, "model_type", None),
        "architecture": type(model).__name__,
        "num_labels": getattr(config, "num_labels", None),
    }


def _checkpointing(model: nn.Module) -> bool:
    # transformers >= 5.x renamed is_gradient_checkpointing to is_activation_checkpointing.
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False
