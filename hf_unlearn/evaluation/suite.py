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

Every pass goes through the one prediction engine (``hf_unlearn.evaluation.predict``): under DDP
(``accelerator`` with several processes) every rank ends with every sample exactly once, in dataset
order, and computes the same numbers that one process would. The retrain references are loaded in
``references.py``; MIA/ZRF/probes/CKA/relearning per class are computed in ``representation.py``.

Example:

```py
>>> from hf_unlearn import UnlearnAdapter
>>> from hf_unlearn.data.loading import load_image_dataset
>>> from hf_unlearn.evaluation.report import write_report
>>> from hf_unlearn.evaluation.suite import evaluate_unlearning
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
(``hf-unlearn evaluate``: :mod:`hf_unlearn.commands.evaluate`, which calls
:func:`hf_unlearn.evaluation.job.run_evaluation`).
"""


from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.loaders import build_dataloader
from ..data.loading import ImageClassificationData, check_labels_match
from ..data.transforms import check_processor_fits
from ..data.tensors import collate_batches
from ..modeling import filter_sparsity, load_classifier, random_reference_model
from .definitions import format_definitions
from .metrics import accuracy_matrix, class_counts, per_class_accuracy, set_accuracy, summarize_matrix
from .predict import OWN_LABEL, PerSample, Predictor, run_predictors
from .references import (EvaluationPlan, check_choice, check_retrains_given, choose_units, load_plan, load_retrains,
                         require_classes)
from .relearn import check_relearn_budget, relearn_indices
from .sampled import sample_retain_pairs, sampled_retain_estimate
from .representation import SplitLabels, arrange, probe_subset, relearn_table, unit_metrics

__all__ = ["EXACT_MATRIX_LIMIT", "evaluate_unlearning"]

EXACT_MATRIX_LIMIT = 20


@dataclass
class _Sources:
    """Where each model's outputs are: ``(predictor name, choice index)`` per unit, for the base and retrains."""

    units: dict = field(default_factory=dict)
    base: Optional[tuple[str, int]] = None
    retrains: dict = field(default_factory=dict)

    def of(self, unit) -> dict[str, tuple[str, int]]:
        by_model = {"unlearned": self.units[unit]}
        if self.base is not None:
            by_model["base"] = self.base
        if unit in self.retrains:
            by_model["retrain"] = self.retrains[unit]
        return by_model


# --------------------------------------------------------------------------------------------
# inputs, checked before any forward pass
# --------------------------------------------------------------------------------------------


def _labels_of(data, role: str) -> np.ndarray:
    if not isinstance(data, ImageClassificationData):
        raise TypeError(f"data_{role} must be an ImageClassificationData (hf_unlearn.data.loading.load_image_dataset), "
                        f"got {type(data).__name__}.")
    if data.streaming:
        raise ValueError(f"The {role} split {data.split!r} of {data.source!r} is streamed: evaluation needs a "
                         "map-style split (streaming=False; subsample it with hf_unlearn.data.loaders.subsample).")
    if len(data.dataset) == 0:
        raise ValueError(f"The {role} split {data.split!r} of {data.source!r} is empty: nothing to evaluate.")
    return np.asarray(data.dataset[data.label_column], dtype=np.int64)


def _check_splits(plan: EvaluationPlan, data_train, data_test) -> tuple[np.ndarray, np.ndarray]:
    y_train = _labels_of(data_train, "train")
    y_test = _labels_of(data_test, "test")
    config = plan.plain.config
    for data in (data_train, data_test):
        check_labels_match(data, config)
    if list(data_train.class_names) != list(data_test.class_names):
        raise ValueError(f"The train ({data_train.split!r}) and test ({data_test.split!r}) splits have different classes.")
    if plan.processor is None:
        raise ValueError("No image processor: pass image_processor= (the one the model was trained with).")
    check_processor_fits(plan.processor, int(getattr(config, "num_channels", 3)))
    return y_train, y_test




# --------------------------------------------------------------------------------------------
# models to run and the passes over the data
# --------------------------------------------------------------------------------------------


def _predictors(plan: EvaluationPlan, retrains: dict, base_model, device) -> tuple[list[Predictor], _Sources, Any]:
    """The target (an adapter with its choices, or a plain model), the base, the retrains; returns the base model."""
    sources = _Sources()
    if plan.adapter is not None:
        if plan.mode == "rows":
            # exact: every row on every sample; sampled: the detail rows, plus "own label" for exact FA
            detail = plan.row_ids if plan.exact else [u[0] for u in plan.units]
            choices = [None] + [[c] for c in detail] + ([] if plan.exact else [OWN_LABEL])
        else:
            choices = [None, list(plan.units[0])]
        predictors = [Predictor("target", adapter=plan.adapter, choices=choices, features=True)]
        sources.units = {u: ("target", choices.index(list(u))) for u in plan.units}
        sources.base = ("target", 0)
    else:
        predictors = [Predictor("target", plan.plain, features=True)]
        sources.units = {plan.units[0]: ("target", 0)}
        if base_model is not None:
            if isinstance(base_model, (str, os.PathLike)):
                base_model = load_classifier(base_model)
            if int(base_model.config.num_labels) != plan.num_classes:
                raise ValueError(f"base_model has {base_model.config.num_labels} outputs, the model {plan.num_classes}.")
            predictors.append(Predictor("base", base_model.to(device).eval(), features=True))
            sources.base = ("base", 0)
    for i, (classes, (model, _)) in enumerate(sorted(retrains.items())):
        predictors.append(Predictor(f"retrain{i}", model.to(device).eval(), features=True))
        sources.retrains[classes] = (f"retrain{i}", 0)
    return predictors, sources, base_model


def _loaders(plan: EvaluationPlan, data_train, data_test, accelerator, *, batch_size: int, seed: int, progress: bool):
    """Unshuffled test and train loaders (sharded by ``accelerator.prepare`` under DDP)."""
    common = dict(image_processor=plan.processor, num_channels=int(getattr(plan.plain.config, "num_channels", 3)),
                  batch_size=batch_size, shuffle=False, seed=seed, progress=progress)
    if accelerator is None:
        return build_dataloader(data_test, **common), build_dataloader(data_train, **common)
    with accelerator.main_process_first():  # rank 0 fills the datasets cache, the others read it
        test_loader = build_dataloader(data_test, **common)
        train_loader = build_dataloader(data_train, **common)
    return accelerator.prepare(test_loader, train_loader)


# --------------------------------------------------------------------------------------------
# accuracy
# --------------------------------------------------------------------------------------------


class _PairRows:
    """Dataset of (test sample, row) pairs for the sampled retain estimate: sample i forgets ``rows[i]``."""

    def __init__(self, dataset, samples: np.ndarray, rows: np.ndarray):
        self.dataset, self.samples, self.rows = dataset, samples, rows

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices):
        indices = [int(i) for i in indices]
        base = self.dataset.__getitems__([int(self.samples[i]) for i in indices])
        return {"pixel_values": base["pixel_values"], "labels": base["labels"],
                "rows": torch.as_tensor(self.rows[indices], dtype=torch.long)}


def _sampled_accuracy(plan: EvaluationPlan, target: Predictor, test_out: dict, y_test, base_pc, test_dataset, accelerator,
                      *, samples_per_row: int, exact_limit: int, batch_size: int, seed: int, device, progress) -> dict:
    """Above ``exact_limit`` classes: FA exact for every row (own-label pass), RA from sampled (row, sample) pairs."""
    n = plan.num_classes
    fa = per_class_accuracy(test_out["target"]["preds"][target.choices.index(OWN_LABEL)], y_test, n)
    pairs = sample_retain_pairs(y_test, n, samples_per_row, rows=plan.row_ids, seed=seed)
    loader = DataLoader(_PairRows(test_dataset, pairs.samples, pairs.rows), batch_size=batch_size, shuffle=False,
                        collate_fn=collate_batches)
    if accelerator is not None:
        loader = accelerator.prepare(loader)
    pair_out = run_predictors([Predictor("pairs", adapter=plan.adapter, choices=[PerSample("rows")])], loader,
                              accelerator=accelerator, device=device, expected_labels=y_test[pairs.samples],
                              progress=progress, desc="sampled retain pairs")
    accuracy = sampled_retain_estimate(pair_out["pairs"]["preds"][0], y_test, pairs, base_per_class_acc=base_pc)
    in_rows = np.zeros(n, dtype=bool)
    in_rows[plan.row_ids] = True
    accuracy["forget_acc_per_class"] = np.where(in_rows, fa, np.nan)
    accuracy["mean_forget_acc"] = float(np.mean(fa[plan.row_ids]))
    accuracy["base_forget_acc_per_class"] = base_pc
    accuracy["note"] = (f"{n} classes > {exact_limit}: FA exact for every row (one pass, each "
                        "sample with its own class's row); RA sampled, with standard error.")
    return accuracy


def _rows_accuracy(report: dict, plan: EvaluationPlan, target: Predictor, test_out: dict, y_test, sources: _Sources,
                   retrains: dict, rows, sampled: dict) -> dict:
    """Rows mode: the accuracy matrix (or the sampled estimate) next to the base; the retrains' FA/RA per class."""
    n = plan.num_classes
    report["forget_classes"] = "row c forgets class c" + ("" if rows is None else f" (rows {plan.row_ids})")
    base_preds = test_out["target"]["preds"][0]
    base_pc = per_class_accuracy(base_preds, y_test, n)
    if plan.exact:
        preds = {c: test_out["target"]["preds"][target.choices.index([c])] for c in plan.row_ids}
        A = accuracy_matrix(preds, y_test, n)
        accuracy = summarize_matrix(A, base_pc, class_counts(y_test, n))
        accuracy["method"] = "exact"
        accuracy["matrix"] = A
    else:
        accuracy = _sampled_accuracy(plan, target, test_out, y_test, base_pc, **sampled)
    report["accuracy"] = accuracy
    report["base_accuracy"] = float(100.0 * np.mean(base_preds == y_test))
    if not retrains:
        return {}
    fa_r, ra_r = [None] * n, [None] * n
    for classes, (name, i) in sources.retrains.items():
        s = set_accuracy(test_out[name]["preds"][i], y_test, classes)
        fa_r[classes[0]], ra_r[classes[0]] = s["forget_acc"], s["retain_acc"]
    return {"forget_acc_per_class": fa_r, "retain_acc_per_class": ra_r, "classes": sorted(c[0] for c in retrains)}


def _set_accuracy(report: dict, plan: EvaluationPlan, test_out: dict, y_test, sources: _Sources) -> dict:
    """Set mode: FA/RA of the forgotten set next to the base (when there is one) and its retrain."""
    S = plan.units[0]
    report["forget_classes"] = [plan.names[c] for c in S]
    name, i = sources.units[S]
    accuracy = set_accuracy(test_out[name]["preds"][i], y_test, S)
    accuracy["classes"] = list(S)
    if sources.base is not None:
        b = set_accuracy(test_out[sources.base[0]]["preds"][sources.base[1]], y_test, S)
        accuracy.update(base_forget_acc=b["forget_acc"], base_retain_acc=b["retain_acc"],
                        retain_drop=b["retain_acc"] - accuracy["retain_acc"])
    report["accuracy"] = accuracy
    if S not in sources.retrains:
        return {}
    name, i = sources.retrains[S]
    return set_accuracy(test_out[name]["preds"][i], y_test, S)


def _filters_off_pct(adapter, num_classes: int) -> list:
    """Per row, the % of all filtered output channels switched off (alpha < 0.5), size-weighted over layers."""
    share = filter_sparsity(adapter)
    layers = adapter.filter_layers()
    sizes = {k: layers[k].out_features for k in share}
    total = sum(sizes.values())
    return [float(100.0 * sum(share[k][c] * sizes[k] for k in share) / total) if total else None
            for c in range(num_classes)]


def _add_measures(report: dict, plan: EvaluationPlan, sources: _Sources, retrains: dict, base_model, train_out: dict,
                  test_out: dict, labels: SplitLabels, datasets: tuple, *, device, seed: int, max_mia_samples,
                  few_shot_shots: int, few_shot_draws: int, relearn: dict, progress: bool) -> None:
    """MIA-efficacy, ZRF, probes, CKA (and k-shot relearning when ``relearn["shots"]``) into ``report``."""
    def arranged(table):
        return arrange(table, plan.mode, plan.units, plan.num_classes)

    tables = unit_metrics(plan.units, sources.of, train_out, test_out, labels, seed=seed,
                          max_mia_samples=max_mia_samples, few_shot_shots=few_shot_shots,
                          few_shot_draws=few_shot_draws, progress=progress)
    for key, table in (("mia_efficacy", "mia"), ("zrf", "zrf"), ("probe", "probe"), ("probe_auc", "auc"),
                       ("few_shot_probe", "few_shot")):
        report[key] = arranged(tables[table])
    if tables["cka"]:
        report["cka_to_retrain"] = arranged(tables["cka"])
    if not relearn["shots"]:
        return
    adapter = plan.adapter
    base = base_model if adapter is None else plan.plain

    def models_of(unit):  # an adapter's row is exported: relearning fine-tunes a plain copy
        models = {"unlearned": adapter.export(list(unit)).to(device) if adapter is not None else plan.plain}
        if base is not None:
            models["base"] = base
        if unit in retrains:
            models["retrain"] = retrains[unit][0]
        return models

    table = relearn_table(plan.units, models_of, *datasets, labels, seed=seed, progress=progress, **relearn)
    report["relearn"] = {setting: arranged(by_model) for setting, by_model in table.items()}


def _settings(plan: EvaluationPlan, report: dict, labels: SplitLabels, train_split: str) -> dict:
    """The run's mode, target, rows and sample counts (the first keys of ``report["settings"]``)."""
    rows_mode = plan.mode == "rows"
    return {
        "mode": plan.mode,
        "target": "adapter" if plan.adapter is not None else "model",
        "accuracy_method": report["accuracy"].get("method", "exact") if rows_mode else "exact",
        "rows": plan.row_ids if rows_mode else None,
        "detail_rows": [u[0] for u in plan.units] if rows_mode else None,
        "train_split": train_split,
        "n_train": int(len(labels.train)),
        "n_test": int(len(labels.test)),
        "n_probe_train": int(labels.probe_train.sum()),
        "n_probe_test": int(labels.probe_test.sum()),
    }


# --------------------------------------------------------------------------------------------
# the suite
# --------------------------------------------------------------------------------------------


def evaluate_unlearning(  # house: long because its 22 keyword options are the public API; the body is calls
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
    # Over 80 lines only through its signature and docstring (22 public options); the body is the
    # pipeline in order (checks, models, two passes, accuracy, measures, settings), each step a call.
    start = time.perf_counter()
    plan = load_plan(target, image_processor)
    y_train, y_test = _check_splits(plan, data_train, data_test)
    relearn_shots = [int(k) for k in (relearn_shots or ())]
    if relearn_shots:
        check_relearn_budget(relearn_shots, relearn_steps, list(relearn_modes))
        for k in relearn_shots:  # every class needs k training samples: say so before any pass
            relearn_indices(y_train, k, seed)
    forget = check_choice(plan, forget, rows, base_model)
    choose_units(plan, forget, rows, retrain_dirs, exact_limit=exact_limit, max_detail_rows=max_detail_rows,
                  seed=seed, y_test=y_test, data_test=data_test)
    union = sorted({c for u in plan.units for c in u})
    require_classes(y_train, union, "train", data_train, plan.names)
    if require_retrain:
        check_retrains_given(plan, retrain_dirs)
    retrains = load_retrains(retrain_dirs, plan.num_classes, plan.label2id, set(plan.units))

    device = accelerator.device if accelerator is not None else next(plan.plain.parameters()).device
    was_training = plan.plain.training
    plan.plain.to(device).eval()
    predictors, sources, base_model = _predictors(plan, retrains, base_model, device)
    random_model = random_reference_model(plan.plain.config, seed).to(device)
    main = accelerator is None or accelerator.is_main_process
    test_loader, train_loader = _loaders(plan, data_train, data_test, accelerator, batch_size=batch_size, seed=seed,
                                         progress=progress and main)
    rng = np.random.default_rng(seed)
    labels = SplitLabels(y_train, y_test, probe_train=probe_subset(y_train, max_probe_samples, plan.units, rng),
                         probe_test=probe_subset(y_test, max_probe_samples, plan.units, rng),
                         zrf=np.isin(y_train, union))
    passes = dict(accelerator=accelerator, device=device, confidences=True, progress=progress)
    test_out = run_predictors(predictors, test_loader, expected_labels=y_test, keep_features=labels.probe_test,
                              desc="test split", **passes)
    train_out = run_predictors(predictors + [Predictor("random", random_model)], train_loader, expected_labels=y_train,
                               keep_features=labels.probe_train, keep_probs=labels.zrf, desc="train split", **passes)

    report: dict[str, Any] = {
        "title": f"Unlearning report: {plan.description}",
        "model": plan.description,
        "dataset": data_test.source,
        "split": data_test.split,
        "seed": seed,
        "num_classes": plan.num_classes,
        "class_names": [plan.names[c] for c in range(plan.num_classes)],
    }
    if plan.mode == "rows":
        sampled = dict(test_dataset=test_loader.dataset, accelerator=accelerator, samples_per_row=samples_per_row,
                       exact_limit=exact_limit, batch_size=batch_size, seed=seed, device=device, progress=progress)
        retrain_acc = _rows_accuracy(report, plan, predictors[0], test_out, y_test, sources, retrains, rows, sampled)
    else:
        retrain_acc = _set_accuracy(report, plan, test_out, y_test, sources)
    if retrain_acc:
        report["retrain"] = retrain_acc
        report["retrain_models"] = {"-".join(map(str, k)): v[1] for k, v in sorted(retrains.items())}

    _add_measures(report, plan, sources, retrains, base_model, train_out, test_out, labels,
                  (train_loader.dataset, test_loader.dataset), device=device, seed=seed,
                  max_mia_samples=max_mia_samples, few_shot_shots=few_shot_shots, few_shot_draws=few_shot_draws,
                  relearn=dict(shots=relearn_shots, steps=relearn_steps, modes=list(relearn_modes),
                               max_test=relearn_max_test), progress=progress and main)
    if plan.adapter is not None and plan.mode == "rows":
        report["filters_off_pct"] = _filters_off_pct(plan.adapter, plan.num_classes)
    report["definitions"] = format_definitions(shots=few_shot_shots, draws=few_shot_draws,
                                               relearn_steps=relearn_steps, exact_limit=exact_limit)
    report["settings"] = {
        **_settings(plan, report, labels, data_train.split),
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
    plan.plain.train(was_training)
    return report
