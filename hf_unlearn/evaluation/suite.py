"""Prove the class is gone: every unlearning metric for a model, next to the base and the retrain.

:func:`evaluate_unlearning` runs a model over a training and a test split and reports, for each
forgotten class (or the forgotten set), the measures defined in ``hf_unlearn.evaluation.metrics``:

- forget/retain accuracy (FA/RA) on the test split: for an adapter the accuracy matrix over all
  rows (exact up to ``exact_limit`` = 20 classes; above that FA stays exact and RA is the sampled
  estimate with its standard error; the report says which), next to the base model on the same
  samples; for a set or a plain model, FA/RA of that set;
- MIA-efficacy (SalUn protocol) on the forget training samples;
- ZRF against a randomly initialised copy of the architecture (Jensen-Shannon, base-2 logs);
- a linear probe "is this class c?" on penultimate features (train features -> test features);
- a few-shot probe: can class c be relearned from ``few_shot_shots`` (5) labelled samples per class
  on the frozen features? (the measure that tells hiding, e.g. logit masking, from removing);
- with a retrain reference: linear CKA of the forget class's test features to the retrain's, for
  the unlearned model and for the base (how close the representation came to the oracle's);
- optionally (``relearn_shots``), k-shot relearning: fine-tune a copy (head only and/or the full
  model) on k samples per class for ``relearn_steps`` steps and report the forgotten class's accuracy
  for the unlearned model, the base and the retrain (``hf_unlearn.evaluation.relearn``);
- all of it for the retrain-from-scratch reference(s) too, when given.

What it accepts as ``target``:

- an :class:`~hf_unlearn.UnlearnAdapter` (or a ``PeftModel`` with a weight-filter adapter, or an
  adapter folder): every row, or the ``rows`` chosen, each row c forgetting class c; or, with
  ``forget=``, one class or set (rows multiplied);
- a plain transformers classifier (an exported model, a baseline's output, a retrain, or a
  model folder): ``forget=`` names the class(es) it forgot (an exported model records them in
  ``config.unlearned_class_ids``, used when ``forget`` is left out).

Under DDP (``accelerator`` with several processes) every pass goes through
``accelerator.gather_for_metrics``: every rank ends with every sample exactly once, in dataset
order, and computes the same numbers that one process would.

Example:

```py
>>> from hf_unlearn import UnlearnAdapter
>>> from hf_unlearn.data.loading import load_image_dataset
>>> from hf_unlearn.evaluation import evaluate_unlearning, write_report
>>> adapter = UnlearnAdapter.from_pretrained("runs/wf-resnet")
>>> train = load_image_dataset("fashion_mnist", split="train")
>>> test = load_image_dataset("fashion_mnist", split="test")
>>> report = evaluate_unlearning(adapter, train, test,
...                              retrain_dirs={c: f"runs/retrain-resnet/class-{c}" for c in range(10)})
>>> report["accuracy"]["mean_forget_acc"], report["mia_efficacy"]["unlearned"][4]
>>> write_report(report, "runs/eval-resnet")
```

The same as a job: ``accelerate launch recipes/evaluate.py --adapter runs/wf-resnet
--dataset fashion_mnist --retrain_root runs/retrain-resnet --output_dir runs/eval-resnet``
(:func:`main`; ``hf-unlearn evaluate`` can call it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

__all__ = [
    "DEFINITIONS",
    "EXACT_MATRIX_LIMIT",
    "classifier_module",
    "evaluate_unlearning",
    "filter_sparsity",
    "penultimate_features",
    "random_reference_model",
    "build_parser",
    "parse_args",
    "run_evaluation",
    "main",
]

EXACT_MATRIX_LIMIT = 20

DEFINITIONS = {
    "FA / RA": "forget accuracy = accuracy (%) on the test samples of the forgotten class(es); retain "
    "accuracy = accuracy (%) on all other test samples. For an adapter row c forgets class c.",
    "accuracy matrix": "A[c][y] = accuracy (%) on test class y with row c selected; exact (every row x "
    "every sample) up to 20 classes, above that FA exact and RA estimated from sampled (row, sample) "
    "pairs with its standard error (accuracy.method says which).",
    "MIA-efficacy": "SalUn protocol: feature = softmax confidence on the true label; members = "
    "|test retain| retain training samples drawn at random (seeded), non-members = the test samples of "
    "the retained classes; SVC(C=3, gamma='auto', rbf) fitted members vs non-members and applied to "
    "the forget TRAINING samples; % predicted non-member (higher = more forgotten).",
    "ZRF": "1 - mean over the forget TRAINING samples of JS(p_model || p_random), Jensen-Shannon with "
    "base-2 logarithms (so JS and ZRF lie in [0, 1]); p_random = a randomly initialised copy of the "
    "same architecture (AutoModelForImageClassification.from_config, seeded with `seed`). Not the "
    "reference code's reversed-KL element mean.",
    "linear probe": "inputs of the final classifier layer (ResNet/ConvNeXt: pooled output; ViT: CLS "
    "token after the final layernorm), standardised; class-balanced logistic regression 'is this "
    "sample of the forgotten class(es)?' fitted on training-split features, scored on test-split "
    "features: balanced accuracy (%) and ROC AUC. 50% / 0.5 = cannot tell the class apart.",
    "few-shot probe": "nearest-class-mean classifier over all classes from `shots` ({shots}) labelled "
    "training samples per class (cosine to each class's mean L2-normalised penultimate feature), scored "
    "on the test samples of the forgotten class(es): % assigned to their own class, mean of {draws} seeded "
    "draws. Equal to the base = the features still encode the class (logit masking scores exactly the "
    "base); near the retrain = it is gone from the representation.",
    "linear CKA to retrain": "linear centred kernel alignment (Kornblith et al. 2019) of the penultimate "
    "features of the forgotten class's test samples (the probe's test subset) with the retrained model's "
    "features of the same samples, in [0, 1]; reported for the unlearned model and for the base. Higher "
    "than the base = the class's representation moved towards the oracle's.",
    "k-shot relearning": "a copy of the model (an adapter row exported) fine-tuned with Adam for `steps` "
    "({relearn_steps}) full-batch steps on `k` labelled training samples of every class (seeded), the final "
    "classifier only ('head', lr 1e-2) or every parameter ('full', lr 1e-3), eval mode (BatchNorm statistics "
    "fixed); the forgotten class's test accuracy (%) after, for the unlearned model, the base and the "
    "retrain under the same budget. Near the retrain = the class comes back no faster than in a model "
    "that never learned it.",
    "retrain": "the gold standard: the base recipe trained from scratch without the forgotten "
    "class(es), keeping all N outputs (hf_unlearn.training.retrain).",
}


# --------------------------------------------------------------------------------------------
# models: classifier layer, penultimate features, random reference, filter sparsity
# --------------------------------------------------------------------------------------------


def _unwrap(model):
    """(plain transformers model, adapter-or-None) for an UnlearnAdapter, PeftModel or plain model."""
    from peft import PeftModel

    from ..adapter import UnlearnAdapter

    if isinstance(model, UnlearnAdapter):
        return model.base_model, model
    if isinstance(model, PeftModel):
        return model.get_base_model(), UnlearnAdapter(model)
    return model, None


def classifier_module(model):
    """The final classification layer of an image classifier (its input = penultimate features).

    transformers' image classifiers call it ``classifier`` (ResNet: ``Sequential(Flatten, Linear)``
    fed the pooled output; ConvNeXt: a ``Linear`` after the final layernorm; ViT: a ``Linear`` on the
    CLS token after the final layernorm). Other models: ``head``/``fc``/``score``, else the last
    ``Linear`` with ``num_labels`` outputs.
    """
    import torch

    plain, _ = _unwrap(model)
    for name in ("classifier", "head", "fc", "score"):
        module = getattr(plain, name, None)
        if isinstance(module, torch.nn.Module) and not isinstance(module, torch.nn.Identity):
            return module
    num_labels = getattr(getattr(plain, "config", None), "num_labels", None)
    last = None
    for module in plain.modules():
        linear = getattr(module, "base_layer", module)
        if isinstance(linear, torch.nn.Linear) and (num_labels is None or linear.out_features == num_labels):
            last = module
    if last is None:
        raise ValueError(
            f"Cannot find the classification layer of {type(plain).__name__}: expected an attribute "
            "`classifier` (transformers image classifiers) or a final Linear with num_labels outputs."
        )
    return last


@contextlib.contextmanager
def _capture_classifier_input(module):
    store: list = []

    def hook(_module, args, kwargs):
        x = args[0] if args else next(iter(kwargs.values()))
        store.append(x.detach().flatten(1))

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield store
    finally:
        handle.remove()


def penultimate_features(model, pixel_values, forget: Any = None, *, return_logits: bool = False):
    """Penultimate features: what the final classifier layer receives, flattened to ``(B, D)``.

    Works for a plain transformers classifier and for an :class:`~hf_unlearn.UnlearnAdapter` (or
    its ``PeftModel``) with any ``forget`` selection (a class, a set, a per-sample tensor). Taken
    with a forward pre-hook on :func:`classifier_module`: ResNet/ConvNeXt give the pooled output,
    ViT the CLS token after the final layernorm. Runs without gradients.

    Example:

    ```py
    >>> feats = penultimate_features(adapter, batch["pixel_values"], forget="Coat")   # (B, D)
    >>> feats, logits = penultimate_features(model, x, return_logits=True)
    ```
    """
    import torch

    plain, adapter = _unwrap(model)
    if forget is not None and adapter is None:
        raise ValueError("forget= needs an UnlearnAdapter (or its PeftModel); a plain model has nothing to select.")
    with torch.no_grad(), _capture_classifier_input(classifier_module(plain)) as store:
        if adapter is not None:
            logits = adapter.model(pixel_values=pixel_values, forget=forget).logits
        else:
            logits = plain(pixel_values=pixel_values).logits
    if len(store) != 1:
        raise RuntimeError(f"The classifier layer ran {len(store)} times in one forward; cannot tell the features apart.")
    return (store[0], logits) if return_logits else store[0]


def random_reference_model(config, seed: int = 0, *, model_class=None):
    """A randomly initialised copy of the architecture (the ZRF reference), reproducible from ``seed``.

    ``AutoModelForImageClassification.from_config(config)`` under ``torch.manual_seed(seed)``; the
    global RNG state is left as it was. Same config + same seed = identical weights, on any rank.
    """
    import copy

    import torch
    from transformers import AutoModelForImageClassification

    config = copy.deepcopy(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model_class is not None:
            model = model_class(config)
        else:
            try:
                model = AutoModelForImageClassification.from_config(config)
            except ValueError as err:
                raise ValueError(
                    f"Cannot build a random {type(config).__name__} with AutoModelForImageClassification ({err}); "
                    "pass model_class= for a custom architecture."
                ) from None
    return model.eval()


def filter_sparsity(adapter, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Share of each row's filter values below ``threshold`` ("switched off"), per filtered layer.

    Returns ``{layer_name: (num_classes,) array in [0, 1]}``, ready for
    :func:`~hf_unlearn.evaluation.plots.plot_filter_sparsity`.
    """
    import torch

    _, adapter = _unwrap(adapter)
    if adapter is None:
        raise TypeError("filter_sparsity needs an UnlearnAdapter.")
    name = adapter.model.active_adapter
    out = {}
    with torch.no_grad():
        for layer_name, layer in adapter.filter_layers().items():
            if name in layer.weight_filter_theta:
                alpha = layer.filters(name).float().cpu()
                out[layer_name] = (alpha < threshold).float().mean(1).numpy()
    return out


# --------------------------------------------------------------------------------------------
# running models over a split
# --------------------------------------------------------------------------------------------

OWN_LABEL = "own-label"  # choice: every sample forgets its own class (exact FA for all rows in one pass)


class _Runner:
    """One model to run over the data: a plain model (1 output) or an adapter with several choices."""

    def __init__(self, name: str, model, device, *, adapter=None, choices: Sequence[Any] = (None,)):
        self.name = name
        self.model = model
        self.adapter = adapter
        self.choices = list(choices)
        self.device = device
        self.classifier = classifier_module(adapter if adapter is not None else model)

    def _selection(self, labels):
        import torch

        b = labels.shape[0]
        width = max([len(c) for c in self.choices if isinstance(c, (list, tuple))] + [1])
        blocks = []
        for choice in self.choices:
            block = torch.full((b, width), -1, dtype=torch.long)
            if choice == OWN_LABEL:
                block[:, 0] = labels.cpu()
            elif choice is not None:
                block[:, : len(choice)] = torch.as_tensor(list(choice), dtype=torch.long)
            blocks.append(block)
        return torch.cat(blocks)

    def __call__(self, pixels, labels):
        b = pixels.shape[0]
        with _capture_classifier_input(self.classifier) as store:
            if self.adapter is not None:
                r = len(self.choices)
                logits = self.adapter.model(pixel_values=pixels.repeat(r, 1, 1, 1),
                                            forget=self._selection(labels)).logits
            else:
                r = 1
                logits = self.model(pixel_values=pixels).logits
        feats = store[-1]
        return (logits.reshape(r, b, -1).transpose(0, 1).float().contiguous(),
                feats.reshape(r, b, -1).transpose(0, 1).float().contiguous())


def _run_pass(runners, loader, labels_expected, accelerator, *, keep_features, keep_probs, desc, progress):
    """Run every runner over ``loader``; return per runner preds/conf (all samples), features (rows
    ``keep_features``) and softmax probabilities (rows ``keep_probs``), plus the labels."""
    import torch
    from tqdm.auto import tqdm

    n = len(labels_expected)
    acc = {r.name: {"preds": [], "conf": [], "feats": [], "probs": []} for r in runners}
    seen_labels = []
    offset = 0
    device = runners[0].device
    show = progress and (accelerator is None or accelerator.is_main_process)
    for batch in tqdm(loader, desc=desc, disable=not show, leave=False, dynamic_ncols=True):
        pixels = batch["pixel_values"].to(device)
        labels = batch["labels"].to(device)
        payload = {"labels": labels}
        with torch.no_grad():
            for r in runners:
                payload[r.name + "/logits"], payload[r.name + "/feats"] = r(pixels, labels)
        if accelerator is not None:
            payload = accelerator.gather_for_metrics(payload)
        lab = payload["labels"].cpu()
        b = lab.shape[0]
        idx = np.arange(offset, offset + b)
        if offset + b > n:
            raise RuntimeError(f"The loader yielded more than the {n} samples of the split (sharded twice?).")
        fmask = torch.from_numpy(keep_features[idx]) if keep_features is not None else None
        pmask = torch.from_numpy(keep_probs[idx]) if keep_probs is not None else None
        for r in runners:
            logits = payload[r.name + "/logits"].cpu()  # (b, R, C)
            logp = torch.log_softmax(logits.double(), dim=-1)
            out = acc[r.name]
            out["preds"].append(logits.argmax(-1))
            out["conf"].append(logp.gather(-1, lab.view(b, 1, 1).expand(b, logits.shape[1], 1)).squeeze(-1).exp())
            if fmask is None or fmask.any():
                feats = payload[r.name + "/feats"].cpu()
                out["feats"].append(feats if fmask is None else feats[fmask])
            if pmask is not None and pmask.any():
                out["probs"].append(logp[pmask].exp())
        seen_labels.append(lab)
        offset += b
    labels = torch.cat(seen_labels).numpy() if seen_labels else np.zeros(0, dtype=np.int64)
    if offset != n or not np.array_equal(labels, labels_expected):
        raise RuntimeError(
            f"The evaluation pass saw {offset} samples, not the split's {n} in order: the loader must be "
            "unshuffled and sharded once (by accelerator.prepare)."
        )
    result = {}
    for r in runners:
        out = acc[r.name]
        result[r.name] = {
            "preds": torch.cat(out["preds"]).T.numpy(),  # (R, n)
            "conf": torch.cat(out["conf"]).T.numpy(),  # (R, n)
            "feats": torch.cat(out["feats"]).transpose(0, 1).numpy() if out["feats"] else None,  # (R, m, D)
            "probs": torch.cat(out["probs"]).transpose(0, 1).numpy() if out["probs"] else None,  # (R, m, C)
        }
    return result


class _PairRows:
    """Dataset of (test sample, row) pairs for the sampled retain estimate."""

    def __init__(self, dataset, samples: np.ndarray, rows: np.ndarray):
        self.dataset, self.samples, self.rows = dataset, samples, rows

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        out = self.__getitems__([index])
        return {k: v[0] for k, v in out.items()}

    def __getitems__(self, indices):
        import torch

        indices = [int(i) for i in indices]
        base = self.dataset.__getitems__([int(self.samples[i]) for i in indices])
        return {"pixel_values": base["pixel_values"], "labels": base["labels"],
                "rows": torch.as_tensor(self.rows[indices], dtype=torch.long),
                "pair": torch.as_tensor(indices, dtype=torch.long)}


def _collate_dict(items):
    import torch

    if isinstance(items, dict):
        return items
    return {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}


def _sampled_pair_preds(adapter, test_dataset, pairs, batch_size, accelerator, device, progress):
    import torch
    from tqdm.auto import tqdm

    loader = torch.utils.data.DataLoader(_PairRows(test_dataset, pairs.samples, pairs.rows),
                                         batch_size=batch_size, shuffle=False, collate_fn=_collate_dict)
    if accelerator is not None:
        loader = accelerator.prepare(loader)
    preds = np.full(len(pairs), -1, dtype=np.int64)
    show = progress and (accelerator is None or accelerator.is_main_process)
    for batch in tqdm(loader, desc="sampled retain pairs", disable=not show, leave=False):
        with torch.no_grad():
            logits = adapter.model(pixel_values=batch["pixel_values"].to(device), forget=batch["rows"].to(device)).logits
        pred, pair = logits.argmax(-1), batch["pair"].to(device)
        if accelerator is not None:
            pred, pair = accelerator.gather_for_metrics((pred, pair))
        preds[pair.cpu().numpy()] = pred.cpu().numpy()
    if (preds < 0).any():
        raise RuntimeError("Some sampled pairs were not evaluated (sharded twice?).")
    return preds


# --------------------------------------------------------------------------------------------
# inputs: target, data, retrain references
# --------------------------------------------------------------------------------------------


def _load_target(target, image_processor):
    """(plain model, adapter or None, image processor, description) for any accepted target."""
    from peft import PeftModel
    from peft.utils import CONFIG_NAME

    from ..adapter import UnlearnAdapter

    if isinstance(target, (str, os.PathLike)):
        path = Path(target)
        if (path / CONFIG_NAME).is_file():
            target = UnlearnAdapter.from_pretrained(path)
        else:
            target = _load_plain(path)
            if image_processor is None:
                image_processor = _load_processor(path)
    if isinstance(target, PeftModel):
        target = UnlearnAdapter(target, image_processor)
    if isinstance(target, UnlearnAdapter):
        processor = image_processor if image_processor is not None else target.image_processor
        name = getattr(target.config, "base_model_name_or_path", None) or type(target.base_model).__name__
        return target.base_model, target, processor, f"UnlearnAdapter on {name}"
    if not hasattr(target, "config") or not hasattr(target, "forward"):
        raise TypeError(
            f"target must be an UnlearnAdapter, a transformers image classifier or a folder of one, got {type(target).__name__}."
        )
    name = getattr(target, "name_or_path", None) or type(target).__name__
    return target, None, image_processor, str(name)


def _load_plain(path):
    from transformers import AutoModelForImageClassification

    try:
        return AutoModelForImageClassification.from_pretrained(str(path), use_safetensors=True).eval()
    except OSError as err:
        raise OSError(f"Could not load an image classifier from {path}: {err}") from err


def _load_processor(path):
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(str(path))
    except (OSError, ValueError):
        return None


def _class_ids(refs, num_classes: int, label2id: Mapping[str, int]) -> list[int]:
    from ..tuners.weight_filter.selection import resolve_class

    if isinstance(refs, (int, str, np.integer)) and not isinstance(refs, bool):
        refs = [refs]
    try:
        ids = sorted({resolve_class(int(r) if isinstance(r, np.integer) else r, num_classes, label2id) for r in refs})
    except TypeError as err:
        raise ValueError(f"Cannot read the classes {refs!r}: {err}") from None
    if not ids:
        raise ValueError("The set of classes to forget is empty.")
    return ids


def _labels_of(data, role: str) -> np.ndarray:
    from ..data.loading import ImageClassificationData

    if not isinstance(data, ImageClassificationData):
        raise TypeError(f"data_{role} must be an ImageClassificationData (hf_unlearn.data.loading.load_image_dataset), "
                        f"got {type(data).__name__}.")
    if data.streaming:
        raise ValueError(f"The {role} split {data.split!r} of {data.source!r} is streamed: evaluation needs a "
                         "map-style split (streaming=False; subsample it with hf_unlearn.data.loaders.subsample).")
    if len(data.dataset) == 0:
        raise ValueError(f"The {role} split {data.split!r} of {data.source!r} is empty: nothing to evaluate.")
    return np.asarray(data.dataset[data.label_column], dtype=np.int64)


def _require_classes(labels: np.ndarray, classes: Sequence[int], role: str, data, names) -> None:
    counts = np.bincount(labels, minlength=max(classes) + 1)
    missing = [c for c in classes if counts[c] == 0]
    if missing:
        shown = ", ".join(f"{c} ({names.get(c, c)!r})" for c in missing)
        raise ValueError(
            f"The {role} split {data.split!r} of {data.source!r} has no samples of the forget class(es) {shown}: "
            f"{'forget accuracy' if role == 'test' else 'MIA-efficacy and ZRF'} would be undefined. Evaluate on a "
            "split that contains them (check subsampling and class filters)."
        )


def _retrain_key(key, num_classes, label2id) -> tuple[int, ...]:
    if isinstance(key, (tuple, list, frozenset, set)):
        return tuple(_class_ids(list(key), num_classes, label2id))
    return tuple(_class_ids(key, num_classes, label2id))


def _load_retrains(retrain_dirs, num_classes, label2id, wanted: set) -> dict:
    out = {}
    for key, value in (retrain_dirs or {}).items():
        classes = _retrain_key(key, num_classes, label2id)
        if classes not in wanted:
            continue
        model = _load_plain(value) if isinstance(value, (str, os.PathLike)) else value
        n = getattr(model.config, "num_labels", None)
        if n != num_classes:
            raise ValueError(
                f"The retrain reference for {list(classes)} ({value}) has {n} outputs but the evaluated model has "
                f"{num_classes}: a retrain must keep all N outputs (the forgotten ones just never trained)."
            )
        out[classes] = (model.eval(), str(value) if isinstance(value, (str, os.PathLike)) else type(model).__name__)
    return out


def _probe_subset(labels: np.ndarray, limit: Optional[int], units, rng) -> np.ndarray:
    """Boolean mask of the samples used by the linear probe (all, or a seeded subset with positives)."""
    n = len(labels)
    mask = np.zeros(n, dtype=bool)
    if limit is None or limit >= n:
        mask[:] = True
        return mask
    mask[rng.choice(n, size=int(limit), replace=False)] = True
    for classes in units:
        inside = np.isin(labels, classes)
        if not (mask & inside).any():
            mask[np.flatnonzero(inside)[:50]] = True
    return mask


# --------------------------------------------------------------------------------------------
# the suite
# --------------------------------------------------------------------------------------------


def _optional(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def _pixels(dataset, indices: np.ndarray):
    """(pixel_values, labels) tensors of ``indices`` of a processed split (build_dataloader's dataset)."""
    import torch

    items = dataset.__getitems__([int(i) for i in indices])
    return items["pixel_values"], torch.as_tensor(items["labels"]).long()


def _relearn_rows(units, plain, adapter, base, retrains, train_dataset, test_dataset, y_train, y_test, *, shots,
                  steps, modes, max_test, seed, device, arrange, progress):
    """k-shot relearning per unit for the unlearned model (an adapter row exported), the base and the retrain.

    Returns ``{"<mode>-<k>shot": {model: per-class list or value}}`` (``arrange`` of the suite).
    """
    from tqdm.auto import tqdm

    from .relearn import kshot_relearn, relearn_indices

    rng = np.random.default_rng(seed)
    pools = {k: relearn_indices(y_train, k, seed) for k in shots}
    union_pool = np.unique(np.concatenate(list(pools.values())))
    x_pool, y_pool = _pixels(train_dataset, union_pool)
    table: dict[str, dict] = {}
    for unit in tqdm(units, desc="k-shot relearning", disable=not progress, leave=False):
        forget_idx = np.flatnonzero(np.isin(y_test, unit))
        others = np.flatnonzero(~np.isin(y_test, unit))
        if max_test is not None and len(others) > max_test:
            others = np.sort(rng.choice(others, size=int(max_test), replace=False))
        x_test, y_test_t = _pixels(test_dataset, np.concatenate([forget_idx, others]))
        models = {"unlearned": adapter.export(list(unit)).to(device) if adapter is not None else plain}
        if base is not None:
            models["base"] = base
        if unit in retrains:
            models["retrain"] = retrains[unit][0]
        for k in shots:
            # the same k-shot set for every model: positions of pools[k] inside the union pool
            pos = np.searchsorted(union_pool, pools[k])
            for mode in modes:
                for name, model in models.items():
                    r = kshot_relearn(model, x_pool[pos], y_pool[pos], x_test, y_test_t, list(unit), shots=k,
                                      steps=steps, mode=mode, seed=seed)
                    table.setdefault(f"{mode}-{k}shot", {}).setdefault(name, {})[unit] = r["forget_acc"]
    return {setting: arrange(by_model) for setting, by_model in table.items()}


def evaluate_unlearning(
    target,
    data_train,
    data_test,
    *,
    forget: Any = None,
    rows: Optional[Sequence[Any]] = None,
    retrain_dirs: Optional[Mapping[Any, Any]] = None,
    accelerator=None,
    seed: int = 0,
    max_mia_samples: Optional[int] = None,
    progress: bool = True,
    base_model=None,
    image_processor=None,
    batch_size: int = 128,
    max_probe_samples: Optional[int] = 10_000,
    exact_limit: int = EXACT_MATRIX_LIMIT,
    samples_per_row: int = 50,
    max_detail_rows: int = 10,
    few_shot_shots: int = 5,
    few_shot_draws: int = 10,
    relearn_shots: Sequence[int] = (),
    relearn_steps: int = 30,
    relearn_modes: Sequence[str] = ("head", "full"),
    relearn_max_test: Optional[int] = 2000,
    require_retrain: bool = False,
) -> dict:
    """Every unlearning metric for ``target`` (and the base and retrain references) on two splits.

    Args:
        target: an ``UnlearnAdapter`` (all rows, the ``rows`` chosen, or the ``forget`` set), a
            plain transformers classifier (an exported model, a baseline, a retrain), or a folder.
        data_train, data_test: map-style ``ImageClassificationData`` splits with the model's classes
            (the training split feeds MIA members/forget samples, ZRF and the probe's training).
        forget: the forgotten class or set (ids or names). For an adapter: evaluate that one set
            instead of every row. For a plain model: the class(es) it forgot (default: its
            ``config.unlearned_class_ids``, as written by ``UnlearnAdapter.export``).
        rows: adapter only, the rows (classes) to evaluate; default all.
        retrain_dirs: ``{class_id_or_name: folder_or_model}`` of models retrained without that class
            (a tuple of classes as key for a set); every metric is computed for them too.
        accelerator: an ``accelerate.Accelerator``; with several processes the splits are sharded
            and gathered with ``gather_for_metrics`` (same numbers as one process).
        seed: seeds the MIA member draw, the probe subsets, the sampled pairs and the random ZRF
            reference.
        max_mia_samples: cap on MIA members and non-members each (departs from SalUn; reported).
        base_model: plain-model mode only: the original model, for base FA/RA/MIA/ZRF/probe.
        image_processor: default: the adapter's, or the one saved in a model folder.
        batch_size: samples per forward; an adapter runs ``batch_size x (rows + 1)`` at once.
        max_probe_samples: seeded subset size for the probe's train and test features (None: all).
        exact_limit: largest class count for the exact matrix (above: sampled RA, stderr).
        samples_per_row: retain samples per row for the sampled estimate.
        max_detail_rows: above ``exact_limit``, MIA/ZRF/probe run on this many seeded rows (plus
            every row with a retrain reference) unless ``rows`` are given.
        few_shot_shots, few_shot_draws: labelled samples per class and seeded repetitions of the
            few-shot probe (``hf_unlearn.evaluation.metrics.few_shot_probe_accuracy``); the shots
            come from the probe's training-split subset.
        relearn_shots: k-shot relearning budgets, labelled samples per class (e.g. ``(1, 5, 25)``);
            empty (default) skips relearning. ``relearn_steps`` optimiser steps, ``relearn_modes``
            ``"head"`` and/or ``"full"``; ``relearn_max_test`` caps the test samples of the OTHER
            classes used for the after-tuning retain accuracy (seeded; every forget sample is used).
        require_retrain: fail unless every evaluated row (or the set) has a retrain reference, so that
            every gap to the oracle is reported.

    Returns:
        A JSON-ready dict for :func:`~hf_unlearn.evaluation.report.write_report`: ``accuracy``
        (``summarize_matrix`` output with ``method`` and ``matrix``, a sampled estimate, or a set's
        FA/RA next to the base), ``retrain``, ``mia_efficacy``/``zrf``/``probe``/``probe_auc``/``few_shot_probe`` by model
        (``unlearned``, ``base``, ``retrain``; per-class lists in rows mode), ``filters_off_pct``,
        ``cka_to_retrain`` (by model, when retrain references are given), ``relearn`` (``{"head-5shot":
        {model: value}}`` with ``relearn_shots``), ``definitions``, ``settings``, and the run description.

    Raises:
        ValueError: the splits' classes do not match the model, a split is empty, a forget class has
            no samples in a split, or the image processor does not fit the model's channels.
    """
    from ..data.loaders import build_dataloader
    from ..data.loading import check_labels_match
    from ..data.transforms import check_processor_fits

    start = time.perf_counter()
    plain, adapter, processor, description = _load_target(target, image_processor)
    config = plain.config
    num_classes = int(config.num_labels)
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    label2id = {v: k for k, v in id2label.items()}
    names = {c: id2label.get(c, str(c)) for c in range(num_classes)}

    # ---- inputs, checked before any forward pass
    y_train = _labels_of(data_train, "train")
    y_test = _labels_of(data_test, "test")
    for data in (data_train, data_test):
        check_labels_match(data, config)
    if list(data_train.class_names) != list(data_test.class_names):
        raise ValueError(f"The train ({data_train.split!r}) and test ({data_test.split!r}) splits have different classes.")
    if processor is None:
        raise ValueError("No image processor: pass image_processor= (the one the model was trained with).")
    num_channels = int(getattr(config, "num_channels", 3))
    check_processor_fits(processor, num_channels)
    relearn_shots = [int(k) for k in (relearn_shots or ())]
    if relearn_shots:
        from .relearn import check_relearn_budget, relearn_indices

        check_relearn_budget(relearn_shots, relearn_steps, list(relearn_modes))
        for k in relearn_shots:  # every class needs k training samples: say so before any pass
            relearn_indices(y_train, k, seed)

    if adapter is not None:
        if forget is not None and rows is not None:
            raise ValueError("Pass rows= (each row forgets its class) or forget= (one class or set), not both.")
        if base_model is not None:
            raise ValueError("base_model= is for plain models; an adapter's base model is the adapter with no row selected.")
    else:
        if rows is not None:
            raise ValueError("rows= selects adapter rows; for a plain model name the forgotten class(es) with forget=.")
        if forget is None:
            forget = getattr(config, "unlearned_class_ids", None)
            if not forget:
                raise ValueError("For a plain model pass forget= naming the class(es) it forgot (ids or names).")

    mode = "rows" if adapter is not None and forget is None else "set"
    if mode == "rows":
        row_ids = list(range(num_classes)) if rows is None else _class_ids(list(rows), num_classes, label2id)
        exact = num_classes <= exact_limit
        if exact or rows is not None:
            detail = list(row_ids)
        else:
            rng_rows = np.random.default_rng(seed)
            detail = sorted(rng_rows.choice(row_ids, size=min(max_detail_rows, len(row_ids)), replace=False).tolist())
            wanted_retrain = {_retrain_key(k, num_classes, label2id) for k in (retrain_dirs or {})}
            detail = sorted(set(detail) | {k[0] for k in wanted_retrain if len(k) == 1 and k[0] in row_ids})
        units = [(c,) for c in detail]
        _require_classes(y_test, row_ids, "test", data_test, names)
    else:
        forget_ids = _class_ids(forget, num_classes, label2id)
        units = [tuple(forget_ids)]
        _require_classes(y_test, forget_ids, "test", data_test, names)
        if len(forget_ids) == num_classes:
            raise ValueError("Every class is in the forget set: nothing would be retained.")
    union = sorted({c for u in units for c in u})
    _require_classes(y_train, union, "train", data_train, names)

    if require_retrain:
        have = {_retrain_key(k, num_classes, label2id) for k in (retrain_dirs or {})}
        missing = [list(u) for u in units if u not in have]
        if missing:
            raise ValueError(
                f"No retrain reference for {missing} (require_retrain): train one with recipes/retrain.py "
                "--forget <class> into <root>/class-<c>/ and pass --retrain_root <root>, or evaluate fewer rows."
            )
    retrains = _load_retrains(retrain_dirs, num_classes, label2id, set(units))

    # ---- models to run
    device = accelerator.device if accelerator is not None else next(plain.parameters()).device
    was_training = plain.training
    plain.to(device).eval()
    runners = []
    if adapter is not None:
        if mode == "rows":
            # exact: every row on every sample; sampled: the detail rows, plus "own label" for exact FA
            choices = [None] + [[c] for c in (row_ids if exact else detail)] + ([] if exact else [OWN_LABEL])
        else:
            choices = [None, list(units[0])]
        runners.append(_Runner("target", plain, device, adapter=adapter, choices=choices))
        unit_source = {u: ("target", choices.index(list(u))) for u in units}
        base_source = ("target", 0)
    else:
        runners.append(_Runner("target", plain, device))
        unit_source = {units[0]: ("target", 0)}
        base_source = None
        if base_model is not None:
            if isinstance(base_model, (str, os.PathLike)):
                base_model = _load_plain(base_model)
            if int(base_model.config.num_labels) != num_classes:
                raise ValueError(f"base_model has {base_model.config.num_labels} outputs, the model {num_classes}.")
            runners.append(_Runner("base", base_model.to(device).eval(), device))
            base_source = ("base", 0)
    retrain_source = {}
    for i, (classes, (model, _)) in enumerate(sorted(retrains.items())):
        runners.append(_Runner(f"retrain{i}", model.to(device).eval(), device))
        retrain_source[classes] = (f"retrain{i}", 0)
    random_model = random_reference_model(config, seed).to(device)
    random_runner = _Runner("random", random_model, device)

    # ---- passes over the data
    main = accelerator is None or accelerator.is_main_process
    common = dict(image_processor=processor, num_channels=num_channels, batch_size=batch_size, shuffle=False,
                  seed=seed, progress=progress and main)
    if accelerator is not None:
        with accelerator.main_process_first():
            test_loader = build_dataloader(data_test, **common)
            train_loader = build_dataloader(data_train, **common)
    else:
        test_loader = build_dataloader(data_test, **common)
        train_loader = build_dataloader(data_train, **common)
    test_dataset = test_loader.dataset
    train_dataset = train_loader.dataset
    if accelerator is not None:
        test_loader, train_loader = accelerator.prepare(test_loader, train_loader)

    rng = np.random.default_rng(seed)
    probe_train = _probe_subset(y_train, max_probe_samples, units, rng)
    probe_test = _probe_subset(y_test, max_probe_samples, units, rng)
    zrf_mask = np.isin(y_train, union)

    test_out = _run_pass(runners, test_loader, y_test, accelerator, keep_features=probe_test, keep_probs=None,
                         desc="test split", progress=progress)
    train_out = _run_pass(runners + [random_runner], train_loader, y_train, accelerator,
                          keep_features=probe_train, keep_probs=zrf_mask, desc="train split", progress=progress)

    # ---- accuracy
    from .metrics import (accuracy_matrix, class_counts, few_shot_probe_accuracy, linear_cka, linear_probe_accuracy,
                          mia_efficacy, per_class_accuracy,
                          sample_retain_pairs, sampled_retain_estimate, set_accuracy, summarize_matrix, zrf_score)

    def preds_of(source):
        return test_out[source[0]]["preds"][source[1]]

    report: dict[str, Any] = {
        "title": f"Unlearning report: {description}",
        "model": description,
        "dataset": data_test.source,
        "split": data_test.split,
        "seed": seed,
        "num_classes": num_classes,
        "class_names": [names[c] for c in range(num_classes)],
    }
    counts = class_counts(y_test, num_classes)
    base_preds = preds_of(base_source) if base_source is not None else None
    retrain_acc: dict[str, Any] = {}
    if mode == "rows":
        report["forget_classes"] = "row c forgets class c" + ("" if rows is None else f" (rows {row_ids})")
        base_pc = per_class_accuracy(base_preds, y_test, num_classes)
        if exact:
            idx = {c: runners[0].choices.index([c]) for c in row_ids}
            A = accuracy_matrix({c: test_out["target"]["preds"][i] for c, i in idx.items()}, y_test, num_classes)
            accuracy = summarize_matrix(A, base_pc, counts)
            accuracy["method"] = "exact"
            accuracy["matrix"] = A
        else:
            own = test_out["target"]["preds"][runners[0].choices.index(OWN_LABEL)]
            fa = per_class_accuracy(own, y_test, num_classes)
            pairs = sample_retain_pairs(y_test, num_classes, samples_per_row, rows=row_ids, seed=seed)
            pair_preds = _sampled_pair_preds(adapter, test_dataset, pairs, batch_size, accelerator, device, progress)
            accuracy = sampled_retain_estimate(pair_preds, y_test, pairs, base_per_class_acc=base_pc)
            in_rows = np.zeros(num_classes, dtype=bool)
            in_rows[row_ids] = True
            accuracy["forget_acc_per_class"] = np.where(in_rows, fa, np.nan)
            accuracy["mean_forget_acc"] = float(np.mean(fa[row_ids]))
            accuracy["base_forget_acc_per_class"] = base_pc
            accuracy["note"] = (f"{num_classes} classes > {exact_limit}: FA exact for every row (one pass, each "
                                "sample with its own class's row); RA sampled, with standard error.")
        report["accuracy"] = accuracy
        report["base_accuracy"] = float(100.0 * np.mean(base_preds == y_test))
        if retrains:
            fa_r = [None] * num_classes
            ra_r = [None] * num_classes
            for classes, source in retrain_source.items():
                s = set_accuracy(preds_of(source), y_test, classes)
                fa_r[classes[0]], ra_r[classes[0]] = s["forget_acc"], s["retain_acc"]
            retrain_acc = {"forget_acc_per_class": fa_r, "retain_acc_per_class": ra_r,
                           "classes": sorted(c[0] for c in retrains)}
    else:
        S = units[0]
        report["forget_classes"] = [names[c] for c in S]
        accuracy = set_accuracy(preds_of(unit_source[S]), y_test, S)
        accuracy["classes"] = list(S)
        if base_preds is not None:
            b = set_accuracy(base_preds, y_test, S)
            accuracy.update(base_forget_acc=b["forget_acc"], base_retain_acc=b["retain_acc"],
                            retain_drop=b["retain_acc"] - accuracy["retain_acc"])
        report["accuracy"] = accuracy
        if S in retrain_source:
            retrain_acc = set_accuracy(preds_of(retrain_source[S]), y_test, S)
    if retrain_acc:
        report["retrain"] = retrain_acc
        report["retrain_models"] = {"-".join(map(str, k)): v[1] for k, v in sorted(retrains.items())}

    # ---- MIA, ZRF, probe per unit and model
    from tqdm.auto import tqdm

    y_zrf = y_train[zrf_mask]
    y_probe_train, y_probe_test = y_train[probe_train], y_test[probe_test]
    random_probs = train_out["random"]["probs"][0]
    metric_rows: dict[str, dict] = {"mia": {}, "zrf": {}, "probe": {}, "auc": {}, "few_shot": {}, "cka": {}}
    for unit in tqdm(units, desc="MIA / ZRF / probe", disable=not (progress and main), leave=False):
        sources = {"unlearned": unit_source[unit]}
        if base_source is not None:
            sources["base"] = base_source
        if unit in retrain_source:
            sources["retrain"] = retrain_source[unit]
        forget_train = np.isin(y_train, unit)
        retain_test = ~np.isin(y_test, unit)
        zmask = np.isin(y_zrf, unit)
        for model_name, (runner, i) in sources.items():
            conf_train = train_out[runner]["conf"][i]
            mia = mia_efficacy(conf_train[~forget_train], test_out[runner]["conf"][i][retain_test],
                               conf_train[forget_train], seed=seed, max_samples=max_mia_samples)
            zrf = zrf_score(train_out[runner]["probs"][i][zmask], random_probs[zmask])
            probe = linear_probe_accuracy(train_out[runner]["feats"][i], np.isin(y_probe_train, unit),
                                          test_out[runner]["feats"][i], np.isin(y_probe_test, unit), seed=seed)
            few = few_shot_probe_accuracy(train_out[runner]["feats"][i], y_probe_train, test_out[runner]["feats"][i],
                                          y_probe_test, list(unit), shots=few_shot_shots, draws=few_shot_draws,
                                          seed=seed)
            for key, value in (("mia", mia), ("zrf", zrf), ("probe", probe["balanced_accuracy"]),
                               ("auc", probe["auc"]), ("few_shot", few["accuracy"])):
                metric_rows[key].setdefault(model_name, {})[unit] = value
        if "retrain" in sources:
            # CKA on the forget class's test features: same samples, model vs the oracle
            rows_test = np.isin(y_probe_test, unit)
            runner_r, i_r = sources["retrain"]
            oracle = test_out[runner_r]["feats"][i_r][rows_test]
            for model_name in ("unlearned", "base"):
                if model_name in sources:
                    runner, i = sources[model_name]
                    metric_rows["cka"].setdefault(model_name, {})[unit] = linear_cka(
                        test_out[runner]["feats"][i][rows_test], oracle)

    def arrange(table):
        if mode == "set":
            return {model: values[units[0]] for model, values in table.items()}
        out = {}
        for model, values in table.items():
            row = [None] * num_classes
            for unit, v in values.items():
                row[unit[0]] = _optional(float(v))
            out[model] = row
        return out

    report["mia_efficacy"] = arrange(metric_rows["mia"])
    report["zrf"] = arrange(metric_rows["zrf"])
    report["probe"] = arrange(metric_rows["probe"])
    report["probe_auc"] = arrange(metric_rows["auc"])
    report["few_shot_probe"] = arrange(metric_rows["few_shot"])
    if metric_rows["cka"]:
        report["cka_to_retrain"] = arrange(metric_rows["cka"])
    if relearn_shots:
        report["relearn"] = _relearn_rows(
            units, plain, adapter, base_model if adapter is None else plain, retrains, train_dataset, test_dataset,
            y_train, y_test, shots=relearn_shots, steps=relearn_steps, modes=list(relearn_modes),
            max_test=relearn_max_test, seed=seed, device=device, arrange=arrange,
            progress=progress and main)
    if adapter is not None and mode == "rows":
        share = filter_sparsity(adapter)
        layers = adapter.filter_layers()
        sizes = {k: layers[k].out_features for k in share}
        total = sum(sizes.values())
        report["filters_off_pct"] = [
            float(100.0 * sum(share[k][c] * sizes[k] for k in share) / total) if total else None
            for c in range(num_classes)
        ]
    report["definitions"] = {k: v.format(shots=few_shot_shots, draws=few_shot_draws, relearn_steps=relearn_steps)
                             for k, v in DEFINITIONS.items()}
    report["settings"] = {
        "mode": mode,
        "target": "adapter" if adapter is not None else "model",
        "accuracy_method": report["accuracy"].get("method", "exact") if mode == "rows" else "exact",
        "rows": row_ids if mode == "rows" else None,
        "detail_rows": [u[0] for u in units] if mode == "rows" else None,
        "train_split": data_train.split,
        "n_train": int(len(y_train)),
        "n_test": int(len(y_test)),
        "n_probe_train": int(probe_train.sum()),
        "n_probe_test": int(probe_test.sum()),
        "few_shot_shots": int(few_shot_shots),
        "few_shot_draws": int(few_shot_draws),
        "relearn_shots": relearn_shots,
        "relearn_steps": int(relearn_steps) if relearn_shots else None,
        "relearn_modes": list(relearn_modes) if relearn_shots else None,
        "max_mia_samples": max_mia_samples,
        "batch_size": batch_size,
        "num_processes": accelerator.num_processes if accelerator is not None else 1,
        "eval_time_s": round(time.perf_counter() - start, 3),
    }
    plain.train(was_training)
    return report


# --------------------------------------------------------------------------------------------
# the job behind recipes/evaluate.py (and `hf-unlearn evaluate`)
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False,
        description="Evaluate unlearning: FA/RA (accuracy matrix), MIA-efficacy, ZRF and a linear probe, next to "
                    "the base model and retrain-from-scratch references; writes report.json/.md and PNG plots.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--adapter", default=None, help="adapter folder or Hub repo id (every row, or --rows / --forget)")
    what.add_argument("--model", default=None, help="folder of a plain classifier (exported, baseline or retrain)")
    parser.add_argument("--base_model", default=None,
                        help="with --adapter: base model overriding the one the adapter names; with --model: the "
                             "original model, for base numbers")
    parser.add_argument("--forget", nargs="+", default=None,
                        help="class ids or names: the forgotten set (with --model: default its config's unlearned_class_ids)")
    parser.add_argument("--rows", nargs="+", default=None, help="adapter rows to evaluate (default: all)")
    parser.add_argument("--retrain_root", default=None,
                        help="folder with class-<c>/ (and classes-<a>-<b>/) retrain references (recipes/retrain.py)")
    parser.add_argument("--output_dir", required=True, help="where report.json, report.md and the PNGs go")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="fashion_mnist")
    data.add_argument("--dataset_revision", default=None)
    data.add_argument("--train_split", default="train")
    data.add_argument("--test_split", default="test")
    data.add_argument("--image_column", default=None)
    data.add_argument("--label_column", default=None)
    data.add_argument("--max_train_samples", type=int, default=None, help="seeded subset of the train split (quick runs)")
    data.add_argument("--max_test_samples", type=int, default=None, help="seeded subset of the test split (quick runs)")
    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--batch_size", type=int, default=128, help="samples per forward (x rows+1 for an adapter)")
    ev.add_argument("--max_mia_samples", type=int, default=None, help="cap MIA members/non-members (departs from SalUn)")
    ev.add_argument("--max_probe_samples", type=int, default=10_000, help="probe subset per split (0 = all)")
    ev.add_argument("--few_shot_shots", type=int, default=5, help="few-shot probe: labelled samples per class")
    ev.add_argument("--few_shot_draws", type=int, default=10, help="few-shot probe: seeded repetitions")
    ev.add_argument("--relearn_shots", type=int, nargs="*", default=[],
                    help="k-shot relearning budgets (samples per class), e.g. 1 5 25; none = skip")
    ev.add_argument("--relearn_steps", type=int, default=30, help="k-shot relearning: optimiser steps")
    ev.add_argument("--relearn_modes", nargs="+", default=["head", "full"], choices=["head", "full"],
                    help="k-shot relearning: fine-tune the head only and/or the full model")
    ev.add_argument("--require_retrain", action="store_true",
                    help="fail unless every evaluated row has a retrain reference under --retrain_root")
    ev.add_argument("--samples_per_row", type=int, default=50, help="sampled RA above 20 classes")
    ev.add_argument("--set_sizes", type=int, nargs="+", default=None,
                    help="adapter only: also evaluate random forget sets of these sizes (rows multiplied), e.g. 2 3 4 5")
    ev.add_argument("--sets_per_size", type=int, default=20, help="random sets per size for --set_sizes")
    ev.add_argument("--sets_only", action="store_true",
                    help="with --set_sizes: only the set-size evaluation (sets.json, sets.md), not the full report")
    ev.add_argument("--cpu", action="store_true", help="force CPU (gives gloo DDP on a CPU box)")
    ev.add_argument("--num_threads", type=int, default=None, help="torch.set_num_threads")
    ev.add_argument("--no_plots", action="store_true")
    ev.add_argument("--no_progress", action="store_true")
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))


def _refs(values):
    if values is None:
        return None
    return [int(v) if v.lstrip("-").isdigit() else v for v in values]


def _plots(report: dict, adapter, out: Path) -> list[str]:
    from .plots import plot_accuracy_matrix, plot_filter_sparsity, plot_forget_retain

    written = []
    names = report["class_names"]
    acc = report.get("accuracy") or {}
    if acc.get("matrix") is not None:
        written.append(plot_accuracy_matrix(acc["matrix"], names, out / "accuracy_matrix.png"))
    if acc.get("forget_acc_per_class") is not None:
        series = {"unlearned": {"forget_acc": acc["forget_acc_per_class"],
                                "retain_acc": acc.get("retain_acc_per_class")}}
        if acc.get("base_forget_acc_per_class") is not None:
            series["base"] = {"forget_acc": acc["base_forget_acc_per_class"],
                              "retain_acc": acc.get("base_retain_acc_per_class")}
        retrain = report.get("retrain") or {}
        if retrain.get("forget_acc_per_class") is not None:
            series["retrain"] = {"forget_acc": [np.nan if v is None else v for v in retrain["forget_acc_per_class"]],
                                 "retain_acc": [np.nan if v is None else v for v in retrain["retain_acc_per_class"]]}
        for s in series.values():
            if s.get("retain_acc") is None:
                s.pop("retain_acc")
        written.append(plot_forget_retain(series, names, out / "forget_retain.png"))
    if adapter is not None:
        share = filter_sparsity(adapter)
        if share:
            written.append(plot_filter_sparsity(share, names, out / "filter_sparsity.png",
                                                title="Filters switched off (alpha < 0.5, %), per layer and row"))
    return [str(p) for p in written]


def run_evaluation(args: argparse.Namespace) -> dict:
    """Load, evaluate, and (main process) write the report and plots; returns the report."""
    import torch
    from accelerate import Accelerator

    from ..adapter import UnlearnAdapter
    from ..data.loaders import subsample
    from ..data.loading import load_image_dataset
    from ..training.retrain import retrain_dirs_from_root
    from .report import write_report

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    accelerator = Accelerator(cpu=args.cpu)
    progress = not args.no_progress and accelerator.is_main_process
    kwargs: dict[str, Any] = {}
    adapter = None
    if args.adapter:
        adapter = UnlearnAdapter.from_pretrained(args.adapter, base_model=args.base_model)
        target = adapter
    else:
        target = args.model
        if args.base_model:
            kwargs["base_model"] = args.base_model
        if not args.forget:
            retrain_json = Path(args.model) / "retrain.json"
            if retrain_json.is_file():  # a retrain folder knows what it was trained without
                import json

                kwargs["forget"] = json.loads(retrain_json.read_text())["class_ids"]
    if args.set_sizes:  # a set larger than the class count is a usage error before any pass over the data
        from .sets import random_sets

        if adapter is None:
            raise ValueError("--set_sizes needs --adapter: a plain model forgot one fixed set.")
        for size in args.set_sizes:
            random_sets(adapter.num_classes, size, args.sets_per_size, seed=args.seed)
    with accelerator.main_process_first():
        def load(split, limit):
            data = load_image_dataset(args.dataset, split=split, image_column=args.image_column,
                                      label_column=args.label_column, revision=args.dataset_revision)
            return subsample(data, limit, seed=args.seed)

        train = load(args.train_split, args.max_train_samples)
        test = load(args.test_split, args.max_test_samples)
    if args.sets_only:
        if not args.set_sizes:
            raise ValueError("--sets_only needs --set_sizes (e.g. --set_sizes 2 3 4 5).")
        result = _evaluate_set_sizes(args, adapter, test, accelerator, progress)
        accelerator.wait_for_everyone()
        return {"set_sizes": result}
    retrain_dirs = retrain_dirs_from_root(args.retrain_root) if args.retrain_root else None
    if args.forget:
        kwargs["forget"] = _refs(args.forget)
    report = evaluate_unlearning(
        target, train, test, rows=_refs(args.rows), retrain_dirs=retrain_dirs, accelerator=accelerator,
        seed=args.seed, max_mia_samples=args.max_mia_samples, progress=progress, batch_size=args.batch_size,
        max_probe_samples=args.max_probe_samples or None, samples_per_row=args.samples_per_row,
        few_shot_shots=args.few_shot_shots, few_shot_draws=args.few_shot_draws,
        relearn_shots=args.relearn_shots, relearn_steps=args.relearn_steps, relearn_modes=args.relearn_modes,
        require_retrain=args.require_retrain, **kwargs,
    )
    report["adapter"] = args.adapter
    report["settings"]["argv"] = getattr(args, "argv", None)
    if args.set_sizes:
        report["set_sizes"] = _evaluate_set_sizes(args, adapter, test, accelerator, progress)
    if accelerator.is_main_process:
        out = Path(args.output_dir)
        json_path, md_path = write_report(report, out)
        plots = [] if args.no_plots else _plots(report, adapter, out)
        accelerator.print(_summary_line(report) + f"\nwrote {json_path}, {md_path}" +
                          (f", {len(plots)} plots" if plots else ""))
    accelerator.wait_for_everyone()
    return report


def _evaluate_set_sizes(args, adapter, test, accelerator, progress) -> dict:
    """``--set_sizes``: random sets of each size on the test split (written to sets.md next to the report)."""
    from ..data.loaders import build_dataloader
    from .sets import evaluate_set_sizes, format_set_sizes

    if adapter is None:
        raise ValueError("--set_sizes needs --adapter: a plain model forgot one fixed set.")
    loader = build_dataloader(test, adapter.image_processor, num_channels=adapter.model.config.num_channels,
                              batch_size=args.batch_size, shuffle=False, seed=args.seed, progress=False)
    result = evaluate_set_sizes(adapter, accelerator.prepare(loader), args.set_sizes, args.sets_per_size,
                                seed=args.seed, accelerator=accelerator, progress=progress)
    if accelerator.is_main_process:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "sets.md").write_text("# Random forget sets (rows multiplied), test split\n\n"
                                     + format_set_sizes(result, adapter.id2label) + "\n")
        (out / "sets.json").write_text(json.dumps(result, indent=2, default=float))
        accelerator.print(format_set_sizes(result, adapter.id2label))
    return result


def _summary_line(report: dict) -> str:
    acc = report["accuracy"]
    parts = []
    if "mean_forget_acc" in acc:
        parts.append(f"mean FA {acc['mean_forget_acc']:.2f}%")
        if acc.get("mean_retain_acc") is not None:
            parts.append(f"mean RA {acc['mean_retain_acc']:.2f}% ({acc.get('method', 'exact')})")
        if acc.get("mean_retain_drop") is not None:
            parts.append(f"drop {acc['mean_retain_drop']:.2f} pt")
    else:
        parts.append(f"FA {acc['forget_acc']:.2f}%, RA {acc['retain_acc']:.2f}%")
    shots = report.get("settings", {}).get("few_shot_shots", 5)
    for key, label in (("mia_efficacy", "MIA"), ("zrf", "ZRF"), ("probe", "probe"),
                       ("few_shot_probe", f"{shots}-shot probe")):
        value = (report.get(key) or {}).get("unlearned")
        if isinstance(value, list):
            vals = [v for v in value if v is not None]
            value = sum(vals) / len(vals) if vals else None
        if value is not None:
            parts.append(f"{label} {value:.3g}")
    return "; ".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """``recipes/evaluate.py`` / ``hf-unlearn evaluate``: parse ``argv`` and run the evaluation."""
    from ..run_utils import end_distributed

    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    metrics = run_evaluation(args)
    end_distributed()
    return metrics
