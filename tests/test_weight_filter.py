"""The PEFT method's contracts: merge/unmerge/safe_merge, the filter caches, a light package import."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_unlearn import UnlearnAdapter
from hf_unlearn.tuners.weight_filter import WeightFilterLayer
from tiny_models import BUILDERS, build, pixels, randomize_filters

KINDS = list(BUILDERS)
REPO = Path(__file__).resolve().parents[1]


def peft_model_of(kind, seed=0):
    """A PeftModel with distinct random rows (the UnlearnAdapter is only the way to attach it)."""
    peft_model = UnlearnAdapter.attach(build(kind, seed=seed)).model
    randomize_filters(peft_model, seed=seed)
    return peft_model.eval()


def base_tensors(peft_model):
    """Copies of every wrapped layer's base weight and bias."""
    out = {}
    for name, module in peft_model.named_modules():
        if isinstance(module, WeightFilterLayer):
            base = module.get_base_layer()
            out[name] = (base.weight.detach().clone(), None if base.bias is None else base.bias.detach().clone())
    return out


def logits(model, x, **kwargs):
    with torch.no_grad():
        return model(pixel_values=x, **kwargs).logits


# ------------------------------------------------------------------ merge / unmerge / safe_merge


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("forget", [2, ["bee", "dog"]])
def test_merge_adapter_equals_filtering_and_unmerge_restores_the_base(kind, forget):
    peft_model = peft_model_of(kind)
    x = pixels(3)
    base_logits = logits(peft_model, x)
    before = base_tensors(peft_model)
    with peft_model.forgetting(forget):
        filtered = logits(peft_model, x)
        peft_model.merge_adapter()
    assert not torch.allclose(filtered, base_logits)
    # One row (or product of rows) for the whole batch: the inference path already multiplies the
    # weight rows by the scale exactly as merge does, so the merged model gives the same bits.
    assert torch.equal(logits(peft_model, x), filtered)
    with pytest.raises(RuntimeError, match="merged into its weights"):
        logits(peft_model, x, forget=1)  # selecting again would apply the rows twice
    peft_model.unmerge_adapter()
    # unmerge puts back the weights kept aside at merge (no division by ~0 filters): bit for bit
    after = base_tensors(peft_model)
    for name, (weight, bias) in before.items():
        assert torch.equal(after[name][0], weight), name
        assert (bias is None and after[name][1] is None) or torch.equal(after[name][1], bias), name
    assert torch.equal(logits(peft_model, x), base_logits)
    assert torch.equal(logits(peft_model, x, forget=forget), filtered)


@pytest.mark.parametrize("kind", KINDS)
def test_merge_and_unload_gives_a_plain_model_with_the_filtered_logits(kind):
    peft_model = peft_model_of(kind)
    x = pixels(3)
    with peft_model.forgetting("cat"):
        filtered = logits(peft_model, x)
        plain = peft_model.merge_and_unload(safe_merge=True)
    assert type(plain) is BUILDERS[kind][1]
    assert not any(isinstance(m, WeightFilterLayer) for m in plain.modules())
    assert torch.equal(logits(plain, x), filtered)


def test_merge_needs_one_selection_for_the_whole_model():
    peft_model = peft_model_of("resnet")
    with pytest.raises(ValueError, match="needs the class"):
        peft_model.merge_adapter()
    with pytest.raises(ValueError, match="needs the class"):
        with peft_model.forgetting(torch.tensor([0, 1, 2])):  # one class per sample: no single weight
            peft_model.merge_adapter()


@pytest.mark.parametrize("merge", ["merge_adapter", "merge_and_unload"])
def test_safe_merge_refuses_non_finite_filters_and_changes_nothing(merge):
    peft_model = peft_model_of("resnet")
    x = pixels(3)
    base_logits = logits(peft_model, x)
    with peft_model.forgetting(1):
        filtered = logits(peft_model, x)
    before = base_tensors(peft_model)
    # a NaN in row 1 of the LAST wrapped layer: the earlier layers would merge fine
    last = [m for m in peft_model.modules() if isinstance(m, WeightFilterLayer)][-1]
    with torch.no_grad():
        last.weight_filter_theta["default"][1, 0] = math.nan
    with peft_model.forgetting(1), pytest.raises(ValueError, match="Non-finite"):
        if merge == "merge_adapter":
            peft_model.merge_adapter(safe_merge=True)
        else:
            peft_model.merge_and_unload(safe_merge=True)
    # nothing merged, nothing unloaded: every layer still wrapped, every base weight untouched
    layers = [m for m in peft_model.modules() if isinstance(m, WeightFilterLayer)]
    assert len(layers) == len(before) and not any(m.merged for m in layers)
    assert all(torch.equal(base_tensors(peft_model)[n][0], w) for n, (w, _) in before.items())
    assert torch.equal(logits(peft_model, x), base_logits)
    # the other rows are still usable, and fixing the row makes the merge go through
    with torch.no_grad():
        last.weight_filter_theta["default"][1, 0] = 2.0
    with peft_model.forgetting(1):
        peft_model.merge_adapter(safe_merge=True)
    assert torch.isfinite(logits(peft_model, x)).all()
    assert not torch.equal(logits(peft_model, x), filtered)  # the edited row is merged, not the old one
