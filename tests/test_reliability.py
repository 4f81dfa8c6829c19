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
    # nothing leaked into this thread: no selection is the base model
    with torch.no_grad():
        assert torch.equal(adapter(pixel_values=x).logits, adapter.base_model(pixel_values=x).logits)


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
    from hf_unlearn.adapter import read_adapter_config

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

    from hf_unlearn.adapter import save_export

    adapter = make_adapter()
    out = tmp_path / "export"
    save_export(adapter.export(forget=1), out, adapter.image_processor)
    (out / "stray.txt").write_text("from the first export")
    save_export(adapter.export(forget=2), out, adapter.image_processor)
    assert not (out / "stray.txt").exists()  # replaced as a whole: nothing of the old export mixes in
    assert json.loads((out / "config.json").read_text())["unlearned_class_ids"] == [2]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temp folders left
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)
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
    from hf_unlearn.adapter import save_export

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
