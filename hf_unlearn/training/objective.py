"""The untraining objective: what one step of WF-Net's training round minimises.

For a batch of labelled samples ``(x, y)``:

- *forget pass*: each sample runs with a forget set that contains its own class ``y`` (``{y}``,
  or with probability ``set_prob`` a random set of up to ``max_set_size`` classes containing ``y``),
  and its cross-entropy is pushed **up** through the bounded term ``1 / (CE + eps)``;
- *retain pass*: each sample runs ``retain_rows`` (T) more times with random forget sets that do
  **not** contain ``y``; its cross-entropy is pushed **down**. With ``retain_neighbours=k`` a share
  ``neighbour_prob`` of these sets is drawn from the ``k`` classes nearest to ``y`` in the classifier
  (:func:`similar_classes`): the rows most likely to damage ``y`` get most of its retain signal;
- *regulariser*: ``mean(1 - alpha)`` over all filters keeps most of them at 1, so each row switches
  off only what its class needs.

``L = lambda_retain * CE_retain + lambda_forget * mean(1 / (CE_forget + eps)) + lambda_reg * mean(1 - alpha)``

With ``retain_loss="kd"`` the retain term is instead the KL divergence from the *base model's*
prediction with the set's logits masked out (the unfiltered network, one extra forward without
gradients) to the filtered prediction: the filtered network is asked to behave exactly like the
original one minus the forgotten classes, not only to keep the labels right.

With ``feature_loss="centroid"`` a feature-level forget term is added (the DUCK/SCAR idea): the
penultimate features of each forget pair (what the final classifier receives) are pulled, by cosine
distance, to the base model's feature centroid of the class the base finds most likely outside the
forget set, so the class leaves the representation and not only the output. The centroids are the
base's features of the batch averaged per label (the same extra no-grad forward as ``boundary``).
``feature_loss="prototype"`` asks for more than closeness: a cross-entropy over the cosine similarities
(divided by ``feature_temperature``) of each forget feature to every class centroid of the batch, with
that nearest other class as the label, so the feature must be nearer to it than to its own class's
centroid, which is what a nearest-class-mean probe tests.

With ``forget_loss="boundary"`` the forget term is instead the cross-entropy towards the class the
*base model* finds most likely outside the forget set (Boundary Shrink's target): a forgotten sample
must look like its nearest other class, not merely stop looking like its own.

All passes of a batch run as one forward with a per-sample selection (:func:`expand_batch`); the loop that
feeds this objective is :func:`hf_unlearn.training.untrain.untrain`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F

from ..modeling import capture_classifier_input, classifier_module
from ..tuners.weight_filter import WeightFilterLayer

if TYPE_CHECKING:  # annotations only: untrain.py imports this module
    from .untrain import UntrainingArguments


def sample_forget_sets(
    labels: torch.Tensor,
    num_classes: int,
    *,
    contain: bool,
    max_set_size: int,
    set_prob: float,
    generator: torch.Generator,
    neighbours: Optional[torch.Tensor] = None,
    neighbour_prob: float = 0.0,
) -> torch.Tensor:
    """Random forget sets, one per label: ``(B, max_set_size)`` class ids padded with -1.

    ``contain=True``: every set holds the sample's own class (a forget pair).
    ``contain=False``: no set holds it (a retain pair). Set sizes are 1, or with probability
    ``set_prob`` uniform in ``2..max_set_size``.
    ``neighbours`` (``(C, k)`` class ids, :func:`similar_classes`): with probability ``neighbour_prob`` a
    retain pair's set is drawn from its class's ``k`` neighbours first, so that the rows most likely
    to hurt a class are the ones that learn to keep it.
    """
    batch = labels.shape[0]
    width = max(1, min(max_set_size, num_classes - (0 if contain else 1)))
    sizes = torch.ones(batch, dtype=torch.long)
    if width > 1 and set_prob > 0:
        grow = torch.rand(batch, generator=generator) < set_prob
        sizes = torch.where(grow, torch.randint(2, width + 1, (batch,), generator=generator), sizes)
    # A random permutation of the other classes per sample; take the first entries.
    scores = torch.rand(batch, num_classes, generator=generator)
    if neighbours is not None and not contain and neighbour_prob > 0:
        near = torch.nonzero(torch.rand(batch, generator=generator) < neighbour_prob).squeeze(1)
        scores[near[:, None], neighbours[labels[near]]] -= 1.0  # the neighbours sort first
    scores[torch.arange(batch), labels] = 2.0  # the own class sorts last among "others"
    others = scores.argsort(dim=1)[:, : num_classes - 1]
    out = torch.full((batch, width), -1, dtype=torch.long)
    if contain:
        out[:, 0] = labels
        extra = others[:, : width - 1]
        keep = torch.arange(width - 1)[None, :] < (sizes[:, None] - 1)
        out[:, 1:] = torch.where(keep, extra, torch.full_like(extra, -1))
    else:
        extra = others[:, :width]
        keep = torch.arange(width)[None, :] < sizes[:, None]
        out[:] = torch.where(keep, extra, torch.full_like(extra, -1))
    return out


def similar_classes(weight: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` classes whose classifier rows are nearest (cosine) to each class's row: ``(C, k)`` ids.

    Classes the classifier separates with similar directions are the ones a filter that removes one
    of them is most likely to damage (on ``fashion_mnist_100``, the classes sharing an item).

    Example:
        >>> similar_classes(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), 1).tolist()
        [[1], [0], [1]]
    """
    w = F.normalize(weight.detach().float(), dim=1)
    sim = w @ w.T
    sim.fill_diagonal_(-float("inf"))
    return sim.topk(max(1, min(k, weight.shape[0] - 1)), dim=1).indices


def pad_selection(sel: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad ``(N, K)`` forget sets with -1 to ``width`` columns (unchanged when already that wide).

    Example:
        >>> pad_selection(torch.tensor([[3]]), 2).tolist()
        [[3, -1]]
    """
    if sel.shape[1] >= width:
        return sel
    pad = torch.full((sel.shape[0], width - sel.shape[1]), -1, dtype=sel.dtype)
    return torch.cat([sel, pad], dim=1)


def expand_batch(pixel_values, labels, num_classes, args: "UntrainingArguments", generator, neighbours=None):
    """Build the single forward of a step: B forget pairs followed by T*B retain pairs.

    ``neighbours``: :func:`similar_classes` of the base's classifier, used with ``args.retain_neighbours``.
    """
    forget = sample_forget_sets(
        labels, num_classes, contain=True, max_set_size=args.max_set_size, set_prob=args.set_prob, generator=generator
    )
    rep = labels.repeat(args.retain_rows)
    retain = sample_forget_sets(
        rep, num_classes, contain=False, max_set_size=args.max_set_size, set_prob=args.set_prob, generator=generator,
        neighbours=neighbours, neighbour_prob=args.neighbour_prob,
    )
    width = max(forget.shape[1], retain.shape[1])
    selection = torch.cat([pad_selection(forget, width), pad_selection(retain, width)])
    pixels = torch.cat([pixel_values] + [pixel_values] * args.retain_rows)
    return pixels, torch.cat([labels, rep]), selection


def masked_teacher_log_probs(teacher_logits, selection, temperature: float = 1.0):
    """Log-probabilities of the base model's logits with each row's forget set masked out.

    ``selection`` is ``(N, K)`` class ids padded with -1; the target a retain pair should match.
    """
    logits = teacher_logits.float() / temperature
    mask = torch.zeros_like(logits, dtype=torch.bool)
    selection = selection.to(logits.device)
    rows, cols = torch.nonzero(selection >= 0, as_tuple=True)
    mask[rows, selection[rows, cols]] = True
    return torch.log_softmax(logits.masked_fill(mask, float("-inf")), dim=-1)


def weighted_mean(values: torch.Tensor, weights: Optional[torch.Tensor]) -> torch.Tensor:
    """``sum(w * v) / sum(w)``, or the plain mean when ``weights`` is None (class-balanced forget term)."""
    if weights is None:
        return values.mean()
    weights = weights.to(values.device, values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1e-12)


def nearest_centroid_targets(base_features, labels, forget_targets):
    """Feature targets of the forget pairs: the base's batch centroid of each pair's target class.

    ``base_features`` ``(B, D)`` are the unfiltered network's penultimate features of the batch,
    ``labels`` their classes, ``forget_targets`` ``(B,)`` the class each forget pair should look like
    (the base's most likely class outside its forget set). Returns ``(targets (B, D), valid (B,))``;
    ``valid`` is False where the batch holds no sample of the target class (no centroid to pull to).

    Example:
        >>> t, ok = nearest_centroid_targets(torch.eye(3), torch.tensor([0, 1, 1]), torch.tensor([1, 0, 2]))
        >>> t[0].tolist(), ok.tolist()
        ([0.0, 0.5, 0.5], [True, True, False])
    """
    centroids, present = batch_centroids(base_features, labels, int(forget_targets.max()) + 1)
    return centroids[forget_targets], present[forget_targets]


def batch_centroids(base_features, labels, min_classes: int = 0):
    """Per-class mean of the base's features over the batch: ``(centroids (K, D), present (K,))``.

    ``K = max(labels.max() + 1, min_classes)``; a class with no sample in the batch has a zero row
    and ``present`` False.
    """
    feats = base_features.detach().float()
    num = max(int(labels.max()) + 1, int(min_classes))
    sums = feats.new_zeros(num, feats.shape[1]).index_add_(0, labels, feats)
    counts = torch.bincount(labels, minlength=num).to(feats.dtype)
    return sums / counts.clamp(min=1)[:, None], counts > 0


def prototype_forget_loss(features, centroids, present, forget_targets, temperature: float):
    """Cross-entropy of cosine-similarity logits to the batch's class centroids, target = the nearest other class.

    Pairs whose target class has no centroid in the batch are skipped (0 when none is left).

    Example:
        >>> c = torch.eye(2)
        >>> prototype_forget_loss(torch.tensor([[0.0, 1.0]]), c, torch.tensor([True, True]), torch.tensor([1]), 0.1) < 1e-3
        tensor(True)
    """
    valid = present[forget_targets]
    if not bool(valid.any()):
        return features.new_zeros(()).float()
    sims = F.normalize(features[valid].float(), dim=-1) @ F.normalize(centroids.float(), dim=-1).T
    logits = (sims / temperature).masked_fill(~present[None, :], float("-inf"))
    return F.cross_entropy(logits, forget_targets[valid])


def feature_forget_loss(features, target_features, valid):
    """Mean cosine distance ``1 - cos(f_i, t_i)`` over the valid forget pairs (0 when none is valid)."""
    if not bool(valid.any()):
        return features.new_zeros(()).float()
    cos = F.cosine_similarity(features[valid].float(), target_features[valid].float(), dim=-1)
    return (1.0 - cos).mean()


def untraining_loss(logits, targets, batch, filter_values, args: "UntrainingArguments", teacher_log_probs=None,
                    forget_targets=None, forget_features=None, feature_targets=None, feature_valid=None,
                    feature_centroids=None, feature_present=None, forget_weights=None):
    """The untraining objective on the expanded batch; returns ``(loss, parts)``.

    ``teacher_log_probs`` (retain rows only, from :func:`masked_teacher_log_probs`) is needed with
    ``args.retain_loss == "kd"``; ``forget_targets`` (forget rows only: the base's most likely class
    outside each row's set) with ``args.forget_loss == "boundary"``; ``forget_features`` (the filtered
    network's penultimate features of the forget rows) with ``feature_targets``/``feature_valid``
    (from :func:`nearest_centroid_targets`) with ``args.feature_loss == "centroid"``; with
    ``"prototype"``, ``feature_targets`` are the target CLASS ids and ``feature_centroids``/``feature_present``
    come from :func:`batch_centroids`; ``forget_weights`` (forget rows
    only, optional) weights the forget term per sample (class balancing).
    """
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    forget_ce, retain_ce = ce[:batch], ce[batch:]
    if args.forget_loss == "boundary":
        if forget_targets is None:
            raise ValueError("forget_loss='boundary' needs the base model's nearest other class (forget_targets).")
        forget_term = weighted_mean(F.cross_entropy(logits[:batch].float(), forget_targets, reduction="none"),
                                    forget_weights)
    else:
        forget_term = weighted_mean(1.0 / (forget_ce + args.inverse_ce_eps), forget_weights)
    if args.retain_loss == "kd":
        if teacher_log_probs is None:
            raise ValueError("retain_loss='kd' needs the base model's log-probabilities (teacher_log_probs).")
        t = args.kd_temperature
        student = torch.log_softmax(logits[batch:].float() / t, dim=-1)
        p = teacher_log_probs.exp()
        # KL(teacher || student); masked classes have p = 0 and contribute nothing
        kl = torch.where(p > 0, p * (teacher_log_probs - student), torch.zeros_like(p)).sum(-1)
        retain_term = kl.mean() * (t * t)
    else:
        retain_term = retain_ce.mean()
    reg = torch.stack([(1 - v).mean() for v in filter_values]).mean() if args.lambda_reg else logits.new_zeros(())
    loss = args.lambda_retain * retain_term + args.lambda_forget * forget_term + args.lambda_reg * reg
    parts = {"retain_ce": retain_term.detach(), "forget_ce": forget_ce.mean().detach(), "reg": reg.detach()}
    if args.feature_loss == "centroid":
        if forget_features is None or feature_targets is None or feature_valid is None:
            raise ValueError("feature_loss='centroid' needs the forget rows' features and their centroid targets.")
        feature_term = feature_forget_loss(forget_features, feature_targets, feature_valid)
        loss = loss + args.lambda_feature * feature_term
        parts["feature"] = feature_term.detach()
    elif args.feature_loss == "prototype":
        if forget_features is None or feature_targets is None or feature_centroids is None or feature_present is None:
            raise ValueError("feature_loss='prototype' needs the forget rows' features, their target classes and the "
                             "batch centroids.")
        feature_term = prototype_forget_loss(forget_features, feature_centroids, feature_present, feature_targets,
                                             args.feature_temperature)
        loss = loss + args.lambda_feature * feature_term
        parts["feature"] = feature_term.detach()
    return loss, parts


def maybe_features(model, on: bool):
    """The classifier's inputs (with grad) when the feature term needs them, else a no-op context."""
    return capture_classifier_input(classifier_module(model), detach=False) if on else contextlib.nullcontext([])


def base_model_targets(model, pixels, targets, selection, batch: int, num_classes: int,
                       args: "UntrainingArguments") -> dict:
    """What the objective needs from the unfiltered network, as keyword arguments of :func:`untraining_loss`.

    One forward without gradients over the batch's ``batch`` original samples (no row selected) when
    ``retain_loss="kd"``, ``forget_loss="boundary"`` or a feature term asks for it; else ``{}``.
    ``model`` is the unwrapped filtered model; ``pixels``/``targets``/``selection`` come from
    :func:`expand_batch`.
    """
    use_features = args.feature_loss != "none"
    if not (args.retain_loss == "kd" or args.forget_loss == "boundary" or use_features):
        return {}
    out = {}
    with torch.no_grad(), maybe_features(model, use_features) as store:
        base_logits = model(pixel_values=pixels[:batch]).logits  # the original network: no row selected
    if use_features:
        nearest = masked_teacher_log_probs(base_logits, selection[:batch]).argmax(-1)
        if args.feature_loss == "prototype":
            out["feature_centroids"], out["feature_present"] = batch_centroids(store[-1], targets[:batch], num_classes)
            out["feature_targets"] = nearest
        else:
            out["feature_targets"], out["feature_valid"] = nearest_centroid_targets(store[-1], targets[:batch], nearest)
    if args.retain_loss == "kd":
        out["teacher_log_probs"] = masked_teacher_log_probs(base_logits.repeat(args.retain_rows, 1),
                                                            selection[batch:], args.kd_temperature)
    if args.forget_loss == "boundary":
        out["forget_targets"] = masked_teacher_log_probs(base_logits, selection[:batch]).argmax(-1)
    return out


def forget_class_weights(labels, num_classes: int) -> Optional[torch.Tensor]:
    """Inverse-frequency weights of the forget term per class (mean 1 over the data), or None when the
    classes are balanced (nothing to correct: the plain mean is used, bit for bit as before).

    Example:

    ```py
    >>> forget_class_weights([0, 0, 0, 1], 2)     # class 1 is rare: its forget pairs count 3x
    tensor([0.6667, 2.0000])
    ```
    """
    counts = torch.bincount(torch.tensor(labels, dtype=torch.long).flatten(), minlength=num_classes).double()
    present = counts > 0
    if not present.any() or counts[present].max() == counts[present].min():
        return None
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.float()


def filter_values(model) -> list[torch.Tensor]:
    """The current filter values of every active adapter layer (what the regulariser sees)."""
    values = []
    for module in model.modules():
        if isinstance(module, WeightFilterLayer):
            for name in module.active_adapters:
                if name in module.weight_filter_theta:
                    values.append(module.filters(name))
    return values
