"""Base-model presets and the train_base loop (recipes/train_base.py), on 8x8 digits, offline."""

import json
import os

import pytest
import torch
import yaml

import datasets

from ddp import launch_two_ranks
from hf_unlearn.commands.train_base import TrainBaseArguments, parse_train_base_args
from hf_unlearn.training.base import CONFIG_FILENAME, METRICS_FILENAME, resolve_arguments, train_base
from hf_unlearn.presets import MICRO_PRESETS, PRESETS, build_preset, preset_config, tiny_preset

DIGITS = {i: str(i) for i in range(10)}
# One torch thread: these models are tiny, and on a small shared machine several threads
# contending for the cores make a run many times slower, not faster.
FAST = {"num_threads": 1, "no_progress": True}


@pytest.fixture(autouse=True)
def hf_offline(monkeypatch, tmp_path):
    """No network, HF caches in tmp_path (module constants too: they are read at import)."""
    import huggingface_hub.constants as hub_constants

    home = tmp_path / "hf_home"
    for name, value in {"HF_HOME": home, "HF_DATASETS_CACHE": home / "datasets", "HF_HUB_OFFLINE": 1,
                        "HF_DATASETS_OFFLINE": 1}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    monkeypatch.setattr(datasets.config, "HF_MODULES_CACHE", home / "modules")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(home / "hub"))
    threads = torch.get_num_threads()
    yield home
    torch.set_num_threads(threads)  # the runs below use one thread (see FAST)
    from accelerate.state import AcceleratorState, GradientState

    # train_base creates an Accelerator; leave no process-wide state to other tests
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


# -- presets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_and_run(name):
    model, processor = build_preset(name, num_labels=10, id2label=DIGITS)
    size = processor.size["height"]
    assert size == (8 if name in MICRO_PRESETS else 28)
    assert model.config.num_channels == 3 and model.config.id2label == DIGITS  # RGB by default (pipelines feed RGB)
    assert list(processor.image_mean) == [0.2860] * 3
    logits = model(pixel_values=torch.randn(2, 3, size, size)).logits
    assert logits.shape == (2, 10)


def test_preset_sizes_and_module_names():
    model, _ = build_preset("resnet-tiny", num_labels=10)
    assert 250_000 < sum(p.numel() for p in model.parameters()) < 350_000
    names = {name for name, _ in model.named_modules()}
    for stage in range(3):
        for k in range(2):
            assert f"resnet.encoder.stages.{stage}.layers.0.layer.{k}.convolution" in names
    config, processor = preset_config("vit-tiny28", 10, image_size=28, image_mean=[0.3053], image_std=[0.3759])
    assert (config.image_size, config.patch_size, config.hidden_size, config.num_hidden_layers) == (28, 4, 64, 4)
    assert list(processor.image_std) == [0.3759] * 3
    # digits at 28x28 for a 28x28 preset (upsampled by the processor)
    model, processor = build_preset("convnext-tiny28", num_labels=10)
    assert model.config.patch_size == 2 and processor.size == {"height": 28, "width": 28}
    assert tiny_preset("vit") == "vit-micro"


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError) as info:
        build_preset("resnet-huge", num_labels=10)
    assert "resnet-tiny" in str(info.value) and "vit-tiny28" in str(info.value)


# -- training -------------------------------------------------------------------------------------


def test_train_base_on_digits_saves_a_reloadable_model(tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from hf_unlearn.data.loaders import build_dataloader
    from hf_unlearn.data.loading import load_image_dataset

    out = tmp_path / "base-digits"
    metrics = train_base(TrainBaseArguments(
        preset="resnet-micro", dataset="digits", epochs=2, batch_size=32, learning_rate=1e-2, seed=0,
        output_dir=str(out), **FAST,
    ))
    assert metrics["test_accuracy"] > 0.5  # chance is 0.1; ~0.9 with this seed
    on_disk = json.loads((out / METRICS_FILENAME).read_text())
    assert on_disk["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    for key in ("train_time_s", "epochs", "seed", "dataset", "preset", "torch_version", "transformers_version"):
        assert key in on_disk
    assert on_disk["epochs"] == 2 and on_disk["dataset"] == "digits" and on_disk["preset"] == "resnet-micro"
    assert on_disk["machine"]["cpu_count"] == os.cpu_count() and on_disk["machine"]["platform"]
    assert on_disk["num_eval_examples"] == 360 and len(on_disk["epoch_times_s"]) == 2
    assert (out / "model.safetensors").is_file() and (out / "preprocessor_config.json").is_file()
    config = yaml.safe_load((out / CONFIG_FILENAME).read_text())
    assert config["preset"] == "resnet-micro" and config["learning_rate"] == 0.01

    model = AutoModelForImageClassification.from_pretrained(str(out)).eval()
    processor = AutoImageProcessor.from_pretrained(str(out))
    assert model.config.id2label == DIGITS and model.config.label2id == {v: k for k, v in DIGITS.items()}
    assert list(processor.image_mean) == pytest.approx([0.3053] * 3)  # digits statistics were used
    # the reloaded model reproduces the reported accuracy
    test = load_image_dataset("digits", split="test")
    loader = build_dataloader(test, processor, num_channels=model.config.num_channels, batch_size=512, shuffle=False, seed=0,
                              progress=False)
    with torch.no_grad():
        correct = sum(int((model(pixel_values=b["pixel_values"]).logits.argmax(-1) == b["labels"]).sum())
                      for b in loader)
    assert correct / len(test) == pytest.approx(metrics["test_accuracy"])


def test_fine_tune_a_hub_checkpoint_from_the_cache(tmp_path, hf_offline):
    """--model_name_or_path: an RGB checkpoint with 4 classes gets a new 10-class head for grey digits."""
    from transformers import AutoModelForImageClassification, ResNetConfig, ResNetForImageClassification

    from hf_unlearn.presets import make_image_processor
    from hf_unlearn.testing import lay_out_hub_cache

    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                          layer_type="basic", id2label={0: "ant", 1: "bee", 2: "cat", 3: "dog"})
    folder = tmp_path / "stand-in"
    ResNetForImageClassification(config).save_pretrained(folder)
    make_image_processor(8, [0.5] * 3, [0.5] * 3).save_pretrained(folder)
    lay_out_hub_cache(hf_offline, "test-org/tiny-rgb-resnet", folder)

    out = tmp_path / "fine-tuned"
    metrics = train_base(TrainBaseArguments(
        model_name_or_path="test-org/tiny-rgb-resnet", dataset="digits", epochs=1, batch_size=32,
        learning_rate=1e-2, max_train_samples=300, max_eval_samples=100, output_dir=str(out), **FAST,
    ))
    assert metrics["num_train_examples"] == 300 and metrics["num_eval_examples"] == 100
    assert metrics["model_name_or_path"] == "test-org/tiny-rgb-resnet" and metrics["preset"] is None
    model = AutoModelForImageClassification.from_pretrained(str(out))
    assert model.config.num_channels == 3 and model.config.num_labels == 10
    assert model.config.id2label == DIGITS


# -- command line and --config ----------------------------------------------------------------------


def test_config_file_prefills_and_flags_win(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump({"preset": "resnet-tiny", "epochs": 3, "batch_size": 64,
                                    "output_dir": str(tmp_path / "o")}))
    args = parse_train_base_args(["--config", str(path), "--epochs", "5"])
    assert (args.preset, args.epochs, args.batch_size, args.output_dir) == ("resnet-tiny", 5, 64, str(tmp_path / "o"))
    assert args.learning_rate == 2e-3  # preset default
    swapped = parse_train_base_args(["--config", str(path), "--model_name_or_path", "google/vit-base-patch16-224"])
    assert swapped.preset is None and swapped.learning_rate == 5e-5
    for spelling in ("--model_name_or_path=x", "--model-name-or-path=x"):
        swapped = parse_train_base_args(["--config", str(path), spelling])
        assert swapped.preset is None and swapped.model_name_or_path == "x", spelling
    with pytest.raises(SystemExit):  # both given as flags: nothing to replace, a usage error
        parse_train_base_args(["--preset", "resnet-tiny", "--model_name_or_path", "x", "--output_dir", "o"])
    path.write_text(yaml.safe_dump({"preset": "resnet-tiny", "epoch": 3}))
    with pytest.raises(SystemExit):
        parse_train_base_args(["--config", str(path), "--output_dir", "o"])


def test_resolve_arguments_checks():
    with pytest.raises(ValueError, match="exactly one"):
        resolve_arguments(TrainBaseArguments(output_dir="o"))
    with pytest.raises(ValueError, match="exactly one"):
        resolve_arguments(TrainBaseArguments(preset="resnet-tiny", model_name_or_path="x", output_dir="o"))
    with pytest.raises(ValueError, match="output_dir"):
        resolve_arguments(TrainBaseArguments(preset="resnet-tiny"))
    with pytest.raises(ValueError, match="apply to presets"):
        resolve_arguments(TrainBaseArguments(model_name_or_path="x", image_size=32, output_dir="o"))
    with pytest.raises(ValueError, match="lr_scheduler 'cosin'"):
        resolve_arguments(TrainBaseArguments(preset="resnet-tiny", lr_scheduler="cosin", output_dir="o"))
    with pytest.raises(TypeError, match="epoch"):
        TrainBaseArguments(preset="resnet-tiny", output_dir="o", epoch=1)
    with pytest.raises(TypeError, match="takes TrainBaseArguments"):
        train_base({"preset": "resnet-tiny", "output_dir": "o"})
    given = TrainBaseArguments(preset="resnet-tiny", output_dir="o")
    assert resolve_arguments(given).learning_rate == 2e-3 and given.learning_rate is None  # a copy is resolved


def test_retrain_command_reads_the_base_recipe_then_config_then_flags(tmp_path):
    """hf-unlearn retrain: --base_dir's saved recipe < --config < flags; a flag naming the model replaces
    the other alternative from the recipe; bad requests are usage errors (nothing is trained here)."""
    import dataclasses

    from hf_unlearn.baselines.retrain import recipe_options
    from hf_unlearn.commands.retrain import parse_retrain_args
    from hf_unlearn.training.retrain import load_base_recipe

    base = tmp_path / "base"
    base.mkdir()
    recipe = TrainBaseArguments(preset="resnet-micro", dataset="digits", epochs=15, seed=0, learning_rate=0.01,
                                output_dir=str(base))
    (base / CONFIG_FILENAME).write_text(yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=True))
    loaded = load_base_recipe(base)
    assert loaded == dataclasses.replace(recipe, output_dir=None)  # never the base's own folder

    config = tmp_path / "rt.yaml"
    config.write_text(yaml.safe_dump({"epochs": 3, "batch_size": 16}))
    options, job = parse_retrain_args(["--base_dir", str(base), "--config", str(config), "--classes", "3", "Five",
                                       "--batch_size", "8", "--output_dir", str(tmp_path / "rt")])
    assert (options.preset, options.seed, options.learning_rate) == ("resnet-micro", 0, 0.01)  # the recipe
    assert (options.epochs, options.batch_size, options.output_dir) == (3, 8, str(tmp_path / "rt"))
    assert (job.classes, job.together, job.skip_existing) == (["3", "Five"], False, False)
    options, _ = parse_retrain_args(["--base_dir", str(base), "--classes", "all", "--model_name_or_path", "x",
                                     "--output_dir", "o"])
    assert options.preset is None and options.model_name_or_path == "x"
    for bad in (["--classes", "3", "--output_dir", str(base)],  # would overwrite the base
                ["--classes", "all", "--together", "--output_dir", "o"],  # nothing left to train on
                ["--output_dir", "o"],  # no --classes
                ["--classes", "3", "--output_dir", "o", "--epochs", "0"]):  # the recipe itself is checked too
        with pytest.raises(SystemExit):
            parse_retrain_args(["--base_dir", str(base), *bad])
    with pytest.raises(SystemExit):  # no saved recipe there
        parse_retrain_args(["--base_dir", str(tmp_path), "--classes", "3", "--output_dir", "o"])

    # the retrain baseline takes the same recipe as a dataclass, overrides checked by name
    options = recipe_options(str(base), str(tmp_path / "out"), {"num_threads": 1, "epochs": 2})
    assert (options.epochs, options.num_threads, options.no_progress, options.seed) == (2, 1, True, 0)
    with pytest.raises(ValueError, match=r"\['epoch'\] are not train_base options"):
        recipe_options(str(base), str(tmp_path / "out"), {"epoch": 2})


# -- DDP: two gloo ranks on CPU (tests/ddp.py), launched once for the module ------------------------


def _ddp_worker(out_dir):
    """Runs in each rank: 1) the loaders of hf_unlearn.data.loaders through accelerator.prepare, recording what
    every rank saw; 2) train_base under DDP."""
    from accelerate import Accelerator

    from hf_unlearn.data.loaders import build_dataloader
    from hf_unlearn.data.loading import load_image_dataset
    from hf_unlearn.presets import make_image_processor

    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    processor = make_image_processor(8, [0.5], [0.5])
    for streaming in (False, True):
        data = load_image_dataset("digits", split="test", streaming=streaming)
        loader = build_dataloader(data, processor, num_channels=1, batch_size=32, shuffle=True, seed=0,
                                  progress=False)
        loader = accelerator.prepare(loader)
        seen, local = [], 0
        for batch in loader:
            local += len(batch["labels"])
            rows = torch.cat([batch["pixel_values"].flatten(1), batch["labels"][:, None].float()], dim=1)
            seen.append(accelerator.gather_for_metrics(rows))
        counts = accelerator.gather(torch.tensor([local]))
        if accelerator.is_main_process:
            torch.save({"rows": torch.cat(seen), "counts": counts}, os.path.join(out_dir, f"seen-{streaming}.pt"))
    accelerator.wait_for_everyone()
    train_base(TrainBaseArguments(preset="resnet-micro", dataset="digits", epochs=1, batch_size=32,
                                  learning_rate=1e-2, cpu=True, output_dir=os.path.join(out_dir, "model"), **FAST))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    home = out / "hf_home"
    launch_two_ranks(_ddp_worker, str(out), env={
        "HF_HOME": str(home), "HF_DATASETS_CACHE": str(home / "datasets"), "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    })
    return out


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_ddp_loaders_see_every_example_exactly_once(ddp_run, streaming):
    """accelerate shards both loaders over 2 ranks: nothing lost, nothing doubled (no double sharding)."""
    from hf_unlearn.data.loading import load_image_dataset
    from hf_unlearn.data.transforms import to_tensor_dataset
    from hf_unlearn.presets import make_image_processor

    data = load_image_dataset("digits", split="test")
    tensors = to_tensor_dataset(data, make_image_processor(8, [0.5], [0.5]), num_channels=1, progress=False)
    expected = torch.cat([tensors.tensors[0].flatten(1), tensors.tensors[1][:, None].float()], dim=1)

    def as_multiset(rows):
        return sorted(tuple(round(v, 4) for v in row.tolist()) for row in rows)

    result = torch.load(ddp_run / f"seen-{streaming}.pt")
    assert result["rows"].shape[0] == len(data.dataset) == 360
    assert as_multiset(result["rows"]) == as_multiset(expected)
    # each rank got about half the data (not all of it, not a quarter of it)
    assert all(150 <= int(c) <= 210 for c in result["counts"]), result["counts"]


def test_train_base_under_two_process_ddp(ddp_run):
    from transformers import AutoModelForImageClassification

    out = ddp_run / "model"
    metrics = json.loads((out / METRICS_FILENAME).read_text())
    assert metrics["machine"]["num_processes"] == 2
    assert metrics["num_eval_examples"] == 360  # gather_for_metrics drops the padding
    assert metrics["test_accuracy"] > 0.2
    assert AutoModelForImageClassification.from_pretrained(str(out)).config.id2label == DIGITS


def test_train_base_streaming_from_a_config_file(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump({"preset": "resnet-micro", "dataset": "digits", "epochs": 2, "batch_size": 32,
                                    "learning_rate": 0.01, "streaming": True, "num_threads": 1}))
    args = parse_train_base_args(["--config", str(path), "--output_dir", str(tmp_path / "out"), "--no_progress"])
    metrics = train_base(args)
    assert metrics["num_train_examples"] == 1437 and metrics["num_eval_examples"] == 360
    assert metrics["test_accuracy"] > 0.5
    assert yaml.safe_load((tmp_path / "out" / CONFIG_FILENAME).read_text())["streaming"] is True
