"""Peer class-unlearning methods, to compare the weight-filter adapter against.

Every method forgets one class (or one fixed set) per run and returns a NEW plain transformers
classifier with ``config.unlearned_class_ids`` set, so ``evaluate_unlearning`` and
``save_pretrained`` work on it unchanged.

```py
>>> from hf_unlearn.baselines import BASELINES, get_baseline
>>> sorted(BASELINES)
['boundary_shrink', 'finetune', 'logit_mask', 'neggrad', 'random_labels', 'retrain', 'salun', 'scrub', 'ssd', 'svd_projection']
>>> result = get_baseline("salun").unlearn(model, ["Coat"], retain_loader, forget_loader, hparams={"lr": 0.01})
>>> result.model.config.unlearned_class_ids, round(result.seconds, 1)
([4], 21.7)
```

=================== ===================================================================== ==============
name                method                                                                data used
=================== ===================================================================== ==============
``retrain``         base recipe from scratch without the class (gold standard)           the recipe's
``finetune``        CE on retained data (FT)                                               retain
``neggrad``         NegGrad+: CE(retain) - alpha CE(forget), bounded (Kurmanji et al.)    retain + forget
``random_labels``   forget samples relabelled among the other classes + retain CE (RL)    retain + forget
``salun``           RL on the top-50% salient weights (Fan et al., ICLR 2024)             retain + forget
``scrub``           teacher-student max/min KL (Kurmanji et al., NeurIPS 2023)            retain + forget
``ssd``             selective synaptic dampening, Fisher ratio (Foster et al., AAAI 2024) retain + forget
``boundary_shrink`` FGSM nearest-wrong-class relabelling (Chen et al., CVPR 2023)         forget
``svd_projection``  Deep Unlearning, project out forget-only activation subspace          retain + forget
                    (Kodge et al., TMLR 2024), gradient-free                               (900 samples)
``logit_mask``      control: forgotten logits pinned to -1e4                              none
=================== ===================================================================== ==============
"""

from __future__ import annotations

from .base import UnlearnResult, Unlearner, mark_unlearned, param_bytes, tensor_loaders
from .boundary_shrink import BoundaryShrink
from .finetune import FineTune
from .logit_mask import LogitMask
from .neggrad import NegGradPlus
from .random_labels import RandomLabels
from .retrain import Retrain
from .salun import SalUn
from .scrub import SCRUB
from .ssd import SSD
from .svd_projection import SVDProjection

__all__ = ["BASELINES", "get_baseline", "UnlearnResult", "Unlearner", "mark_unlearned", "param_bytes",
           "tensor_loaders"]

BASELINES: dict = {
    cls.name: cls
    for cls in (Retrain, FineTune, NegGradPlus, RandomLabels, SalUn, SCRUB, SSD, BoundaryShrink, SVDProjection,
                LogitMask)
}


def get_baseline(name: str) -> Unlearner:
    """A fresh instance of the baseline registered as ``name`` (see ``BASELINES``)."""
    try:
        return BASELINES[name]()
    except KeyError:
        raise ValueError(f"Unknown baseline {name!r}; known: {', '.join(sorted(BASELINES))}.") from None
