"""Explainability (hf_unlearn.explain): filter maps, row similarity, saliency, RISE AUCs, plots, CLI."""

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import tiny_models as tm
from hf_unlearn import UnlearnAdapter
from hf_unlearn.commands import explain as explain_command
from hf_unlearn.explain import faithfulness, filters, plots, saliency

PNG = b"\x89PNG\r\n\x1a\n"
EMBEDDER = "resnet.embedder.embedder.convolution"


def _set_rows(adapter, layer_name, off_units, on=30.0, off=-30.0):
    """Every filter of every layer ~1, except row c of `layer_name` which switches off exactly unit off_units[c]."""
    with torch.no_grad():
        for name, layer in adapter.filter_layers().items():
            theta = layer.weight_filter_theta["default"]
            theta.fill_(on)
            if name == layer_name:
                for c, k in enumerate(off_units):
                    theta[c, k] = off


def _png_ok(path):
    data = open(path, "rb").read()
    return data[:8] == PNG and len(data) > 1000


# ------------------------------------------------------------------ a hand-built model: one unit per class


@pytest.fixture(scope="module")
def patch_resnet():
    """Tiny ResNet whose only filtered layer is the stem conv; unit k_c carries class c.

    Unit 5 of the stem is a local-mean detector (all weights equal, positive), so it is large exactly
    where a bright patch is; row 0 switches off unit 5 and nothing else.
    """
    adapter = UnlearnAdapter.attach(tm.build("resnet"), target_modules=r".*embedder\.embedder\.convolution")
    adapter.eval()
    off_units = [5, 2, 7, 0]
    _set_rows(adapter, EMBEDDER, off_units)
    conv = adapter.filter_layers()[EMBEDDER].get_base_layer()
    with torch.no_grad():
        conv.weight[5] = 1.0 / conv.weight[5].numel()
        conv.weight[2] = -1.0 / conv.weight[2].numel()  # row 1's unit: a darkness detector (negative at the patch)
    return adapter, off_units


def _bright_patch(n=1):
    x = torch.zeros(n, 3, 16, 16)
    x[:, :, 2:6, 9:13] = 3.0
    return x


def test_filter_maps_point_at_the_component(patch_resnet):
    adapter, off_units = patch_resnet
    maps = filters.filter_maps(adapter)
    assert list(maps) == [EMBEDDER]
    m = maps[EMBEDDER]
    assert m.shape == (4, 8)
    assert [int(i) for i in m.argmax(1)] == off_units
    assert np.allclose(m[np.arange(4), off_units], 1.0) and np.sort(m, 1)[:, :-1].max() < 1e-6
    usage = filters.filter_usage(maps)
    assert np.allclose(usage["share_off"][:, 0], 1 / 8) and np.allclose(usage["mean_off"][:, 0], 1 / 8, atol=1e-6)
    tops = filters.top_components(maps, k=2)[EMBEDDER]
    assert [row[0][0] for row in tops] == off_units


def test_filter_saliency_points_at_the_bright_patch(patch_resnet):
    adapter, _ = patch_resnet
    x = _bright_patch(2)
    assert saliency.default_saliency_layer(adapter, x[:1]) == EMBEDDER
    sal = saliency.filter_saliency(adapter, x, "ant")  # row 0 = unit 5, the brightness detector
    assert sal.shape == (2, 16, 16) and float(sal.min()) >= 0 and float(sal.max()) == pytest.approx(1.0)
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[2:6, 9:13] = True
    far = torch.ones(16, 16, dtype=torch.bool)
    far[0:12, 3:16] = False  # more than ~5 px (the 7x7 stem window + upsampling) from the patch
    r, c = divmod(int(sal[0].argmax()), 16)
    assert 1 <= r <= 6 and 8 <= c <= 13, (r, c)
    assert sal[0][inside].mean() > 0.5 and sal[0][far].max() < 0.05
    # exactly the CAM of unit 5 alone: ReLU of its activation, upsampled, normalised
    conv = adapter.filter_layers()[EMBEDDER].get_base_layer()
    act = F.conv2d(x, conv.weight, stride=conv.stride, padding=conv.padding)[:, 5]
    manual = saliency.normalise(saliency.upsample(torch.relu(act), (16, 16)))
    assert torch.allclose(sal, manual, atol=1e-4)
    # the selection the caller may have active does not leak into the maps
    with adapter.forgetting("ant"):
        assert torch.allclose(saliency.filter_saliency(adapter, x, 0), sal, atol=1e-6)
    # row 1's unit is negative at the patch: the CAM form (ReLU of the weighted sum) is empty there,
    # the |A| form shows the patch
    forms = saliency.saliency_maps(adapter, x, "bee", methods=("filter", "filter_abs"))
    assert float(forms["filter"].max()) == 0.0
    r, c = divmod(int(forms["filter_abs"][0].argmax()), 16)
    assert 1 <= r <= 6 and 8 <= c <= 13, (r, c)
    ant = saliency.saliency_maps(adapter, x, "ant", methods=("filter", "filter_abs"))
    assert torch.allclose(ant["filter"], ant["filter_abs"], atol=1e-5)  # unit 5 is >= 0: both forms agree
    both = saliency.saliency_maps(adapter, x, [0, 1], seed=3)
    assert set(both) == {"filter", "gradcam", "random", "layer", "grid"}
    assert both["grid"] == (8, 8) and both["gradcam"].shape == (2, 16, 16)
    for key in ("gradcam", "random"):
        assert 0.0 <= float(both[key].min()) and float(both[key].max()) <= 1.0


def test_vit_token_saliency_is_exact_and_skips_the_dead_last_block():
    adapter = UnlearnAdapter.attach(tm.build("vit")).eval()
    x = tm.pixels(3)
    # In the last block only the class token reaches the classifier: its patch tokens do nothing.
    layer = saliency.default_saliency_layer(adapter, x[:1])
    assert layer == "vit.layers.0.mlp.fc1"
    _set_rows(adapter, layer, [0, 0, 7, 0])
    base = adapter.filter_layers()[layer].get_base_layer()
    store = {}
    handle = base.register_forward_hook(lambda m, a, out: store.setdefault("act", out.detach()))
    with torch.no_grad():
        adapter(pixel_values=x)
    handle.remove()
    tokens = store["act"][:, 1:, 7].abs().reshape(3, 4, 4)  # the 4x4 patch grid after the class token
    manual = saliency.normalise(saliency.upsample(tokens, (8, 8)))
    sal = saliency.filter_saliency(adapter, x, 2)
    assert torch.allclose(sal, manual, atol=1e-4)
    cam = saliency.gradcam(adapter, x, [0, 1, 2])
    assert cam.shape == (3, 8, 8) and float(cam.max()) == pytest.approx(1.0)
    # the last block's fc1, chosen by a unique suffix, gives an all-zero Grad-CAM
    last = saliency.resolve_layer(adapter, "layers.1.mlp.fc1")
    assert last == "vit.layers.1.mlp.fc1"
    assert float(saliency.gradcam(adapter, x, 0, layer=last).abs().max()) == 0.0


def test_convnext_channels_last_layer_and_random_maps():
    adapter = UnlearnAdapter.attach(tm.build("convnext")).eval()
    tm.randomize_filters(adapter.model)
    x = tm.pixels(2)
    out = saliency.saliency_maps(adapter, x, "cat")
    assert out["layer"] == "convnext.encoder.stages.1.layers.0.pwconv2" and out["grid"] == (2, 2)
    assert out["filter"].shape == (2, 8, 8)
    r1 = saliency.random_saliency(x, grid=(4, 4), seed=1)
    assert torch.equal(r1, saliency.random_saliency(2, (8, 8), (4, 4), seed=1))
    assert not torch.equal(r1, saliency.random_saliency(x, grid=(4, 4), seed=2))
    assert r1.shape == (2, 8, 8) and float(r1.min()) == 0.0 and float(r1.max()) == pytest.approx(1.0)


# ------------------------------------------------------------------ deletion / insertion AUC


def _region_model(x):
    """Probability of class 1 = mean of channel 0 over the left half (columns 0-3) of an 8x8 image."""
    p1 = x[:, 0, :, :4].mean((1, 2))
    return torch.stack([1 - p1, p1], dim=1)


def _region_saliency(first=True):
    noise = torch.rand(8, 8, generator=torch.Generator().manual_seed(0)) * 0.01
    region = torch.zeros(8, 8)
    region[:, :4] = 1.0
    return (region if first else 1 - region) + noise


def test_auc_known_answers():
    image = torch.ones(1, 8, 8)
    good, bad = _region_saliency(True), _region_saliency(False)
    kw = dict(apply_softmax=False)
    # deleting the region first: p = 1 - 2f until f = 1/2, then 0 -> AUC 1/4; insertion: min(2f, 1) -> 3/4
    assert faithfulness.deletion_auc(_region_model, image, good, 1, **kw) == pytest.approx(0.25)
    assert faithfulness.insertion_auc(_region_model, image, good, 1, **kw) == pytest.approx(0.75)
    assert faithfulness.deletion_auc(_region_model, image, bad, 1, **kw) == pytest.approx(0.75)
    assert faithfulness.insertion_auc(_region_model, image, bad, 1, **kw) == pytest.approx(0.25)
    assert faithfulness.deletion_auc(_region_model, image, good, 1, steps=4, **kw) == pytest.approx(0.25)
    # batched, in chunks of one image per forward
    batch = image.expand(2, 1, 8, 8)
    auc, curves = faithfulness.deletion_auc(_region_model, batch, torch.stack([good, bad]), 1, batch_size=5,
                                 return_curve=True, **kw)
    assert np.allclose(auc, [0.25, 0.75]) and curves.shape == (2, 17)
    assert curves[0, 0] == pytest.approx(1.0) and curves[0, 8] == pytest.approx(0.0) and curves[1, 8] == pytest.approx(1.0)
    # class 0 has probability 1 - p1: deleting the region first raises it
    assert faithfulness.deletion_auc(_region_model, image, good, 0, **kw) == pytest.approx(0.75)
    # a blurred uniform image is the image itself: nothing changes
    assert faithfulness.deletion_auc(_region_model, image, good, 1, baseline="blur", **kw) == pytest.approx(1.0)
    # from a grey baseline 0.5: p rises 0.5 -> 1 over the first half, then stays 1 -> 0.375 + 0.5
    assert faithfulness.insertion_auc(_region_model, image, good, 1, baseline=0.5, **kw) == pytest.approx(0.875)
    # equal saliency is deleted in random (seeded) order, not from the top-left corner: a constant map
    # on a "top half" model scores like random deletion (~1/2), where raster order would give 1/4
    def top_half(x):
        p1 = x[:, 0, :4, :].mean((1, 2))
        return torch.stack([1 - p1, p1], dim=1)

    flat = faithfulness.deletion_auc(top_half, image, torch.zeros(8, 8), 1, **kw)
    assert 0.4 < flat < 0.6
    assert flat == faithfulness.deletion_auc(top_half, image, torch.zeros(8, 8), 1, **kw)  # seeded
    # softmax is applied to logits by default; a real adapter takes names
    adapter = UnlearnAdapter.attach(tm.build("resnet")).eval()
    x = tm.pixels(3)
    sal = saliency.random_saliency(x, grid=(2, 2))
    d = faithfulness.deletion_auc(adapter, x, sal, ["ant", "bee", "cat"])
    assert d.shape == (3,) and np.all((d >= 0) & (d <= 1))


# ------------------------------------------------------------------ similarity, clustering, confusion


def test_similarity_clustering_and_correlation():
    a, b = np.array([1.0, 0.0, 0.5, 0.2]), np.array([0.0, 1.0, 0.1, 0.9])
    maps = {"l1": np.stack([a, b, a, b, np.zeros(4)]), "l2": np.stack([a[:2], b[:2], a[:2], b[:2], np.zeros(2)])}
    S = filters.row_similarity(maps)
    assert S.shape == (5, 5) and np.allclose(np.diag(S), 1.0)
    assert S[0, 2] == pytest.approx(1.0) and S[1, 3] == pytest.approx(1.0) and S[0, 1] < 0.5
    assert S[4, 0] == 0.0 and np.allclose(S, S.T)
    result = filters.cluster_rows(S)
    order = result["order"]
    assert sorted(order) == list(range(5)) and result["linkage"].shape == (4, 4)
    pos = {c: i for i, c in enumerate(order)}
    assert abs(pos[0] - pos[2]) == 1 and abs(pos[1] - pos[3]) == 1
    assert filters.cluster_rows(np.ones((1, 1)))["order"] == [0]
    # from an adapter: identical rows have similarity 1
    adapter = UnlearnAdapter.attach(tm.build("resnet"))
    tm.randomize_filters(adapter.model)
    with torch.no_grad():
        for layer in adapter.filter_layers().values():
            layer.weight_filter_theta["default"][3] = layer.weight_filter_theta["default"][1]
    S = filters.row_similarity(adapter)
    assert S[1, 3] == pytest.approx(1.0) and S[0, 1] < 1.0
    # correlation with the (row-normalised, symmetrised, off-diagonal) confusion
    S3 = np.array([[1, 0.9, 0.1], [0.9, 1, 0.5], [0.1, 0.5, 1]])
    C3 = np.array([[84, 15, 1], [15, 77, 8], [1, 8, 91]])
    corr = filters.similarity_confusion_correlation(S3, C3)
    assert corr["spearman"] == pytest.approx(1.0) and corr["pearson"] > 0.9 and corr["n_pairs"] == 3
    assert filters.similarity_confusion_correlation(S3, np.eye(3) * 10)["spearman"] is None


def test_confusion_matrix_from_a_loader():
    def model(x):  # logits = the pixel values: the "prediction" is the brightest channel
        return x.flatten(1)

    eye = torch.eye(3)
    loader = [{"pixel_values": eye[[0, 1, 2, 2]].view(4, 3, 1, 1), "labels": torch.tensor([0, 1, 2, 1])},
              (eye[[0]].view(1, 3, 1, 1), torch.tensor([2]))]
    C = filters.confusion_matrix(model, loader)
    assert C.tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]


# ------------------------------------------------------------------ plots


def test_plots_are_written(tmp_path, patch_resnet):
    adapter = UnlearnAdapter.attach(tm.build("resnet"))
    tm.randomize_filters(adapter.model)
    maps = filters.filter_maps(adapter)
    names = tm.NAMES
    S = filters.row_similarity(maps)
    C = np.array([[8, 1, 1, 0], [2, 7, 0, 1], [0, 1, 9, 0], [1, 0, 2, 7]])
    paths = [
        plots.plot_filter_usage(filters.filter_usage(maps), names, tmp_path / "usage.png"),
        plots.plot_similarity_confusion(S, C, names, tmp_path / "sim.png",
                                    correlation=filters.similarity_confusion_correlation(S, C)),
        *plots.plot_filter_maps(maps, names, tmp_path / "maps", per_page=2),
    ]
    assert len(paths) == 5  # 2 + 3 pages of maps (5 layers, 2 per page)
    hand, _ = patch_resnet
    x = _bright_patch(2)
    maps2 = saliency.saliency_maps(hand, x, 0)
    paths.append(plots.plot_saliency_overlays(x, {m: maps2[m] for m in saliency.DEFAULT_METHODS}, tmp_path / "overlay.png",
                                          row_labels=["a", "b"], cell_notes={"filter": ["x", "y"]},
                                          image_mean=[0.5] * 3, image_std=[0.5] * 3))
    fr = np.linspace(0, 1, 5)
    curves = {m: {"deletion": np.random.rand(3, 5), "insertion": np.random.rand(3, 5)} for m in saliency.METHODS}
    paths.append(plots.plot_auc_curves(fr, curves, tmp_path / "curves.png"))
    for p in paths:
        assert _png_ok(p), p
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ bad inputs


def test_bad_inputs_raise_clear_errors(patch_resnet):
    adapter, _ = patch_resnet
    x = _bright_patch(2)
    with pytest.raises(ValueError, match=r"Unknown class name 'zebra'.*Valid classes.*'ant'"):
        saliency.filter_saliency(adapter, x, "zebra")
    with pytest.raises(ValueError, match=r"Class id 9 is out of range.*0\.\.3"):
        saliency.gradcam(adapter, x, 9)
    with pytest.raises(ValueError, match=r"(?s)'nope' is not a layer this adapter filters.*embedder"):
        saliency.filter_saliency(adapter, x, 0, layer="nope")
    with pytest.raises(ValueError, match="3 classes for 2 images"):
        saliency.filter_saliency(adapter, x, [0, 1, 2])
    with pytest.raises(TypeError, match="UnlearnAdapter"):
        saliency.filter_saliency(tm.build("resnet"), x, 0)
    with pytest.raises(ValueError, match="saliency must be"):
        faithfulness.deletion_auc(adapter, x, torch.rand(3, 16, 16), 0)
    with pytest.raises(ValueError, match="steps must be"):
        faithfulness.insertion_auc(adapter, x, torch.rand(2, 16, 16), 0, steps=0)
    with pytest.raises(ValueError, match="Unknown saliency method"):
        saliency.saliency_maps(adapter, x, 0, methods=("lime",))
    vit = UnlearnAdapter.attach(tm.build("vit"))
    with pytest.raises(ValueError, match="matches several filtered layers"):
        saliency.resolve_layer(vit, "mlp.fc1")
    head_only = UnlearnAdapter.attach(tm.build("resnet"), target_modules=r".*classifier\.1").eval()
    with pytest.raises(ValueError, match="no spatial or token axis"):
        saliency.filter_saliency(head_only, tm.pixels(1), 0, layer="classifier.1")
    with pytest.raises(ValueError, match="No filtered layer has a spatial or token output"):
        saliency.default_saliency_layer(head_only, tm.pixels(1))


# ------------------------------------------------------------------ the job, end to end


@pytest.fixture(scope="module")
def digits_adapter(tmp_path_factory):
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    root = tmp_path_factory.mktemp("explain")
    names = [str(i) for i in range(10)]
    config = ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                          num_labels=10, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    torch.manual_seed(0)
    model = ResNetForImageClassification(config).eval()
    processor = ViTImageProcessor(do_resize=True, size={"height": 16, "width": 16}, image_mean=[0.5], image_std=[0.5])
    model.save_pretrained(root / "base")
    processor.save_pretrained(root / "base")
    adapter = UnlearnAdapter.attach(model, image_processor=processor)
    adapter.config.base_model_name_or_path = str(root / "base")
    tm.randomize_filters(adapter.model)
    adapter.save_pretrained(root / "wf")
    return root


def test_main_writes_report_and_plots(digits_adapter, capsys):
    out = digits_adapter / "out"
    report = explain_command.main(["--adapter", str(digits_adapter / "wf"), "--dataset", "digits", "--split", "test",
                     "--max_samples", "80", "--images_per_class", "1", "--auc_images", "6", "--classes", "0", "3",
                     "--steps", "4", "--batch_size", "32", "--no_progress", "--output_dir", str(out)])
    assert "wrote" in capsys.readouterr().out
    data = json.loads((out / "explain.json").read_text())
    assert data["saliency_layer"] == "resnet.encoder.stages.1.layers.0.layer.1.convolution"
    assert data["confusion"]["n_samples"] == 80 and len(data["similarity"]["order"]) == 10
    assert data["faithfulness"]["n_images"] == 6
    assert set(data["faithfulness"]["summary"]) == {"filter", "filter_abs", "gradcam", "random"}
    assert set(data["faithfulness"]["empty_maps"]) == set(data["saliency_methods"])
    assert data["classes_explained"] == ["0", "3"] and set(data["overlay_aucs"]) == {"0", "3"}
    md = (out / "explain.md").read_text()
    assert "deletion AUC" in md and "Row similarity" in md
    for name in ("filter_usage.png", "filter_maps_01.png", "similarity_confusion.png", "auc_curves.png",
                 "saliency_000_0.png", "saliency_003_3.png"):
        assert _png_ok(out / name), name
    assert sorted(data["figures"]) == sorted(p.name for p in out.glob("*.png"))
    assert report["faithfulness"]["n_images"] == 6


def test_main_rejects_bad_class_and_layer_before_reading_data(digits_adapter):
    wf = str(digits_adapter / "wf")
    with pytest.raises(ValueError, match=r"Class id 42 is out of range.*0\.\.9"):
        explain_command.main(["--adapter", wf, "--dataset", "no-such-dataset", "--classes", "42", "--output_dir", "x"])
    with pytest.raises(ValueError, match=r"(?s)'fc9' is not a layer this adapter filters.*stages"):
        explain_command.main(["--adapter", wf, "--dataset", "no-such-dataset", "--layer", "fc9", "--output_dir", "x"])


def test_command_options_are_dataclasses_with_config_and_checks(tmp_path):
    from hf_unlearn.commands.arguments import DataArguments, RuntimeArguments, parse_arguments

    config = tmp_path / "explain.yaml"
    config.write_text("images_per_class: 3\nclasses: [Coat, '4']\nmethods: [filter, random]\nno_plots: true\n"
                      "dataset: digits\n")
    kinds = (explain_command.ExplainArguments, DataArguments, RuntimeArguments)
    args, data, runtime = parse_arguments(kinds, ["--config", str(config), "--adapter", "a", "--output_dir", "o",
                                                  "--images_per_class", "5", "--cpu"])
    assert (args.images_per_class, args.classes, args.methods, args.no_plots) == (5, ["Coat", "4"],
                                                                                ["filter", "random"], True)
    assert data.dataset == "digits" and runtime.cpu and not runtime.no_progress
    assert (args.auc_images, args.steps, args.baseline, args.batch_size, args.seed) == (200, 16, "zero", 64, 0)
    with pytest.raises(ValueError, match="--steps must be >= 1, got 0"):
        explain_command.main(["--adapter", "a", "--output_dir", "o", "--steps", "0"])
    with pytest.raises(SystemExit):  # argparse: an unknown method is a usage error
        parse_arguments(kinds, ["--adapter", "a", "--output_dir", "o", "--methods", "lime"])


def test_plain_transformers_model_takes_class_names():
    model = tm.build("resnet")
    x = tm.pixels(2)
    layer = "resnet.encoder.stages.1.layers.0.layer.1.convolution"
    assert torch.equal(saliency.gradcam(model, x, "CAT", layer=layer), saliency.gradcam(model, x, 2, layer=layer))
    with pytest.raises(ValueError, match=r"Unknown class name 'zebra'.*Valid classes.*'ant'"):
        saliency.gradcam(model, x, "zebra", layer=layer)
    with pytest.raises(ValueError, match=r"Class id 4 is out of range"):
        saliency.gradcam(model, x, 4, layer=layer)
