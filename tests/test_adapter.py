"""The weight-filter PEFT method and UnlearnAdapter on tiny ViT, ConvNeXt and ResNet models."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from peft import PeftModel, get_peft_model

import hf_unlearn
from hf_unlearn import UnlearnAdapter, WeightFilterConfig, per_sample
from tiny_models import BUILDERS, NAMES, build, image_processor, pixels, randomize_filters

KINDS = list(BUILDERS)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def make_adapter(kind, seed=0):
    adapter = UnlearnAdapter.attach(build(kind, seed=seed), image_processor=image_processor())
    randomize_filters(adapter.model, seed=seed)
    return adapter.eval()


def run_python(code, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    done = subprocess.run([sys.executable, str(script)], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_default_targets_skip_stem_and_head(kind):
    adapter = make_adapter(kind)
    names = list(adapter.filter_layers())
    assert names, "no layer was wrapped"
    assert not any("classifier" in n or "embed" in n for n in names)
    expected = {"vit": "q_proj", "convnext": "dwconv", "resnet": "shortcut.convolution"}[kind]
    assert any(n.endswith(expected) for n in names)
    # One row per class in every wrapped layer.
    for layer in adapter.filter_layers().values():
        assert layer.weight_filter_theta["default"].shape == (4, layer.out_features)


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_selected_or_disabled_is_the_base_model(kind):
    base = build(kind)
    x = pixels()
    with torch.no_grad():
        expected = base(pixel_values=x).logits
        adapter = make_adapter(kind)
        assert torch.equal(adapter(pixel_values=x).logits, expected)
        assert torch.equal(adapter(pixel_values=x, forget=torch.full((5,), -1)).logits, expected)
        filtered = adapter(pixel_values=x, forget=1).logits
        assert not torch.allclose(filtered, expected)
        with adapter.model.disable_adapter():
            assert torch.equal(adapter(pixel_values=x, forget=1).logits, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_per_sample_selection_matches_per_batch_rows(kind):
    adapter = make_adapter(kind)
    x = pixels(batch=6)
    choice = torch.tensor([0, 3, -1, 2, 1, 0])
    with torch.no_grad():
        mixed = adapter(pixel_values=x, forget=choice).logits
        for i, c in enumerate(choice.tolist()):
            row = adapter(pixel_values=x[i : i + 1], forget=None if c < 0 else c).logits
            torch.testing.assert_close(mixed[i : i + 1], row, rtol=1e-5, atol=1e-6)
        # sets per sample, and names: the same as the per-batch set
        sets = adapter(pixel_values=x[:3], forget=per_sample([["ant", "dog"], None, 2])).logits
        torch.testing.assert_close(sets[:1], adapter(pixel_values=x[:1], forget=[0, 3]).logits, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sets[1:2], adapter(pixel_values=x[1:2]).logits, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sets[2:3], adapter(pixel_values=x[2:3], forget="cat").logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_set_uses_product_of_rows(kind):
    adapter = make_adapter(kind)
    layer = next(iter(adapter.filter_layers().values()))
    alpha = layer.filters("default").detach()
    scale = layer.selection_scale(torch.tensor([[1, 3]]))
    torch.testing.assert_close(scale[0], alpha[1] * alpha[3])
    with adapter.forgetting({"bee", "dog"}):
        assert torch.equal(layer.selection, torch.tensor([[1, 3]]))
    assert layer.selection is None


@pytest.mark.parametrize("kind", KINDS)
def test_context_and_keyword_agree(kind):
    adapter = make_adapter(kind)
    x = pixels()
    with torch.no_grad():
        by_kwarg = adapter(pixel_values=x, forget="cat").logits
        with adapter.forgetting(2):
            by_context = adapter(pixel_values=x).logits
        assert torch.equal(by_kwarg, by_context)
        # the keyword wins over the context for its own call, then the context is back
        with adapter.forgetting(2):
            other = adapter(pixel_values=x, forget=0).logits
            assert torch.equal(adapter(pixel_values=x).logits, by_context)
        assert not torch.equal(other, by_context)


@pytest.mark.parametrize("kind", KINDS)
def test_only_selected_rows_get_gradient(kind):
    adapter = UnlearnAdapter.attach(build(kind))
    adapter.model.train()
    adapter.base_model.eval()  # frozen backbone: BatchNorm statistics fixed
    out = adapter(pixel_values=pixels(batch=4), forget=torch.tensor([1, 1, -1, 3]))
    out.logits.sum().backward()
    trainable = [p for p in adapter.model.parameters() if p.requires_grad]
    assert trainable and all(p.ndim == 2 and p.shape[0] == 4 for p in trainable)
    for p in trainable:
        touched = p.grad.abs().sum(dim=1) > 0
        assert touched.tolist() == [False, True, False, True]


@pytest.mark.parametrize("kind", KINDS)
def test_export_equals_filtered_output_and_loads_without_hf_unlearn(kind, tmp_path):
    adapter = make_adapter(kind)
    x = pixels()
    with torch.no_grad():
        expected = adapter(pixel_values=x, forget=["bee", "dog"]).logits
        plain = adapter.export(forget=["bee", "dog"])
        assert type(plain) is type(adapter.base_model)
        assert not any("weight_filter" in n for n, _ in plain.named_parameters())
        got = plain(pixel_values=x).logits
    assert (got - expected).abs().max().item() <= 1e-5
    # the adapter itself is unchanged by export
    with torch.no_grad():
        assert torch.equal(adapter(pixel_values=x, forget=["bee", "dog"]).logits, expected)
    out = tmp_path / "exported"
    plain.save_pretrained(out)
    adapter.image_processor.save_pretrained(out)
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    torch.save(x, tmp_path / "x.pt")
    torch.save(expected, tmp_path / "expected.pt")
    stdout = run_python(
        f"""
        import sys, json, torch, numpy as np
        from PIL import Image
        from transformers import AutoModelForImageClassification, pipeline
        model = AutoModelForImageClassification.from_pretrained({str(out)!r}).eval()
        x = torch.load({str(tmp_path / 'x.pt')!r}); expected = torch.load({str(tmp_path / 'expected.pt')!r})
        diff = (model(pixel_values=x).logits - expected).abs().max().item()
        clf = pipeline("image-classification", model={str(out)!r})
        preds = clf(Image.fromarray(np.full((8, 8), 128, dtype=np.uint8)))
        print(json.dumps({{"diff": diff, "labels": sorted(p["label"] for p in preds),
                          "forgot": model.config.unlearned_classes,
                          "hf_unlearn_loaded": "hf_unlearn" in sys.modules}}))
        """,
        tmp_path,
    )
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["diff"] <= 1e-5
    assert result["forgot"] == ["bee", "dog"]
    assert not result["hf_unlearn_loaded"]
    assert set(result["labels"]) <= set(NAMES) and result["labels"]


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_fresh_process_load_give_identical_logits(kind, tmp_path):
    base_dir = tmp_path / "base"
    build(kind).save_pretrained(base_dir)
    adapter = UnlearnAdapter.attach(build(kind), image_processor=image_processor())
    adapter.config.base_model_name_or_path = str(base_dir)
    randomize_filters(adapter.model)
    adapter.eval()
    x = pixels()
    with torch.no_grad():
        expected = torch.stack([adapter(pixel_values=x, forget=c).logits for c in range(4)])
    adapter.save_pretrained(tmp_path / "wf")
    files = sorted(p.name for p in (tmp_path / "wf").iterdir())
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files
    assert not any(f.endswith(".bin") for f in files)
    torch.save(x, tmp_path / "x.pt")
    run_python(
        f"""
        import torch, hf_unlearn
        adapter = hf_unlearn.UnlearnAdapter.from_pretrained({str(tmp_path / 'wf')!r})
        assert adapter.image_processor is not None
        x = torch.load({str(tmp_path / 'x.pt')!r})
        with torch.no_grad():
            out = torch.stack([adapter(pixel_values=x, forget=c).logits for c in range(4)])
        torch.save(out, {str(tmp_path / 'out.pt')!r})
        """,
        tmp_path,
    )
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


def test_plain_peft_api_round_trip(tmp_path):
    """PeftModel/AutoPeftModel load our adapters once hf_unlearn is imported."""
    from peft import AutoPeftModelForFeatureExtraction  # noqa: F401  (import check only)
    from peft import AutoPeftModel

    base_dir = tmp_path / "base"
    build("vit").save_pretrained(base_dir)
    peft_model = get_peft_model(build("vit"), WeightFilterConfig(target_modules=["q_proj", "fc2"]))
    peft_model.peft_config["default"].base_model_name_or_path = str(base_dir)
    randomize_filters(peft_model)
    peft_model.eval()
    x = pixels()
    with torch.no_grad():
        expected = peft_model(pixel_values=x, forget=2).logits
    peft_model.save_pretrained(tmp_path / "wf")
    loaded = PeftModel.from_pretrained(build("vit"), tmp_path / "wf").eval()
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=x, forget=2).logits, expected)
    auto = AutoPeftModel.from_pretrained(tmp_path / "wf").eval()
    with torch.no_grad():
        assert torch.equal(auto(pixel_values=x, forget=2).logits, expected)
    with torch.no_grad(), auto.forgetting(2):
        unloaded = auto.merge_and_unload()
        torch.testing.assert_close(unloaded(pixel_values=x).logits, expected, rtol=0, atol=1e-5)


def test_two_adapters_coexist_and_switch():
    x = pixels()
    peft_model = get_peft_model(build("resnet"), WeightFilterConfig(), adapter_name="a")
    peft_model.add_adapter("b", WeightFilterConfig())
    randomize_filters(peft_model, seed=3)
    peft_model.eval()
    with torch.no_grad():
        peft_model.set_adapter("a")
        out_a = peft_model(pixel_values=x, forget=1).logits
        peft_model.set_adapter("b")
        out_b = peft_model(pixel_values=x, forget=1).logits
        assert not torch.allclose(out_a, out_b)
        peft_model.set_adapter("a")
        assert torch.equal(peft_model(pixel_values=x, forget=1).logits, out_a)
        peft_model.delete_adapter("b")
        assert torch.equal(peft_model(pixel_values=x, forget=1).logits, out_a)


def test_gradient_checkpointing_keeps_the_selection_for_backward():
    x = pixels(batch=4)
    choice = torch.tensor([0, 2, -1, 3])
    grads = []
    for checkpointing in (False, True):
        adapter = UnlearnAdapter.attach(build("vit"))
        randomize_filters(adapter.model, seed=5)
        if checkpointing:
            adapter.base_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        adapter.model.train()
        out = adapter(pixel_values=x, forget=choice)
        out.logits.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in adapter.model.named_parameters() if p.requires_grad})
        # the next call without `forget` is the plain model again
        with torch.no_grad():
            assert torch.equal(adapter(pixel_values=x).logits, adapter.base_model(pixel_values=x).logits)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-7)


def test_predict_returns_labels_and_scores():
    from PIL import Image
    import numpy as np

    adapter = make_adapter("vit")
    # grey images for a 3-channel model are converted, as the transformers pipeline does
    images = [Image.fromarray(np.random.RandomState(i).randint(0, 255, (8, 8), dtype=np.uint8)) for i in range(3)]
    preds = adapter.predict(images, top_k=2)
    assert len(preds) == 3 and all(len(p) == 2 for p in preds)
    assert all(p[0]["label"] in NAMES and 0 <= p[0]["score"] <= 1 for p in preds)
    forgot = adapter.predict(images, forget="cat", top_k=4)
    assert forgot != preds


# ------------------------------------------------------------------------- bad input


def test_bad_class_ids_and_names_are_named():
    adapter = make_adapter("resnet")
    x = pixels(batch=3)
    with pytest.raises(ValueError, match=r"Class id 7 is out of range.*'ant'"):
        adapter(pixel_values=x, forget=7)
    with pytest.raises(ValueError, match=r"Unknown class name 'zebra'.*0='ant', 1='bee'"):
        adapter(pixel_values=x, forget="zebra")
    with pytest.raises(ValueError, match="out of range"):
        adapter(pixel_values=x, forget=torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="2 per-sample entries but the batch has 3"):
        adapter(pixel_values=x, forget=torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integers"):
        adapter(pixel_values=x, forget=torch.tensor([0.5, 1.0, 2.0]))
    with pytest.raises(ValueError, match="needs the class"):
        adapter.export(forget=None)


def test_num_classes_must_match_the_model():
    with pytest.raises(ValueError, match="num_classes=7 does not match the model's num_labels=4"):
        UnlearnAdapter.attach(build("vit"), num_classes=7)


def test_adapter_for_another_architecture_or_size_is_refused(tmp_path):
    adapter = make_adapter("vit")
    adapter.save_pretrained(tmp_path / "wf")
    with pytest.raises(ValueError, match="does not fit this base model.*model_type"):
        UnlearnAdapter.from_pretrained(tmp_path / "wf", base_model=build("resnet"))
    with pytest.raises(ValueError, match="differently sized.*adapter 16, model 32"):
        UnlearnAdapter.from_pretrained(tmp_path / "wf", base_model=build("vit", hidden_size=32))
    with pytest.raises(ValueError, match="num_labels"):
        UnlearnAdapter.from_pretrained(tmp_path / "wf", base_model=build("vit", num_labels=5))


def test_pickle_weights_are_refused(tmp_path):
    adapter = make_adapter("vit")
    adapter.save_pretrained(tmp_path / "wf")
    (tmp_path / "wf" / "adapter_model.safetensors").unlink()
    (tmp_path / "wf" / "adapter_model.bin").write_bytes(b"not even loaded")
    with pytest.raises(ValueError, match="pickle weights.*never unpickles"):
        UnlearnAdapter.from_pretrained(tmp_path / "wf", base_model=build("vit"))


def test_corrupt_safetensors_gives_an_error(tmp_path):
    adapter = make_adapter("vit")
    adapter.save_pretrained(tmp_path / "wf")
    (tmp_path / "wf" / "adapter_model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(Exception, match="(?i)safetensors|header|deserializ"):
        UnlearnAdapter.from_pretrained(tmp_path / "wf", base_model=build("vit"))


def test_save_leaves_no_partial_folder_on_failure(tmp_path, monkeypatch):
    adapter = make_adapter("vit")
    target = tmp_path / "wf"
    adapter.save_pretrained(target)
    before = sorted(p.name for p in target.iterdir())

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(adapter.image_processor, "save_pretrained", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        adapter.save_pretrained(target)
    assert sorted(p.name for p in target.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["wf"]
    assert not [p for p in target.iterdir() if p.name.startswith(".")]
