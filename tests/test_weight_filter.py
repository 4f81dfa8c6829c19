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


# ------------------------------------------------------------------ the caches against in-place edits


def thetas(peft_model):
    return [p for n, p in peft_model.named_parameters() if "weight_filter_theta" in n]


def reference_model(kind, new_thetas, dtype=torch.float32):
    """A fresh model (empty caches) given ``new_thetas`` the ordinary way."""
    fresh = peft_model_of(kind).to(dtype)
    with torch.no_grad():
        for p, value in zip(thetas(fresh), new_thetas):
            p.copy_(value)
    return fresh


def edited(peft_model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.empty(p.shape).uniform_(-4.0, 4.0, generator=gen) for p in thetas(peft_model)]


def edit_data_assign(peft_model, values):
    for p, value in zip(thetas(peft_model), values):
        p.data = value.clone()


def edit_load_state_dict(peft_model, values):
    names = [n for n, _ in peft_model.named_parameters() if "weight_filter_theta" in n]
    peft_model.load_state_dict(dict(zip(names, values)), strict=False)


def edit_load_state_dict_assign(peft_model, values):
    names = [n for n, _ in peft_model.named_parameters() if "weight_filter_theta" in n]
    peft_model.load_state_dict({n: v.clone().requires_grad_() for n, v in zip(names, values)}, strict=False,
                               assign=True)


def edit_set_peft_model_state_dict(peft_model, values):
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    state = get_peft_model_state_dict(peft_model)
    assert len(state) == len(values)
    set_peft_model_state_dict(peft_model, dict(zip(state, values)))


def edit_no_grad_copy(peft_model, values):
    with torch.no_grad():
        for p, value in zip(thetas(peft_model), values):
            p.copy_(value)


def edit_data_copy_then_clear(peft_model, values):
    # `.data` bypasses autograd's version counter, which the caches key on: the documented contract
    # is to tell the model (the other edits here need nothing).
    for p, value in zip(thetas(peft_model), values):
        p.data.copy_(value)
    peft_model.base_model.clear_filter_caches()


EDITS = {
    "data_assign": edit_data_assign,
    "load_state_dict": edit_load_state_dict,
    "load_state_dict_assign": edit_load_state_dict_assign,
    "set_peft_model_state_dict": edit_set_peft_model_state_dict,
    "no_grad_copy": edit_no_grad_copy,
    "data_copy_then_clear": edit_data_copy_then_clear,
}


# an id, a name (both cached by the model's 4,096-entry selection cache, which hands back the same
# selection tensor, so the layers' scale cache is hit), one class per sample, a set
FORGETS = [1, "cat", torch.tensor([0, 3, -1]), ["ant", "dog"]]


@pytest.mark.parametrize("kind", ["vit", "resnet"])
@pytest.mark.parametrize("edit", list(EDITS))
def test_next_forward_sees_filters_edited_in_place(kind, edit):
    peft_model = peft_model_of(kind)
    x = pixels(3)
    old = [logits(peft_model, x, forget=f) for f in FORGETS]
    assert all(torch.equal(logits(peft_model, x, forget=f), o) for f, o in zip(FORGETS, old))  # caches warm
    values = edited(peft_model)
    EDITS[edit](peft_model, values)
    reference = reference_model(kind, values)
    for forget, before in zip(FORGETS, old):
        expected = logits(reference, x, forget=forget)
        assert not torch.allclose(expected, before, atol=1e-3)  # the edit matters for these classes
        assert torch.equal(logits(peft_model, x, forget=forget), expected), forget
        with peft_model.forgetting(forget):
            assert torch.equal(logits(peft_model, x), expected), forget


@pytest.mark.parametrize("kind", ["vit", "resnet"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adam_fused_off_foreach_off"])
def test_next_forward_sees_an_optimizer_step(kind, optimizer):
    peft_model = peft_model_of(kind)
    x = pixels(3)
    old = logits(peft_model, x, forget=2)
    params = thetas(peft_model)
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=5.0)
    else:
        opt = torch.optim.Adam(params, lr=0.5, foreach=optimizer == "adam")
    # a model loss through the training path, plus a term that moves every filter far enough to matter
    loss = -peft_model(pixel_values=x, forget=2).logits.logsumexp(-1).mean() + sum(p.sum() for p in params)
    loss.backward()
    opt.step()
    new = logits(peft_model, x, forget=2)
    values = [p.detach().clone() for p in params]
    assert not torch.allclose(new, old, atol=1e-3)
    assert torch.equal(new, logits(reference_model(kind, values), x, forget=2))


def test_cached_filters_follow_the_model_to_another_dtype():
    peft_model = peft_model_of("resnet")
    x = pixels(3)
    logits(peft_model, x, forget=1)  # caches filled in float32
    peft_model.double()  # nn.Module._apply swaps `.data`: no version bump
    values = [p.detach().clone() for p in thetas(peft_model)]
    reference = reference_model("resnet", values, dtype=torch.float64)
    assert torch.equal(logits(peft_model, x.double(), forget=1), logits(reference, x.double(), forget=1))


# ------------------------------------------------------------------ a light package import

HEAVY = ("datasets", "evaluate", "gradio", "matplotlib")


def heavy_modules_after(code: str) -> set:
    """The HEAVY top-level packages loaded in a fresh interpreter after running ``code``."""
    probe = (f"import sys\n{code}\n"
             f"print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    last = (done.stdout.strip().splitlines() or [""])[-1]  # an empty line when nothing heavy was loaded
    return set(filter(None, last.split(",")))


def test_package_import_is_light():
    # Importing the package (which registers the PEFT method) must not pull the data, evaluation,
    # demo or plotting stacks: a fresh interpreter, everything it loads counts.
    assert heavy_modules_after("import hf_unlearn\nfrom hf_unlearn import UnlearnAdapter") == set()
    # the probe does see such an import when one happens (a module that plots needs matplotlib)
    assert "matplotlib" in heavy_modules_after("import hf_unlearn.explain.plots")
