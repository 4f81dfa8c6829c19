"""Filter maps: what each class's row of the weight filters switches off (no data needed).

Row ``c`` of a filtered layer's matrix ``alpha`` (shape ``(num_classes, out_units)``, values in
``[0, 1]``) says which output units forgetting class ``c`` switches off: ``1 - alpha[c, k]`` is how
much of unit ``k`` the row removes.

- :func:`filter_maps`: ``{layer: (N, out) array of 1 - alpha}``; :func:`top_components` lists the
  strongest units of each row;
- :func:`filter_usage`: per class and layer, the mean of ``1 - alpha`` and the share of units with
  ``alpha < 0.5``;
- :func:`row_similarity`: cosine similarity of the classes' concatenated ``1 - alpha`` vectors,
  :func:`cluster_rows`: hierarchical clustering (average linkage on ``1 - similarity``) and its
  dendrogram order, compared with the base model's confusion matrix (:func:`confusion_matrix`) by
  :func:`similarity_confusion_correlation` (Spearman and Pearson over the off-diagonal pairs of the
  symmetrised, row-normalised confusion).

Example:

```py
>>> from hf_unlearn.explain import filters
>>> maps = filters.filter_maps(adapter)                  # {layer: (10, out) of 1 - alpha}
>>> sim = filters.row_similarity(maps); filters.cluster_rows(sim)["order"]
```
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
import torch
from scipy import stats
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform
from tqdm.auto import tqdm

from .common import as_adapter, base_model_context, logits_of, model_device, to_numpy, unpack_batch

__all__ = [
    "OFF_THRESHOLD",
    "filter_maps",
    "as_maps",
    "filter_usage",
    "top_components",
    "row_similarity",
    "cluster_rows",
    "confusion_matrix",
    "similarity_confusion_correlation",
]

OFF_THRESHOLD = 0.5  # a unit counts as "switched off" by a row when alpha < 0.5


def filter_maps(adapter) -> dict[str, np.ndarray]:
    """``{layer_name: (num_classes, out_units) array of 1 - alpha}`` for every filtered layer.

    Row ``c`` says which components forgetting class ``c`` switches off (1 = fully off).

    Example:

    ```py
    >>> maps = filter_maps(adapter)
    >>> maps["resnet.encoder.stages.2.layers.0.layer.1.convolution"][4].argmax()   # unit row 4 removes most
    ```
    """
    adapter = as_adapter(adapter, "filter_maps")
    name = adapter.model.active_adapter
    out = {}
    with torch.no_grad():
        for layer_name, layer in adapter.filter_layers().items():
            if name in layer.weight_filter_theta:
                out[layer_name] = (1.0 - layer.filters(name).detach().double().cpu()).numpy()
    if not out:
        raise ValueError("The adapter has no filtered layers.")
    return out


def as_maps(maps_or_adapter) -> dict[str, np.ndarray]:
    """The filter maps of an adapter, or ``maps`` checked (all ``(num_classes, units)``, same classes)."""
    if isinstance(maps_or_adapter, Mapping):
        maps = {str(k): to_numpy(v) for k, v in maps_or_adapter.items()}
        if not maps:
            raise ValueError("The filter maps are empty.")
        n = {v.shape[0] for v in maps.values()}
        if len(n) != 1 or any(v.ndim != 2 for v in maps.values()):
            raise ValueError("Filter maps must all be (num_classes, out_units) arrays with the same num_classes.")
        return maps
    return filter_maps(maps_or_adapter)


def filter_usage(maps_or_adapter, threshold: float = OFF_THRESHOLD) -> dict[str, Any]:
    """How much of each layer each class's row uses.

    Returns ``{"layers": [L names], "mean_off": (N, L) mean of 1 - alpha, "share_off": (N, L) share
    of units with alpha < threshold, "mean_off_overall": (N,), "share_off_overall": (N,)}`` (the
    overall values pool all units of all layers).
    """
    maps = as_maps(maps_or_adapter)
    layers = list(maps)
    mean_off = np.stack([maps[l].mean(1) for l in layers], axis=1)
    share_off = np.stack([(maps[l] > 1.0 - threshold).mean(1) for l in layers], axis=1)
    allunits = np.concatenate([maps[l] for l in layers], axis=1)
    return {
        "layers": layers,
        "threshold": threshold,
        "mean_off": mean_off,
        "share_off": share_off,
        "mean_off_overall": allunits.mean(1),
        "share_off_overall": (allunits > 1.0 - threshold).mean(1),
        "units": {l: int(maps[l].shape[1]) for l in layers},
    }


def top_components(maps_or_adapter, k: int = 5) -> dict[str, list[list[tuple[int, float]]]]:
    """``{layer: [per class: [(unit, 1 - alpha), ...] strongest first]}``, the ``k`` units each row removes most."""
    maps = as_maps(maps_or_adapter)
    out = {}
    for layer, m in maps.items():
        idx = np.argsort(-m, axis=1, kind="stable")[:, :k]
        out[layer] = [[(int(j), float(m[c, j])) for j in idx[c]] for c in range(m.shape[0])]
    return out


def row_similarity(maps_or_adapter) -> np.ndarray:
    """``(N, N)`` cosine similarity of the classes' ``1 - alpha`` vectors concatenated over all layers.

    Identical rows give 1. Two all-zero rows (classes whose rows switch nothing off) count as
    identical (1); an all-zero row and a non-zero one as 0.
    """
    maps = as_maps(maps_or_adapter)
    X = np.concatenate([maps[l] for l in maps], axis=1)
    norms = np.linalg.norm(X, axis=1)
    zero = norms <= 1e-12
    safe = np.where(zero, 1.0, norms)
    S = (X / safe[:, None]) @ (X / safe[:, None]).T
    S[zero, :] = 0.0
    S[:, zero] = 0.0
    S[np.ix_(zero, zero)] = 1.0
    S = np.clip((S + S.T) / 2.0, -1.0, 1.0)
    np.fill_diagonal(S, 1.0)
    return S


def cluster_rows(similarity, method: str = "average") -> dict[str, Any]:
    """Hierarchical clustering of the rows on ``1 - similarity``.

    Returns ``{"order": dendrogram leaf order (a permutation of 0..N-1), "linkage": scipy linkage
    matrix ((N-1, 4), empty for N < 2), "method": method}``.
    """

    S = to_numpy(similarity)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] == 0:
        raise ValueError(f"`similarity` must be a square (N, N) matrix, got shape {S.shape}.")
    n = S.shape[0]
    if n < 2:
        return {"order": list(range(n)), "linkage": np.zeros((0, 4)), "method": method}
    D = np.clip(1.0 - (S + S.T) / 2.0, 0.0, 2.0)
    np.fill_diagonal(D, 0.0)
    Z = linkage(squareform(D, checks=False), method=method, optimal_ordering=n <= 256)
    return {"order": [int(i) for i in leaves_list(Z)], "linkage": Z, "method": method}


def confusion_matrix(model, loader, num_classes: Optional[int] = None, *, progress: bool = False,
                     desc: str = "confusion (base model)") -> np.ndarray:
    """Counts ``C[true, predicted]`` of the base model (an adapter with no class selected) over ``loader``.

    ``loader`` yields ``{"pixel_values", "labels"}`` dicts (``hf_unlearn.data.loaders.build_dataloader``)
    or ``(pixel_values, labels)`` pairs.
    """
    device = model_device(model)
    C = None
    with torch.no_grad(), base_model_context(model):
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
            x, y = unpack_batch(batch)
            logits = logits_of(model, x.to(device) if device is not None else x)
            n = num_classes or logits.shape[1]
            if C is None:
                C = np.zeros((n, n), dtype=np.int64)
            pred = logits.argmax(1).cpu().numpy()
            np.add.at(C, (y.cpu().numpy().astype(np.int64), pred), 1)
    if C is None:
        raise ValueError("The loader yielded no batches.")
    return C


def similarity_confusion_correlation(similarity, confusion) -> dict[str, Any]:
    """Spearman and Pearson correlation between row similarity and the base model's confusion.

    The confusion counts are row-normalised (rows = true class) and symmetrised,
    ``(C[i, j] + C[j, i]) / 2``; both matrices are compared over the off-diagonal pairs ``i < j``.
    Returns ``{"spearman", "spearman_p", "pearson", "pearson_p", "n_pairs"}`` (None where undefined,
    e.g. a constant input).
    """

    S = to_numpy(similarity)
    C = to_numpy(confusion)
    if S.shape != C.shape or S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"`similarity` {S.shape} and `confusion` {C.shape} must be square and the same shape.")
    rows = C.sum(1, keepdims=True)
    Cn = np.divide(C, rows, out=np.zeros_like(C), where=rows > 0)
    Csym = (Cn + Cn.T) / 2.0
    iu = np.triu_indices(S.shape[0], 1)
    s, c = S[iu], Csym[iu]
    out: dict[str, Any] = {"spearman": None, "spearman_p": None, "pearson": None, "pearson_p": None,
                           "n_pairs": int(len(s))}
    if len(s) >= 3 and np.ptp(s) > 0 and np.ptp(c) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sp = stats.spearmanr(s, c)
            pr = stats.pearsonr(s, c)
        out.update(spearman=_finite(sp.statistic), spearman_p=_finite(sp.pvalue),
                   pearson=_finite(pr.statistic), pearson_p=_finite(pr.pvalue))
    return out


def _finite(v) -> Optional[float]:
    v = float(v)
    return v if math.isfinite(v) else None
