"""evaluate_unlearning end to end (tiny models, sklearn digits), the evaluate recipe and the retrain job."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from ddp import launch_two_ranks
from hf_unlearn import UnlearnAdapter, WeightFilterConfig
from hf_unlearn.data.loaders import build_dataloader, class_subset, subsample
from hf_unlearn.data.loading import load_image_dataset
from hf_unlearn.evaluation.metrics import accuracy_matrix, set_accuracy
from hf_unlearn.evaluation.suite import evaluate_unlearning
from hf_unlearn.modeling import penultimate_features, random_reference_model
from hf_unlearn.evaluation.report import to_jsonable
from hf_unlearn.presets import make_image_processor
from tiny_models import build

N = 10  # digits classes


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: on a small machine shared with other jobs, two spinning OpenMP threads can
    make these tiny models 10-50x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
FILTERED = ("stages.1.layers.0.layer.1.convolution", "stages.1.layers.0.shortcut.convolution")


def digits(split):
    return load_image_dataset("digits", split=split)


def rgb_processor():
    return make_image_processor(8, [0.5] * 3, [0.5] * 3)


def hand_built_adapter():
    """A tiny ResNet whose logit k IS pooled channel k of the last block, with exact 0/1 filters.

    The classifier is the identity on channels 0..9 (no bias); the BatchNorms after the two
    filtered convolutions of the last block map 0 to 0; filters use the clamp parametrisation with
    values exactly 1, except row c, which is 0 on channel c. So row c makes channel c (and with it
    logit c) exactly 0 and leaves every other channel bit-identical: the predictions under row c are
    the argmax of the base features with feature c set to 0, computable without the adapter.
    """
    model = build("resnet", num_labels=N)
    names = digits("test").class_names
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {n: i for i, n in enumerate(names)}
    with torch.no_grad():
        head = model.classifier[1]
        head.weight.zero_()
        head.bias.zero_()
        head.weight[:, :N] = torch.eye(N)
        block = model.resnet.encoder.stages[1].layers[0]
        for bn in (block.layer[1].normalization, block.shortcut.normalization):
            bn.running_mean.zero_()
            bn.bias.zero_()
    config = WeightFilterConfig(target_modules=list(FILTERED), parametrization="clamp")
    adapter = UnlearnAdapter.attach(model, config, image_processor=rgb_processor())
    with torch.no_grad():
        for layer in adapter.filter_layers().values():
            theta = layer.weight_filter_theta["default"]
            theta.fill_(1.0)
            theta[torch.arange(N), torch.arange(N)] = 0.0
    return adapter.eval()


def expected_predictions(adapter, data, forget_sets):
    """Predictions under each forget set, from the base model's features alone."""
    loader = build_dataloader(data, rgb_processor(), num_channels=3, batch_size=512, shuffle=False, seed=0,
                              progress=False)
    feats, labels = [], []
    for batch in loader:
        feats.append(penultimate_features(adapter, batch["pixel_values"]))
        labels.append(batch["labels"])
    feats, labels = torch.cat(feats)[:, :N], torch.cat(labels).numpy()
    preds = {}
    for key, classes in forget_sets.items():
        masked = feats.clone()
        masked[:, list(classes)] = 0.0
        preds[key] = masked.argmax(-1).numpy()
    return preds, labels


# --------------------------------------------------------------------------------------------
# accuracy: exact matrix, sampled estimate, a set
# --------------------------------------------------------------------------------------------


def test_matrix_of_a_hand_built_adapter_is_exact():
    adapter = hand_built_adapter()
    train, test = subsample(digits("train"), 600, seed=0), digits("test")  # the matrix needs the whole test split
    x = next(iter(build_dataloader(test, rgb_processor(), num_channels=3, batch_size=16, shuffle=False, seed=0,
                                   progress=False)))["pixel_values"]
    assert torch.all(penultimate_features(adapter, x, forget=4)[:, 4] == 0)  # the helper honours a selection
    assert penultimate_features(adapter, x, forget=4)[:, 5].abs().sum() > 0

    preds, labels = expected_predictions(adapter, test, {c: [c] for c in range(N)})
    expected = accuracy_matrix(preds, labels, N)
    report = evaluate_unlearning(adapter, train, test, progress=False)
    acc = report["accuracy"]
    assert acc["method"] == "exact" and report["settings"]["accuracy_method"] == "exact"
    np.testing.assert_array_equal(acc["matrix"], expected)
    assert acc["forget_acc_per_class"] == pytest.approx(np.diag(expected).tolist())
    assert acc["mean_forget_acc"] < 5.0  # logit c is 0, every other logit >= 0
    # every metric per row, for the adapter and its base (row "None")
    for key in ("mia_efficacy", "zrf", "probe", "probe_auc"):
        for model in ("unlearned", "base"):
            values = report[key][model]
            assert len(values) == N and all(isinstance(v, float) for v in values), (key, model)
    assert all(0.0 <= v <= 1.0 for v in report["zrf"]["unlearned"])
    assert report["filters_off_pct"] == pytest.approx([100.0 * 2 / 32] * N)  # one of 16 channels in 2 layers

    # above the exact limit: FA stays exact, RA is the sampled estimate with its stderr
    sampled = evaluate_unlearning(adapter, train, test, progress=False, exact_limit=5, samples_per_row=40,
                                  rows=[1, 4, 7])
    s = sampled["accuracy"]
    assert s["method"] == "sampled" and s["stderr"] > 0 and s["n_pairs"] == 3 * 40
    assert [s["forget_acc_per_class"][c] for c in (1, 4, 7)] == pytest.approx([expected[c][c] for c in (1, 4, 7)])
    exact_ra = np.mean([acc["retain_acc_per_class"][c] for c in (1, 4, 7)])
    assert abs(s["mean_retain_acc"] - exact_ra) < 5 * s["stderr"] + 1e-9
    assert sampled["mia_efficacy"]["unlearned"][4] is not None and sampled["mia_efficacy"]["unlearned"][0] is None

    # one set (rows multiplied): FA/RA of that set, next to the base
    preds_set, _ = expected_predictions(adapter, test, {"set": [2, 5], "base": []})
    one_set = evaluate_unlearning(adapter, train, test, forget=["2", 5], progress=False)
    want = set_accuracy(preds_set["set"], labels, [2, 5])
    base = set_accuracy(preds_set["base"], labels, [2, 5])
    got = one_set["accuracy"]
    assert got["forget_acc"] == pytest.approx(want["forget_acc"]) and got["retain_acc"] == pytest.approx(want["retain_acc"])
    assert got["base_retain_acc"] == pytest.approx(base["retain_acc"])
    assert set(one_set["mia_efficacy"]) == {"unlearned", "base"} and one_set["forget_classes"] == ["2", "5"]

    # an exported row is a plain model that records what it forgot
    exported = evaluate_unlearning(adapter.export(forget=4), train, test, image_processor=rgb_processor(),
                                   progress=False)
    assert exported["forget_classes"] == ["4"] and exported["settings"]["target"] == "model"
    assert exported["accuracy"]["forget_acc"] == pytest.approx(expected[4][4])
    assert exported["accuracy"]["retain_acc"] == pytest.approx(acc["retain_acc_per_class"][4])
    assert "base" not in exported["mia_efficacy"]  # no base_model given


@pytest.mark.parametrize("kind", ["resnet", "convnext", "vit"])
def test_penultimate_features_are_the_pooled_output(kind):
    from tiny_models import pixels

    model = build(kind)
    x = pixels()
    with torch.no_grad():
        if kind == "vit":
            want = model.vit(x).last_hidden_state[:, 0]  # CLS token after the final layernorm
        else:
            want = getattr(model, kind)(x).pooler_output.flatten(1)
        logits = model(pixel_values=x).logits
    feats, got_logits = penultimate_features(model, x, return_logits=True)
    torch.testing.assert_close(feats, want)
    torch.testing.assert_close(got_logits, logits)
    adapter = UnlearnAdapter.attach(model)
    assert penultimate_features(adapter, x, forget=[1, 2]).shape == want.shape
    with pytest.raises(ValueError, match="needs an UnlearnAdapter"):
        penultimate_features(build(kind), x, forget=1)


def test_zrf_of_a_random_model_against_itself_is_one():
    config = build("resnet", num_labels=N).config
    names = digits("test").class_names
    config.id2label, config.label2id = dict(enumerate(names)), {n: i for i, n in enumerate(names)}
    model = random_reference_model(config, seed=7)
    same = evaluate_unlearning(model, digits("train"), digits("test"), forget=3, seed=7,
                               image_processor=rgb_processor(), progress=False)
    assert same["zrf"]["unlearned"] == 1.0
    other = evaluate_unlearning(model, digits("train"), digits("test"), forget=3, seed=8,
                                image_processor=rgb_processor(), progress=False)
    assert other["zrf"]["unlearned"] < 1.0


# --------------------------------------------------------------------------------------------
# the retrain job, MIA against it, the probe, and the evaluate recipe
# --------------------------------------------------------------------------------------------

FORGET = 3
RETRAIN_EPOCHS = 8


@pytest.fixture(scope="module")
def retrained(digits_base, tmp_path_factory):
    """The digits base recipe retrained without class 3 (the job, reading the base's config)."""
    import hf_unlearn.training.base
    from hf_unlearn.commands.retrain import main

    base_dir, _ = digits_base
    root = tmp_path_factory.mktemp("retrain")
    seen = []
    original = hf_unlearn.training.base.build_dataloader

    def spy(data, *args, **kwargs):
        if kwargs.get("shuffle"):  # the training loader
            seen.append(np.asarray(data.dataset[data.label_column]))
        return original(data, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hf_unlearn.training.base, "build_dataloader", spy)  # the name train_base calls
        # the base recipe, with one flag overriding it (fewer epochs keep the test fast)
        summary = main(["--base_dir", str(base_dir), "--classes", str(FORGET), "--output_dir", str(root),
                        "--epochs", str(RETRAIN_EPOCHS), "--num_threads", "1"])
    return root, summary, seen


def test_retrain_job_excludes_the_class_and_keeps_all_outputs(retrained, digits_base):
    from transformers import AutoModelForImageClassification

    from hf_unlearn.training.retrain import retrain_dirs_from_root

    root, summary, seen = retrained
    assert len(seen) == 1 and len(seen[0]) > 0
    assert FORGET not in set(seen[0].tolist()) and set(seen[0].tolist()) == set(range(N)) - {FORGET}
    folder = root / f"class-{FORGET}"
    info = json.loads((folder / "retrain.json").read_text())
    assert info["class_ids"] == [FORGET] and info["train_class_counts"][FORGET] == 0
    assert info["num_train_examples"] == len(seen[0]) and info["wall_time_s"] > 0
    base_metrics = digits_base[1]
    assert info["seed"] == base_metrics["seed"] and info["epochs"] == RETRAIN_EPOCHS  # base recipe, flags win
    config = (folder / "train_base_config.yaml").read_text()
    assert "preset: resnet-micro" in config and "no_progress: true" in config  # read from the base folder
    model = AutoModelForImageClassification.from_pretrained(folder)
    assert model.config.num_labels == N and model.classifier[1].out_features == N
    assert retrain_dirs_from_root(root) == {FORGET: str(folder)}
    assert summary["models"][f"class-{FORGET}"]["wall_time_s"] == info["wall_time_s"]
    assert json.loads((root / "retrain_summary.json").read_text())["total_wall_time_s"] > 0


def test_mia_high_without_the_class_low_on_the_original_and_probe(retrained, digits_base):
    root, _, _ = retrained
    base_dir, _ = digits_base
    retrain_dir = root / f"class-{FORGET}"
    report = evaluate_unlearning(str(retrain_dir), digits("train"), digits("test"), forget=FORGET,
                                 base_model=str(base_dir), retrain_dirs={FORGET: str(retrain_dir)}, progress=False)
    mia = report["mia_efficacy"]
    assert mia["unlearned"] > 90 and mia["retrain"] == mia["unlearned"]  # never saw class 3
    assert mia["base"] < 30  # trained on it
    assert report["accuracy"]["forget_acc"] == 0.0 and report["accuracy"]["base_forget_acc"] > 80
    assert report["retrain"]["forget_acc"] == 0.0
    assert report["probe"]["base"] > 90 and report["probe_auc"]["base"] > 0.97  # the base tells 3 apart
    assert report["zrf"]["unlearned"] > report["zrf"]["base"]
    few = report["few_shot_probe"]
    assert few["retrain"] == few["unlearned"]
    assert few["base"] > 85 and few["retrain"] < few["base"] - 15  # 5 shots: only features trained on 3 find it


def test_logit_masking_is_exposed_by_the_few_shot_probe(retrained, digits_base):
    """The control: FA 0 and MIA-efficacy like the retrain, yet the features are the base's. The
    few-shot probe says so: exactly the base's value, far above the retrain's."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from hf_unlearn.baselines import get_baseline

    root, _, _ = retrained
    base_dir, _ = digits_base
    base = AutoModelForImageClassification.from_pretrained(base_dir)
    masked = get_baseline("logit_mask").unlearn(base, [FORGET]).model
    report = evaluate_unlearning(masked, digits("train"), digits("test"), base_model=str(base_dir),
                                 retrain_dirs={FORGET: str(root / f"class-{FORGET}")},
                                 image_processor=AutoImageProcessor.from_pretrained(base_dir), progress=False)
    assert report["accuracy"]["forget_acc"] == 0.0  # looks perfect on FA/RA ...
    assert report["mia_efficacy"]["unlearned"] > 90  # ... and on MIA
    few = report["few_shot_probe"]
    assert few["unlearned"] == few["base"]  # ... but nothing left the representation
    assert few["unlearned"] > few["retrain"] + 15
    assert report["settings"]["few_shot_shots"] == 5 and report["settings"]["few_shot_draws"] == 10


def test_cka_and_relearning_read_as_gaps_to_the_retrain(retrained, digits_base, tmp_path):
    """Logit masking again: CKA to the retrain is exactly the base's (same features). Under the same k-shot
    budget the class comes back in the base far faster than in the retrain; the masked model's -1e4 bias
    resists a small head budget, which is why relearning is read next to the probe, never alone."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from hf_unlearn.baselines import get_baseline
    from hf_unlearn.evaluation.report import write_report

    root, _, _ = retrained
    base_dir, _ = digits_base
    base = AutoModelForImageClassification.from_pretrained(base_dir)
    masked = get_baseline("logit_mask").unlearn(base, [FORGET]).model
    report = evaluate_unlearning(masked, digits("train"), digits("test"), base_model=str(base_dir),
                                 retrain_dirs={FORGET: str(root / f"class-{FORGET}")}, few_shot_shots=3,
                                 relearn_shots=[1, 5], relearn_steps=20, relearn_modes=["head"],
                                 image_processor=AutoImageProcessor.from_pretrained(base_dir), progress=False)
    cka = report["cka_to_retrain"]
    assert cka["unlearned"] == pytest.approx(cka["base"]) and 0.0 < cka["base"] < 0.99
    head5 = report["relearn"]["head-5shot"]
    assert set(head5) == {"unlearned", "base", "retrain"} and set(report["relearn"]) == {"head-1shot", "head-5shot"}
    assert head5["base"] > head5["retrain"] + 15, head5  # features that hold the class give it back at once
    assert head5["unlearned"] < head5["retrain"], head5  # a -1e4 bias is out of reach of 20 Adam steps
    assert report["settings"]["relearn_shots"] == [1, 5] and report["settings"]["few_shot_shots"] == 3
    assert "from `shots` (3)" in report["definitions"]["few-shot probe"]
    _, md = write_report(report, tmp_path / "eval")
    text = md.read_text()
    assert "3-shot probe (%)" in text and "Linear CKA to the retrain" in text
    assert "k-shot relearning, head fine-tune, 5 samples per class, 20 steps" in text


def test_relearning_an_adapter_row_uses_the_exported_model():
    """Adapter rows: the unlearned model that is fine-tuned is the row exported (no adapter to switch off)."""
    adapter = hand_built_adapter()
    train, test = subsample(digits("train"), 400, seed=0), digits("test")
    report = evaluate_unlearning(adapter, train, test, rows=[2], relearn_shots=[2], relearn_steps=3,
                                 relearn_modes=["full"], relearn_max_test=100, progress=False)
    values = report["relearn"]["full-2shot"]
    assert set(values) == {"unlearned", "base"} and values["unlearned"][2] is not None
    assert values["unlearned"][0] is None  # only the requested row
    assert "cka_to_retrain" not in report  # no retrain reference, no CKA


def test_evaluate_recipe_writes_report_and_plots(retrained, digits_base, tmp_path):
    from transformers import AutoModelForImageClassification

    from hf_unlearn.commands.evaluate import main
    from tiny_models import randomize_filters

    root, _, _ = retrained
    base_dir, _ = digits_base
    adapter = UnlearnAdapter.attach(AutoModelForImageClassification.from_pretrained(base_dir))
    randomize_filters(adapter.model, seed=0, low=-2.0, high=6.0)
    adapter.save_pretrained(tmp_path / "adapter")
    out = tmp_path / "eval"
    report = main(["--adapter", str(tmp_path / "adapter"), "--dataset", "digits", "--rows", "3", "5",
                   "--max_train_samples", "700", "--max_test_samples", "250",
                   "--retrain_root", str(root), "--output_dir", str(out), "--no_progress"])
    data = json.loads((out / "report.json").read_text())
    assert data["retrain"]["forget_acc_per_class"][FORGET] == 0.0 and data["retrain"]["forget_acc_per_class"][5] is None
    assert data["mia_efficacy"]["retrain"][FORGET] > 90 and data["accuracy"]["method"] == "exact"
    assert report["settings"]["rows"] == [3, 5]
    md = (out / "report.md").read_text()
    assert "MIA-efficacy" in md and "ZRF" in md and "Linear probe" in md and "retrain FA" in md
    for name in ("accuracy_matrix.png", "forget_retain.png", "filter_sparsity.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_command_options_are_dataclasses_and_a_config_prefills_them(tmp_path):
    from hf_unlearn.commands.arguments import parse_arguments
    from hf_unlearn.commands.evaluate import ARGUMENT_TYPES

    config = tmp_path / "eval.yaml"
    config.write_text("adapter: runs/wf\ndataset: digits\nset_sizes: [2, 3]\nrelearn_shots: [1, 5]\n")
    target, data, splits, evaluation, runtime = parse_arguments(
        ARGUMENT_TYPES, ["--config", str(config), "--output_dir", str(tmp_path / "out"), "--rows", "3", "coat",
                         "--relearn_shots", "25", "--no_plots", "--cpu"])
    assert (target.adapter, target.model, target.rows) == ("runs/wf", None, ["3", "coat"])
    assert data.dataset == "digits" and splits.test_split == "test"
    assert evaluation.set_sizes == [2, 3] and evaluation.relearn_shots == [25]  # the command line wins
    assert evaluation.relearn_modes == ["head", "full"] and evaluation.no_plots and not evaluation.sets_only
    assert runtime.cpu and not runtime.no_progress
    with pytest.raises(SystemExit):  # an unknown key names the valid ones
        config.write_text("adaptr: runs/wf\n")
        parse_arguments(ARGUMENT_TYPES, ["--config", str(config), "--output_dir", "x"])


@pytest.mark.parametrize("argv, message", [
    (["--output_dir", "x"], "exactly one of --adapter"),
    (["--adapter", "a", "--model", "m", "--output_dir", "x"], "exactly one of --adapter"),
    (["--adapter", "a", "--output_dir", "x", "--relearn_modes", "head", "last"], r"unknown mode\(s\) \['last'\]"),
])
def test_evaluate_command_refuses_bad_options_before_loading_anything(argv, message, tmp_path):
    from hf_unlearn.commands.evaluate import main

    with pytest.raises(ValueError, match=message):
        main(argv)


def test_cli_evaluate_runs_the_command_module(capsys):
    from hf_unlearn.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--adapter" in out and "--few_shot_shots" in out and "--config" in out


# --------------------------------------------------------------------------------------------
# DDP: two processes give the numbers of one
# --------------------------------------------------------------------------------------------

DDP_CASES = {"exact": {"rows": [1, 4]}, "sampled": {"rows": [1, 4], "exact_limit": 5, "samples_per_row": 30}}


def ddp_splits():
    # sizes that do not divide into 2 ranks x batches of 64: the padding must be dropped again
    return subsample(digits("train"), 601, seed=0), subsample(digits("test"), 203, seed=0)


def _ddp_worker(out_prefix):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    adapter = hand_built_adapter()
    train, test = ddp_splits()
    results = {}
    for name, kwargs in DDP_CASES.items():
        results[name] = to_jsonable(evaluate_unlearning(adapter, train, test, accelerator=accelerator, batch_size=64,
                                                        progress=False, **kwargs))
    results["world"] = accelerator.num_processes
    with open(f"{out_prefix}.rank{accelerator.process_index}.json", "w") as f:
        json.dump(results, f)


def _comparable(report):
    report = dict(report)
    settings = dict(report.pop("settings"))
    for key in ("eval_time_s", "num_processes"):
        settings.pop(key)
    report["settings"] = settings
    return report


def _assert_close(a, b, path=""):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and b is not None:
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6), path
    else:
        assert a == b, path


@pytest.mark.slow  # two spawned gloo ranks running the whole suite: ~30 s on the shared 2-core box
def test_one_and_two_processes_agree(tmp_path):
    adapter = hand_built_adapter()
    train, test = ddp_splits()
    single = {name: to_jsonable(evaluate_unlearning(adapter, train, test, batch_size=64, progress=False, **kwargs))
              for name, kwargs in DDP_CASES.items()}
    prefix = tmp_path / "ddp"
    launch_two_ranks(_ddp_worker, str(prefix))
    for rank in (0, 1):
        got = json.loads((tmp_path / f"ddp.rank{rank}.json").read_text())
        assert got["world"] == 2
        for name in DDP_CASES:
            assert got[name]["settings"]["num_processes"] == 2
            _assert_close(_comparable(got[name]), _comparable(single[name]), name)


# --------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    train, test = digits("train"), digits("test")
    adapter = hand_built_adapter()

    four_classes = build("resnet")  # 4 outputs, digits has 10
    with pytest.raises(ValueError, match="10 classes but the model has num_labels=4"):
        evaluate_unlearning(four_classes, train, test, forget=1, image_processor=rgb_processor(), progress=False)

    empty = replace(test, dataset=test.dataset.select([]), num_rows=0)
    with pytest.raises(ValueError, match="test split 'test' of 'digits' is empty"):
        evaluate_unlearning(adapter, train, empty, progress=False)

    without_3 = class_subset(test, [3], keep=False)
    with pytest.raises(ValueError, match=r"no samples of the forget class\(es\) 3 \('3'\)"):
        evaluate_unlearning(adapter, train, without_3, forget=3, progress=False)
    with pytest.raises(ValueError, match="no samples of the forget class"):
        evaluate_unlearning(adapter, train, without_3, progress=False)  # every row, class 3 included
    with pytest.raises(ValueError, match="train split .* no samples of the forget class"):
        evaluate_unlearning(adapter, class_subset(train, [6], keep=False), test, rows=[6], progress=False)

    grey = make_image_processor(8, [0.5], [0.5])
    with pytest.raises(ValueError, match="does not fit the model"):
        evaluate_unlearning(adapter, train, test, image_processor=grey, progress=False)

    plain = build("resnet", num_labels=N)
    plain.config.id2label = adapter.base_model.config.id2label
    with pytest.raises(ValueError, match="pass forget= naming the class"):
        evaluate_unlearning(plain, train, test, image_processor=rgb_processor(), progress=False)
    with pytest.raises(ValueError, match="Unknown class name 'eleven'"):
        evaluate_unlearning(adapter, train, test, forget="eleven", progress=False)
    with pytest.raises(ValueError, match="keep all N outputs"):
        evaluate_unlearning(adapter, train, test, rows=[1], retrain_dirs={1: build("resnet")}, progress=False)
    with pytest.raises(ValueError, match=r"No retrain reference for \[\[2\]\].*recipes/retrain.py"):
        evaluate_unlearning(adapter, train, test, rows=[1, 2], retrain_dirs={1: "unused"}, require_retrain=True,
                            progress=False)
    with pytest.raises(ValueError, match="shots=100000 samples per class"):
        evaluate_unlearning(adapter, train, test, rows=[1], relearn_shots=[100_000], progress=False)
    with pytest.raises(ValueError, match="budget of 0 steps"):
        evaluate_unlearning(adapter, train, test, rows=[1], relearn_shots=[5], relearn_steps=0, progress=False)


def test_retrain_command_line_units_folders_and_resume(retrained, digits_base, tmp_path):
    from hf_unlearn.commands.retrain import main, parse_retrain_args
    from hf_unlearn.training.retrain import retrain_dirs_from_root, retrain_folder_name, retrain_units

    root, _, _ = retrained
    base_dir, _ = digits_base
    names = digits("train").class_names
    every, job = parse_retrain_args(["--base_dir", str(base_dir), "--classes", "all", "--output_dir", str(tmp_path)])
    assert every.preset == "resnet-micro" and every.dataset == "digits" and every.output_dir == str(tmp_path)
    assert retrain_units(job.classes, names, together=job.together) == [[c] for c in range(N)]
    _, job = parse_retrain_args(["--base_dir", str(base_dir), "--classes", "5", "2", "--together", "--output_dir", "x"])
    assert retrain_units(job.classes, names, together=job.together) == [[2, 5]]
    assert retrain_folder_name([5, 2]) == "classes-2-5"
    with pytest.raises(SystemExit):
        parse_retrain_args(["--base_dir", str(base_dir), "--classes", "3", "--output_dir", str(base_dir)])
    _, job = parse_retrain_args(["--base_dir", str(base_dir), "--classes", "eleven", "--output_dir", "x"])
    with pytest.raises(ValueError, match="Unknown class name"):
        retrain_units(job.classes, names)

    (tmp_path / "classes-2-5").mkdir()
    (tmp_path / "classes-2-5" / "config.json").write_text("{}")
    (tmp_path / "class-7").mkdir()  # unfinished: no config.json
    assert retrain_dirs_from_root(tmp_path) == {(2, 5): str(tmp_path / "classes-2-5")}

    resumed = main(["--base_dir", str(base_dir), "--classes", str(FORGET), "--output_dir", str(root),
                    "--skip_existing"])
    assert resumed["models"][f"class-{FORGET}"]["skipped"] is True
