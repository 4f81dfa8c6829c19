"""Reliability and security (issue 10): concurrent serving, output folders, tamper-proof loading,
atomic exports, and the small sharp edges. Each test failed before its fix."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from hf_unlearn import UnlearnAdapter, per_sample
from tiny_models import build, image_processor, pixels, randomize_filters

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def make_adapter(kind="resnet", seed=0):
    adapter = UnlearnAdapter.attach(build(kind, seed=seed), image_processor=image_processor())
    randomize_filters(adapter.model, seed=seed)
    return adapter.eval()


# ------------------------------------------------------------------ 1: serving from several threads


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_concurrent_calls_with_different_selections_match_single_threaded(kind):
    adapter = make_adapter(kind)
    x = pixels(batch=4)
    choices = [None, 0, 1, 2, 3, [0, 2], "bee", torch.tensor([0, -1, 3, 1]), per_sample([1, None, [0, 3], 2])]
    with torch.no_grad():
        expected = [adapter(pixel_values=x, forget=c).logits for c in choices]

    def request(i):
        c = i % len(choices)
        with torch.no_grad():
            if i % 3 == 0:  # the context form is per thread too
                with adapter.forgetting(choices[c]):
                    return c, adapter(pixel_values=x).logits
            return c, adapter(pixel_values=x, forget=choices[c]).logits

    threads, calls = 4, 60
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(request, range(threads * calls)))
    wrong = [c for c, logits in results if not torch.equal(logits, expected[c])]
    assert not wrong, f"{len(wrong)} of {len(results)} concurrent results used another request's selection"
    # nothing leaked into this thread: no selection is the base model, and no state is left behind
    with torch.no_grad():
        assert torch.equal(adapter(pixel_values=x).logits, adapter.base_model(pixel_values=x).logits)
    from hf_unlearn.tuners.weight_filter.layer import SELECTIONS

    assert adapter.model.base_model._selection_key not in SELECTIONS.get()


def test_forgetting_context_does_not_reach_other_threads():
    adapter = make_adapter()
    x = pixels(batch=2)
    with torch.no_grad():
        base = adapter.base_model(pixel_values=x).logits
        with adapter.forgetting(1):
            with ThreadPoolExecutor(1) as pool:
                other = pool.submit(lambda: adapter(pixel_values=x).logits).result()
            mine = adapter(pixel_values=x).logits
    assert torch.equal(other, base)
    assert not torch.allclose(mine, base)


# ------------------------------------------------------------------ 4/5: tamper-proof loading


def _saved(tmp_path, name="adapter"):
    adapter = make_adapter()
    base_dir = tmp_path / "base"
    build("resnet").save_pretrained(base_dir)  # the same weights as the adapter's base, unwrapped
    folder = tmp_path / name
    adapter.config.base_model_name_or_path = str(base_dir)
    adapter.save_pretrained(folder)
    return adapter, folder


def _rewrite_adapter_file(folder, edit):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "adapter_model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "adapter_model.safetensors"))


def test_an_extra_tensor_in_the_adapter_file_cannot_change_the_base_model(tmp_path):
    _, folder = _saved(tmp_path)
    _rewrite_adapter_file(folder, lambda t: t.update({"base_model.model.classifier.1.weight": torch.zeros(4, 32)}))
    with pytest.raises(ValueError, match=r"not filters of this adapter.*classifier\.1\.weight"):
        UnlearnAdapter.from_pretrained(folder)


def test_a_missing_filter_tensor_is_an_error_naming_it(tmp_path):
    _, folder = _saved(tmp_path)
    victim = "base_model.model.resnet.encoder.stages.1.layers.0.shortcut.convolution.weight_filter_theta"
    _rewrite_adapter_file(folder, lambda t: t.pop(victim))
    with pytest.raises(ValueError, match=r"1 filter tensor\(s\) missing.*shortcut\.convolution"):
        UnlearnAdapter.from_pretrained(folder)


def test_an_untampered_adapter_still_loads_bit_for_bit(tmp_path):
    adapter, folder = _saved(tmp_path)
    loaded = UnlearnAdapter.from_pretrained(folder)
    x = pixels(batch=3)
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=x, forget=2).logits, adapter(pixel_values=x, forget=2).logits)


def test_a_decoy_safetensors_next_to_a_pickle_is_refused(tmp_path):
    _, folder = _saved(tmp_path)
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "adapter_model.safetensors"))
    torch.save(tensors, folder / "adapter_model.bin")  # what PEFT would unpickle
    save_file({"x": torch.zeros(1)}, str(folder / "x.safetensors"))
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"pickle weights \(adapter_model\.bin\) and no adapter_model\.safetensors"):
        UnlearnAdapter.from_pretrained(folder)


# ------------------------------------------------------------------ 6: where the base model is


def test_base_model_path_is_stored_absolute_and_resolved_next_to_the_adapter(tmp_path, monkeypatch):
    from hf_unlearn.adapter_files import read_adapter_config

    (tmp_path / "proj" / "runs").mkdir(parents=True)
    build("resnet").save_pretrained(tmp_path / "proj" / "runs" / "base")
    monkeypatch.chdir(tmp_path / "proj")
    adapter = UnlearnAdapter.attach(build("resnet"), base_model_name_or_path="runs/base")
    adapter.save_pretrained("runs/wf")
    assert read_adapter_config("runs/wf")["base_model_name_or_path"] == str(tmp_path / "proj" / "runs" / "base")
    # Hub ids are kept as given
    hub = UnlearnAdapter.attach(build("resnet"), base_model_name_or_path="org/some-model")
    assert hub.config.base_model_name_or_path == "org/some-model"

    # an adapter written before (relative path as typed) loaded from another directory: found next
    # to the adapter, not under the working directory (which has another runs/base)
    cfg = json.loads(Path("runs/wf/adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "runs/base"
    Path("runs/wf/adapter_config.json").write_text(json.dumps(cfg))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "runs").mkdir(parents=True)
    build("resnet", seed=9).save_pretrained(elsewhere / "runs" / "base")  # a different model, same name
    monkeypatch.chdir(elsewhere)
    loaded = UnlearnAdapter.from_pretrained(tmp_path / "proj" / "runs" / "wf")
    x = pixels(batch=2)
    with torch.no_grad():
        assert torch.equal(loaded.base_model(pixel_values=x).logits, build("resnet")(pixel_values=x).logits)


def test_a_missing_local_base_model_is_named_not_called_a_repo_id(tmp_path):
    _, folder = _saved(tmp_path)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "gone" / "base")
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(FileNotFoundError, match=r"local path that does not exist"):
        UnlearnAdapter.from_pretrained(folder)


# ------------------------------------------------------------------ 7/8: exports


def test_export_of_no_class_is_an_error():
    adapter = make_adapter()
    for nothing in ([], -1, torch.tensor(-1)):
        with pytest.raises(ValueError, match="selects no class"):
            adapter.export(forget=nothing)


def test_save_export_replaces_an_earlier_export_whole_and_refuses_other_folders(tmp_path):
    from transformers import AutoModelForImageClassification

    from hf_unlearn.adapter_files import save_export

    adapter = make_adapter()
    out = tmp_path / "export"
    save_export(adapter.export(forget=1), out, adapter.image_processor)
    (out / "stray.txt").write_text("from the first export")
    save_export(adapter.export(forget=2), out, adapter.image_processor)
    assert not (out / "stray.txt").exists()  # replaced as a whole: nothing of the old export mixes in
    assert json.loads((out / "config.json").read_text())["unlearned_class_ids"] == [2]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temp folders left
    old_mask = os.umask(0)
    os.umask(old_mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~old_mask
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~old_mask
    x = pixels(batch=2)
    with torch.no_grad():
        reloaded = AutoModelForImageClassification.from_pretrained(out)
        assert torch.equal(reloaded(pixel_values=x).logits, adapter(pixel_values=x, forget=2).logits)
    # a folder that is not an export (e.g. the base model's) is never replaced
    base = tmp_path / "base"
    build("resnet").save_pretrained(base)
    with pytest.raises(FileExistsError, match="not an earlier export"):
        save_export(adapter.export(forget=1), base)
    assert "unlearned_class_ids" not in json.loads((base / "config.json").read_text())


def test_interrupted_saves_are_cleaned_up_by_the_next_save(tmp_path):
    from hf_unlearn.adapter_files import save_export

    adapter = make_adapter()
    folder = tmp_path / "wf"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited: its temp folders are leftovers
    (folder / f".saving-{pid}-abc").mkdir()
    (tmp_path / f".export.exporting-{pid}-abc").mkdir()
    adapter.save_pretrained(folder)
    assert not any(p.name.startswith(".saving-") for p in folder.iterdir())
    save_export(adapter.export(forget=1), tmp_path / "export")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "wf"]


def test_predict_with_a_per_sample_selection_longer_than_batch_size():
    adapter = make_adapter()
    x = pixels(batch=5)
    choice = torch.tensor([0, 1, -1, 3, 2])
    preds = adapter.predict(x, forget=choice, batch_size=2)
    with torch.no_grad():
        expected = adapter(pixel_values=x, forget=choice).logits.argmax(-1).tolist()
    assert [p[0]["class_id"] for p in preds] == expected


def test_cli_export_is_atomic_and_options_cannot_be_abbreviated(tmp_path, capsys):
    from hf_unlearn.cli import main

    _, folder = _saved(tmp_path)
    out = tmp_path / "export"
    main(["export", str(folder), "--forget", "1", "--output_dir", str(out)])
    assert json.loads((out / "config.json").read_text())["unlearned_class_ids"] == [1]
    with pytest.raises(SystemExit):
        main(["export", str(folder), "--forg", "2", "--output_dir", str(out)])
    assert "required: --forget" in capsys.readouterr().err  # --forg was not taken for --forget
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(folder), "--forget", "-1", "--output_dir", str(out)])
    assert exit_info.value.code == 1
    assert "error: Class id -1 is out of range" in capsys.readouterr().err  # a message, not a traceback
    assert json.loads((out / "config.json").read_text())["unlearned_class_ids"] == [1]


# ------------------------------------------------------------------ 0: evaluation under DDP, any split size


def _uneven_data(n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, 3, 16, 16, generator=g)
    y = torch.arange(n) % 4
    return [{"pixel_values": x[i], "labels": y[i]} for i in range(n)]


def _uneven_eval_worker(out_prefix, sizes, batch_size):
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration
    from torch.utils.data import DataLoader

    from hf_unlearn.evaluation.predict import predict_choices

    accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(even_batches=False))
    adapter = make_adapter()
    for n in sizes:
        loader = accelerator.prepare(DataLoader(_uneven_data(n), batch_size=batch_size, shuffle=False))
        out = predict_choices(adapter, loader, [None, 0, 1, [2, 3]], accelerator=accelerator, progress=False)
        one = predict_choices(adapter, loader, [1], accelerator=accelerator, keep_logits=True, progress=False)
        torch.save({"preds": torch.from_numpy(out["preds"]), "labels": torch.from_numpy(out["labels"]),
                    "logits": torch.from_numpy(one["logits"][0]), "labels2": torch.from_numpy(one["labels"])},
                   f"{out_prefix}.n{n}.rank{accelerator.process_index}.pt")


@pytest.mark.slow  # two spawned gloo ranks: ~30 s on the shared 2-core box
def test_two_rank_evaluation_with_uneven_batches_sees_every_sample_once(tmp_path):
    from ddp import launch_two_ranks

    from hf_unlearn.evaluation.predict import predict_choices

    # 13: the ranks' last batches differ in size (4+4 vs 4+1); 9: one rank has a batch fewer
    batch_size, sizes = 4, (13, 9)
    assert all(n % (batch_size * 2) for n in sizes)
    launch_two_ranks(_uneven_eval_worker, str(tmp_path / "r"), sizes, batch_size)
    adapter = make_adapter()
    for n in sizes:
        loader = torch.utils.data.DataLoader(_uneven_data(n), batch_size=batch_size)
        expected = predict_choices(adapter, loader, [None, 0, 1, [2, 3]], progress=False)
        with torch.no_grad():
            x = torch.stack([d["pixel_values"] for d in _uneven_data(n)])
            expected_logits = adapter(pixel_values=x, forget=1).logits
        for rank in (0, 1):
            r = torch.load(tmp_path / f"r.n{n}.rank{rank}.pt")
            assert r["labels"].tolist() == expected["labels"].tolist()
            assert r["preds"].tolist() == expected["preds"].tolist()
            assert r["labels2"].tolist() == (torch.arange(n) % 4).tolist()
            torch.testing.assert_close(r["logits"], expected_logits)


# ------------------------------------------------------------------ 2/3/8: output folders and the train job


def _job(base_dir, out, **extra):
    from hf_unlearn.training.job import untraining_job_arguments

    options = dict(base_model=str(base_dir), dataset="digits", output_dir=str(out), max_train_samples=128,
                   batch_size=32, max_steps=2, eval_split="", no_progress=True, num_threads=1)
    options.update(extra)
    return untraining_job_arguments(**options)


def test_train_refuses_a_folder_holding_another_run_and_leaves_it_untouched(digits_base, tmp_path):
    from hf_unlearn.training.job import run_untraining

    base_dir, _ = digits_base
    out = tmp_path / "wf"
    run_untraining(*_job(base_dir, out, checkpoint_every=1))
    recipe = (out / "untraining_config.yaml").read_text()
    weights = (out / "adapter_model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match=r"holds another run.*--resume latest.*--overwrite_output_dir"):
        run_untraining(*_job(base_dir, out, learning_rate=0.5))
    # 3: a failed start (missing base model) does not rewrite the good adapter's recipe
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_untraining(*_job(tmp_path / "nope", out, overwrite_output_dir=True))
    # a resume with another configuration is refused before anything is written
    with pytest.raises(ValueError, match="another configuration"):
        run_untraining(*_job(base_dir, out, learning_rate=0.5, resume="latest"))
    assert (out / "untraining_config.yaml").read_text() == recipe
    assert (out / "adapter_model.safetensors").read_bytes() == weights
    # --overwrite_output_dir starts afresh: the old run's checkpoints are gone, the recipe is the new one
    run_untraining(*_job(base_dir, out, learning_rate=0.5, overwrite_output_dir=True))
    assert not (out / "checkpoints").exists()
    assert "learning_rate: 0.5" in (out / "untraining_config.yaml").read_text()
    # the recorded base model is absolute (loadable from any working directory)
    import yaml

    assert Path(yaml.safe_load((out / "untraining_config.yaml").read_text())["base_model"]).is_absolute()
    assert Path(json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]).is_absolute()


def test_resume_falls_back_past_a_torn_checkpoint(tmp_path):
    from hf_unlearn.training.checkpoint import find_checkpoint

    for step in (1, 2, 3):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "progress.json").write_text(json.dumps({"completed_steps": step}))
    (tmp_path / "checkpoint-3" / "progress.json").write_text("")  # killed while writing (before: a crash)
    (tmp_path / "checkpoint-2" / "progress.json").write_text('{"completed_')
    assert find_checkpoint(str(tmp_path), "latest").name == "checkpoint-1"


def test_output_dir_equal_to_the_base_model_folder_is_refused(digits_base):
    from hf_unlearn.training.job import run_untraining

    base_dir, _ = digits_base
    before = sorted(p.name for p in Path(base_dir).iterdir())
    with pytest.raises(ValueError, match="is the base model's folder"):
        run_untraining(*_job(base_dir, base_dir))
    assert sorted(p.name for p in Path(base_dir).iterdir()) == before


def test_the_adapter_is_saved_before_the_evaluation(digits_base, tmp_path, monkeypatch):
    import hf_unlearn.training.job as job
    from hf_unlearn.training.job import run_untraining

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation died")

    monkeypatch.setattr(job, "evaluate_rows", broken)  # the job's own reference to the prediction engine
    base_dir, _ = digits_base
    with pytest.raises(RuntimeError, match="evaluation died"):
        run_untraining(*_job(base_dir, tmp_path / "wf", eval_split="test", max_eval_samples=64))
    assert UnlearnAdapter.from_pretrained(tmp_path / "wf").num_classes == 10


@pytest.mark.parametrize("bad", [["--epochs", "-1"], ["--epochs", "0"], ["--batch_size", "0"]])
def test_nonsense_numbers_are_usage_errors(tmp_path, capsys, bad):
    from hf_unlearn.commands.train import main

    out = tmp_path / "wf"
    with pytest.raises(SystemExit):
        main(["--base_model", str(tmp_path), "--output_dir", str(out), *bad])
    assert "error:" in capsys.readouterr().err
    assert not out.exists()


def test_train_options_cannot_be_abbreviated(tmp_path, capsys):
    from hf_unlearn.commands.train import main

    with pytest.raises(SystemExit):
        main(["--base_model", str(tmp_path), "--output_dir", str(tmp_path / "wf"), "--learning", "5"])
    err = capsys.readouterr().err
    assert "error:" in err and "'--learning'" in err  # named as an option nobody reads, not as --learning_rate


def test_a_class_without_training_rows_is_warned_about():
    from hf_unlearn.data.loaders import class_subset
    from hf_unlearn.data.loading import load_image_dataset
    from hf_unlearn.training.job import classes_without_rows

    data = class_subset(load_image_dataset("digits", split="train"), [3], keep=False)
    with pytest.warns(UserWarning, match=r"No training example of \['3'\]"):
        assert classes_without_rows(data) == ["3"]


def test_reports_and_plots_are_readable_by_others(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hf_unlearn.evaluation.plots import save_figure
    from hf_unlearn.evaluation.report import write_report

    old = os.umask(0o022)
    try:
        write_report({"model": "m"}, tmp_path)
        fig = plt.figure()
        save_figure(fig, tmp_path / "plot.png")
        plt.close(fig)
    finally:
        os.umask(old)
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "plot.png").stat().st_mode & 0o777 == 0o644


@pytest.mark.slow  # two real processes through `accelerate launch`: ~1 min on the shared 2-core box
def test_readme_two_process_command_evaluates_an_uneven_split(digits_base, tmp_path):
    """The README's DDP command as written (digits config at a tiny size): the round is saved, and the
    per-row evaluation over a split that does not divide by eval_batch_size x 2 ranks counts every row once."""
    import shutil

    from ddp import free_port

    base_dir, _ = digits_base
    repo = Path(__file__).resolve().parents[1]
    launcher = [shutil.which("accelerate"), "launch"]
    assert launcher[0], "the accelerate command is not on PATH"
    out = tmp_path / "wf"
    n_eval, eval_batch = 301, 64  # 5 batches: 3 on rank 0 (the last of 45), 2 on rank 1
    assert n_eval % (eval_batch * 2)
    cmd = [*launcher, "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "recipes/train.py", "--cpu", "--config", "recipes/configs/digits_resnet_micro.yaml",
           "--base_model", str(base_dir), "--output_dir", str(out), "--max_train_samples", "256", "--epochs", "1",
           "--max_eval_samples", str(n_eval), "--eval_batch_size", str(eval_batch), "--eval_pairs", "2",
           "--no_progress"]
    env = {**ENV, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    metrics = json.loads((out / "untraining_metrics.json").read_text())
    assert metrics["num_processes"] == 2
    assert metrics["settings"]["n_test"] == n_eval
    assert UnlearnAdapter.from_pretrained(out).num_classes == 10


def test_an_unknown_peft_type_is_a_clear_error(tmp_path):
    _, folder = _saved(tmp_path)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["peft_type"] = "LORA_TYPO"
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"peft_type 'LORA_TYPO'.*WEIGHT_FILTER"):
        UnlearnAdapter.from_pretrained(folder)


def test_the_class_names_hint_says_what_to_do_on_the_command_line(tmp_path):
    import datasets
    import numpy as np
    from PIL import Image

    from hf_unlearn.data.loading import load_image_dataset

    images = [Image.fromarray(np.zeros((8, 8), dtype=np.uint8)) for _ in range(4)]
    ds = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 0, 1]},
                                    features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}))
    ds.to_parquet(str(tmp_path / "plain.parquet"))
    with pytest.raises(ValueError, match=r"command line has no such option.*--dataset"):
        load_image_dataset(str(tmp_path / "plain.parquet"), split="train")


def test_an_empty_training_split_is_a_clear_error(digits_base, tmp_path):
    from hf_unlearn.data.loaders import class_subset
    from hf_unlearn.data.loading import load_image_dataset
    from hf_unlearn.training.job import run_untraining

    empty = class_subset(load_image_dataset("digits", split="train"), list(range(10)), keep=False)
    empty.dataset.save_to_disk(str(tmp_path / "empty" / "train"))
    base_dir, _ = digits_base
    with pytest.raises(ValueError, match="holds no rows"):
        run_untraining(*_job(base_dir, tmp_path / "wf", dataset=str(tmp_path / "empty" / "train"), max_train_samples=None))
    assert not (tmp_path / "wf" / "untraining_config.yaml").exists()
