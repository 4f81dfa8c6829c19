"""The recipes end to end: the quickstart (smoke size), the CLI, and the real-world configs on stand-ins."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"


def _run(cmd, env=None, timeout=600):
    done = subprocess.run(cmd, env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    return done.stdout


@pytest.mark.slow  # end to end: runs in CI (the whole suite), not in the fast subset
def test_quickstart_smoke(tmp_path):
    """The README's main job at smoke size: digits and a micro preset instead of Fashion-MNIST."""
    out = tmp_path / "qs"
    stdout = _run([sys.executable, "recipes/quickstart.py", "--dataset", "digits", "--preset", "resnet-micro",
                   "--base_epochs", "12", "--config", "recipes/configs/digits_resnet_micro.yaml", "--forget", "0",
                   "--pipeline_images", "30",
                   "--output_dir", str(out)])
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in stdout
    summary = json.loads((out / "quickstart.json").read_text())
    check = summary["pipeline_check"]
    assert check["base_on_class"] >= 80 and check["exported_on_class"] <= 10, check
    assert summary["evaluation"]["mean_forget_acc"] <= 15
    assert (out / "report.md").read_text().startswith("# hf_unlearn quickstart report")
    assert f"hf-unlearn demo --adapter {out / 'adapter'}" in stdout.strip().splitlines()[-1]  # the last line
    assert "hf_unlearn" in (out / "exported-without-0" / "README.md").read_text()  # our card, as on the Hub
    assert (out / "plots" / "forget_retain.png").stat().st_size > 1000
    assert (out / "plots" / "accuracy_matrix.png").stat().st_size > 1000


def test_cli_help_and_export(tmp_path, digits_base):
    from hf_unlearn import UnlearnAdapter

    stdout = _run([sys.executable, "-m", "hf_unlearn.cli", "--help"])
    assert "train-base" in stdout and "export" in stdout
    base_dir, _ = digits_base
    adapter = UnlearnAdapter.attach(
        __import__("transformers").AutoModelForImageClassification.from_pretrained(base_dir))
    adapter.config.base_model_name_or_path = str(base_dir)
    adapter.image_processor = __import__("transformers").AutoImageProcessor.from_pretrained(base_dir)
    with torch.no_grad():
        for name, p in adapter.model.named_parameters():
            if "weight_filter_theta" in name:
                p.uniform_(-3, 3)
    adapter.save_pretrained(tmp_path / "wf")
    out = tmp_path / "plain"
    stdout = _run([sys.executable, "-m", "hf_unlearn.cli", "export", str(tmp_path / "wf"), "--forget", "3", "7",
                   "--output_dir", str(out)])
    assert "['3', '7']" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["unlearned_classes"] == ["3", "7"] and (out / "model.safetensors").is_file()


def _cifar_like_parquet(path, n=120, classes=100, size=32):
    import datasets
    from PIL import Image

    rng = np.random.RandomState(0)
    fine = [i % classes for i in range(n)]
    images = [Image.fromarray(rng.randint(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]
    names = [f"class_{i}" for i in range(classes)]
    features = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=names),
                                  "coarse_label": datasets.ClassLabel(names=[f"super_{i}" for i in range(20)])})
    ds = datasets.Dataset.from_dict({"img": images, "fine_label": fine, "coarse_label": [f % 20 for f in fine]},
                                    features=features)
    ds.to_parquet(str(path))
    return path


@pytest.mark.slow  # end to end: runs in CI (the whole suite), not in the fast subset
@pytest.mark.parametrize("pair", [("base_vit_base_cifar100.yaml", "vit_base_cifar100.yaml")])
def test_real_world_configs_run_on_a_hub_cache_stand_in(tmp_path, pair):
    """The ViT-B/CIFAR-100 configs, exactly as written, except: the Hub checkpoint is a tiny stand-in laid
    into the Hub cache under the same repo id, the dataset a local parquet with CIFAR-100's columns,
    tiny sizes, and no bf16 (CPU)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from hub_cache import lay_out_hub_cache

    base_cfg, wf_cfg = (yaml.safe_load((CONFIGS / name).read_text()) for name in pair)
    hf_home = tmp_path / "hf_home"
    standin = tmp_path / "standin"
    ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64, num_labels=1000)).save_pretrained(standin)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(standin)
    lay_out_hub_cache(hf_home, base_cfg["model_name_or_path"], standin)
    data = _cifar_like_parquet(tmp_path / "cifar100-like.parquet")
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    base_out, wf_out = tmp_path / "base", tmp_path / "wf"
    _run([sys.executable, "recipes/train_base.py", "--config", str(CONFIGS / pair[0]), "--dataset", str(data),
          "--eval_split", "train", "--epochs", "1", "--batch_size", "16", "--output_dir", str(base_out),
          "--no_progress"], env=env)
    base = json.loads((base_out / "metrics.json").read_text())
    assert base["model_name_or_path"] == "google/vit-base-patch16-224" and len(base["class_names"]) == 100
    _run([sys.executable, "recipes/train.py", "--config", str(CONFIGS / pair[1]), "--base_model", str(base_out),
          "--dataset", str(data), "--output_dir", str(wf_out), "--mixed_precision", "no", "--epochs", "1",
          "--batch_size", "16", "--eval_split", "train", "--eval_pairs", "2",
          "--no_progress"], env=env)
    resolved = yaml.safe_load((wf_out / "untraining_config.yaml").read_text())
    assert resolved["label_column"] == "fine_label" and resolved["learning_rate"] == wf_cfg["learning_rate"]
    config = json.loads((wf_out / "adapter_config.json").read_text())
    assert config["num_classes"] == 100 and config["peft_type"] == "WEIGHT_FILTER"
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"}
