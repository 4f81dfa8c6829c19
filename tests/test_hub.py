"""Sharing on the Hub: push adapters and exported models with model cards, pull them back.

Everything runs against the local Hub-protocol server in ``tests/hub_server.py`` with the real
``huggingface_hub`` client. The client reads HF_ENDPOINT at import, so the client side runs in
fresh subprocesses. To stay fast, a few module-scoped fixtures each run ONE subprocess that does
many things (push everything; pull everything and try every bad input; load offline; fail and
retry), and the tests below check their parts.
"""

import json
import textwrap

import pytest
import torch
from huggingface_hub import ModelCard

from hf_unlearn import UnlearnAdapter
from hf_unlearn.hub.card_data import load_report, summarize_report
from hf_unlearn.hub.cards import adapter_card, exported_card
from hf_unlearn.commands.push import main as cli_push
from hf_unlearn.hub.push import PushError
from hub_cache import lay_out_hub_cache
from hub_server import HubServer
from tiny_models import build, image_processor, pixels, randomize_filters

BASE = "test-org/tiny-base"
ADAPTER = "test-org/wf-vit"
EXPORTED = "test-org/vit-without-bee"
CLASSES = ["ant", "bee", "cat", "dog"]
PEFT_CARD_MARK = "# Model Card for Model ID"  # the heading of PEFT's own README template

# An untraining_metrics.json as `hf-unlearn train` writes it (abridged): the evaluation suite's format
# plus the round's own fields.
METRICS = {
    "untraining_time_s": 12.5, "steps": 40, "epochs": 2, "base_model": BASE, "model": BASE, "dataset": "fashion_mnist",
    "seed": 3, "split": "test", "settings": {"n_test": 400}, "base_accuracy": 91.0,
    "environment": {"versions": {"torch": "2.13.0", "transformers": "5.24.0"}},
    "stop_reason": "converged", "history": [{"step": 20, "worst_forget_acc": 3.0}],
    "accuracy": {
        "method": "exact", "mean_forget_acc": 1.25, "mean_retain_acc": 88.5, "mean_base_retain_acc": 90.75,
        "mean_retain_drop": 2.25, "forget_acc_per_class": [0.0, 2.0, 1.0, 2.0],
        "retain_acc_per_class": [88.0, 89.0, 88.0, 89.0], "base_retain_acc_per_class": [90.0, 91.0, 91.0, 91.0],
    },
}
# An evaluation report as hf_unlearn.evaluation.report.write_report takes it.
EVAL_REPORT = {
    "model": BASE, "dataset": "fashion_mnist", "split": "test", "seed": 0, "class_names": CLASSES,
    "accuracy": {"method": "exact", "mean_forget_acc": 3.0, "mean_retain_acc": 80.0, "mean_base_retain_acc": 85.0,
                 "forget_acc_per_class": [1.0, 3.0, 4.0, 4.0], "retain_acc_per_class": [80.0, 79.0, 81.0, 80.0],
                 "base_forget_acc_per_class": [92.0, 90.0, 88.0, 90.0]},
    "retrain": {"forget_acc_per_class": [0.0, 0.0, 0.0, 0.0], "retain_acc_per_class": [84.0, 85.0, 86.0, 85.0]},
    "mia_efficacy": {"unlearned": 97.5, "base": 10.0}, "zrf": {"unlearned": 0.625},
}


def make_adapter(seed):
    adapter = UnlearnAdapter.attach(build("vit", seed=0), image_processor=image_processor())
    randomize_filters(adapter.model, seed=seed)
    adapter.config.base_model_name_or_path = BASE
    return adapter.eval()


def logits(model, **kwargs):
    with torch.no_grad():
        return model(pixel_values=pixels(), **kwargs).logits


def assert_same(got, expected):
    torch.testing.assert_close(torch.tensor(got), expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# fixtures: one server, one world of files, one subprocess per phase
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = HubServer(hf_home=tmp_path_factory.mktemp("hf_home_push"))
    server.start()
    yield server
    server.stop()
    assert not server.errors, "test Hub server internal errors:\n" + "\n".join(server.errors)
    assert not server.unhandled, f"requests the test Hub server does not know: {server.unhandled}"


@pytest.fixture(scope="module")
def world(hub, tmp_path_factory):
    """Local folders, server-side seeded repos and the outputs every load must reproduce."""
    root = tmp_path_factory.mktemp("world")
    base = build("vit", seed=0)
    base.save_pretrained(root / "base")
    image_processor().save_pretrained(root / "base")
    hub.commit(BASE, folder=root / "base", message="tiny base model")
    other = root / "other-base"
    build("resnet").save_pretrained(other)
    hub.commit("test-org/other-base", folder=other)

    adapters, expected = {}, {}
    for version, seed in (("v1", 1), ("v2", 2), ("v3", 3)):
        adapter = make_adapter(seed)
        folder = root / version
        adapter.save_pretrained(folder)
        adapters[version] = folder
        expected[version] = {"none": logits(adapter), "bee": logits(adapter, forget=1),
                             "set": logits(adapter, forget=["ant", "dog"])}
    expected["exported"] = logits(make_adapter(2).export(forget="bee"))
    expected["base"] = logits(base)
    # v2 is pushed with `hf-unlearn push`, which finds these next to the adapter
    (adapters["v2"] / "untraining_metrics.json").write_text(json.dumps(METRICS))
    (adapters["v2"] / "untraining_config.yaml").write_text(f"base_model: {BASE}\ndataset: fashion_mnist\nseed: 3\n")

    # bad repos, seeded server-side
    config = json.loads((adapters["v1"] / "adapter_config.json").read_text())
    hub.commit("test-org/wf-pickle", {"adapter_config.json": json.dumps(config), "adapter_model.bin": b"\x80\x04pickle"})
    hub.commit("test-org/wf-orphan", {
        "adapter_config.json": json.dumps({**config, "base_model_name_or_path": "test-org/deleted-base"}),
        "adapter_model.safetensors": (adapters["v1"] / "adapter_model.safetensors").read_bytes(),
    })
    hub.commit("test-org/wf-retry", folder=adapters["v1"], message="seeded")
    return {"root": root, "adapters": adapters, "expected": expected}


def run_json(hub, code, **kwargs):
    return hub.run_python_json(textwrap.dedent(code), **kwargs)


@pytest.fixture(scope="module")
def pushed(hub, world):
    """Push v1 (API, with an evaluation report), v2 (`hf-unlearn push`) and an exported model."""
    a = world["adapters"]
    return run_json(hub, f"""
        import json
        import hf_unlearn
        from hf_unlearn import UnlearnAdapter
        from hf_unlearn.commands.export import ExportArguments, HubExportArguments, push_exported_model
        from hf_unlearn.commands.push import main as cli_push

        v1 = UnlearnAdapter.from_pretrained({str(a['v1'])!r})  # its base model comes from the Hub
        info1 = v1.push_to_hub({ADAPTER!r}, report={EVAL_REPORT!r}, commit_message="filters v1")
        info2 = cli_push([{str(a['v2'])!r}, {ADAPTER!r}])
        branch = v1.push_to_hub({ADAPTER!r}, revision="experiment")  # a branch, created from main

        # the push step of `hf-unlearn export test-org/wf-vit --forget bee --push_to_hub ...` (no local folder)
        args = ExportArguments(adapter={ADAPTER!r}, forget=["bee"], output_dir="unused")
        adapter = UnlearnAdapter.from_pretrained(args.adapter)
        info3 = push_exported_model(args, HubExportArguments(push_to_hub={EXPORTED!r}), adapter,
                                    adapter.export(forget=args.forget))
        print(json.dumps({{"v1": info1.oid, "v2": info2.oid, "exported": info3.oid, "url": info1.commit_url,
                          "branch": branch.oid}}))
    """)


@pytest.fixture(scope="module")
def pulled(hub, pushed, world, tmp_path_factory):
    """A fresh machine (empty cache) pulls everything and tries every bad input."""
    home = tmp_path_factory.mktemp("hf_home_pull")
    out = run_json(hub, f"""
        import json
        from pathlib import Path
        import hf_unlearn
        import torch
        from huggingface_hub import ModelCard, snapshot_download
        from transformers import AutoModelForImageClassification
        from hf_unlearn import UnlearnAdapter

        x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))  # tiny_models.pixels()
        def run(model, **kw):
            with torch.no_grad():
                return model(pixel_values=x, **kw).logits.tolist()
        def error(fn):
            try:
                fn()
            except Exception as err:
                return [type(err).__name__, str(err)]
            return None
        def card(path):
            c = ModelCard.load(path)
            return {{"text": c.text, "data": c.data.to_dict(),
                    "evals": [[e.metric_type, e.metric_value, e.dataset_type, e.dataset_split]
                              for e in c.data.eval_results or []]}}

        out = {{}}
        latest = UnlearnAdapter.from_pretrained({ADAPTER!r})
        out["latest"] = {{"none": run(latest), "bee": run(latest, forget="bee"), "set": run(latest, forget=["ant", "dog"]),
                         "processor": type(latest.image_processor).__name__, "base": latest.config.base_model_name_or_path}}
        old = UnlearnAdapter.from_pretrained({ADAPTER!r}, revision={pushed['v1']!r})
        out["old"] = {{"bee": run(old, forget=1)}}
        folder = snapshot_download({ADAPTER!r})
        out["files"] = sorted(p.name for p in Path(folder).iterdir())
        out["card"] = card({ADAPTER!r})
        out["report"] = json.load(open(folder + "/report.json"))
        old_folder = snapshot_download({ADAPTER!r}, revision={pushed['v1']!r})
        out["old_card"] = card(old_folder + "/README.md")
        out["old_files"] = sorted(p.name for p in Path(old_folder).iterdir())

        model = AutoModelForImageClassification.from_pretrained({EXPORTED!r})
        out["exported"] = {{"logits": run(model), "unlearned": model.config.unlearned_classes,
                           "files": sorted(p.name for p in Path(snapshot_download({EXPORTED!r})).iterdir())}}
        out["exported_card"] = card({EXPORTED!r})

        out["errors"] = {{
            "no_repo": error(lambda: UnlearnAdapter.from_pretrained("test-org/no-such-adapter")),
            "no_revision": error(lambda: UnlearnAdapter.from_pretrained({ADAPTER!r}, revision="no-such-branch")),
            "no_base": error(lambda: UnlearnAdapter.from_pretrained("test-org/wf-orphan")),
            "other_base": error(lambda: UnlearnAdapter.from_pretrained({ADAPTER!r}, base_model="test-org/other-base")),
            "pickle": error(lambda: UnlearnAdapter.from_pretrained("test-org/wf-pickle")),
        }}
        print(json.dumps(out))
    """, env=hub.env(hf_home=home))
    out["home"] = str(home)
    return out


# ---------------------------------------------------------------------------------------------
# push and pull
# ---------------------------------------------------------------------------------------------


def test_push_then_fresh_process_load_gives_identical_outputs(pulled, world):
    expected = world["expected"]["v2"]
    for key in ("none", "bee", "set"):
        assert_same(pulled["latest"][key], expected[key])
    assert_same(pulled["latest"]["none"], world["expected"]["base"])  # nothing forgotten: the base model
    assert pulled["latest"]["processor"].startswith("ViTImageProcessor")
    assert pulled["latest"]["base"] == BASE


def test_second_push_is_a_new_revision_and_the_old_one_still_loads(hub, pushed, pulled, world):
    repo = hub.repo(ADAPTER)
    assert pushed["v1"] != pushed["v2"]
    assert repo.head() == pushed["v2"]
    # each push is ONE commit on top of the previous one
    assert [c.sha for c in repo.history()[:2]] == [pushed["v2"], pushed["v1"]]
    assert repo.resolve(pushed["v1"]).title == "filters v1"
    assert_same(pulled["old"]["bee"], world["expected"]["v1"]["bee"])
    assert not torch.allclose(world["expected"]["v1"]["bee"], world["expected"]["v2"]["bee"])
    assert pushed["url"].endswith(pushed["v1"])
    assert repo.head("experiment") == pushed["branch"]
    assert repo.resolve(pushed["branch"]).parent == pushed["v2"]
    # that push had no report and no recipe: those of v2 are gone from the branch, not left stale
    assert not {"report.json", "report.md", "untraining_config.yaml"} & set(repo.files("experiment"))
    assert repo.files("experiment")["adapter_model.safetensors"] == repo.files(pushed["v1"])["adapter_model.safetensors"]


def test_snapshot_download_gets_the_files(pulled):
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md", "preprocessor_config.json",
                 "report.json", "report.md"):
        assert name in pulled["files"]
    assert "untraining_config.yaml" in pulled["files"]  # `hf-unlearn push` found it next to the adapter
    assert "untraining_config.yaml" not in pulled["old_files"]
    assert not [f for f in pulled["files"] if f.endswith((".bin", ".pt", ".pth"))]


def test_card_loads_back_with_its_eval_results(pulled):
    card = pulled["card"]
    evals = {e[0]: e for e in card["evals"]}
    assert evals["forget_accuracy"][1] == 1.25
    assert evals["retain_accuracy"][1] == 88.5
    assert evals["base_retain_accuracy"][1] == 90.75
    assert evals["accuracy"][1] == 91.0
    assert evals["forget_accuracy"][2:] == ["zalando-datasets/fashion_mnist", "test"]
    data = card["data"]
    assert data["base_model"] == BASE and data["library_name"] == "peft"
    assert data["pipeline_tag"] == "image-classification"
    assert {"unlearning", "weight-filter", "hf_unlearn"} <= set(data["tags"])
    text = card["text"]
    assert PEFT_CARD_MARK not in text  # ours replaced the README PEFT writes
    assert f'UnlearnAdapter.from_pretrained("{ADAPTER}")' in text
    assert "can switch" in text and "Only an exported model" in text  # the limits
    assert "| 1 bee | 2.00 | 89.00 | 91.00 |" in text  # per-class table: FA, RA, base RA
    assert "hf-unlearn train --config untraining_config.yaml" in text
    # the evaluation-report format (v1): MIA and ZRF in the model-index, retrain in the table
    old = {e[0]: e[1] for e in pulled["old_card"]["evals"]}
    assert old == {"forget_accuracy": 3.0, "retain_accuracy": 80.0, "base_retain_accuracy": 85.0,
                   "mia_efficacy": 97.5, "zrf": 0.625}
    assert "retrain FA (%)" in pulled["old_card"]["text"]
    assert pulled["report"]["accuracy"]["mean_forget_acc"] == 1.25  # report.json as given


def test_exported_model_loads_with_plain_transformers_and_its_card_names_the_classes(pulled, world):
    exported = pulled["exported"]
    assert_same(exported["logits"], world["expected"]["exported"])
    assert exported["unlearned"] == ["bee"]
    assert "model.safetensors" in exported["files"] and "preprocessor_config.json" in exported["files"]
    assert not [f for f in exported["files"] if f.endswith(".bin") or f.startswith("adapter_")]
    card = pulled["exported_card"]
    assert card["data"]["unlearned_classes"] == ["bee"]
    assert card["data"]["library_name"] == "transformers" and card["data"]["base_model"] == BASE
    text = card["text"]
    assert "unlearned `bee` (id 1)" in text
    assert ADAPTER in text  # the adapter it came from
    assert "weight filtering" in text  # how
    assert "travel with it" in text  # the limits
    # the report of the adapter (found in the cache) gives the row of the forgotten class
    evals = {e[0]: e[1] for e in card["evals"]}
    assert evals["forget_accuracy"] == 2.0 and evals["retain_accuracy"] == 89.0


def test_bad_inputs_give_clear_errors(pulled):
    errors = pulled["errors"]
    kind, msg = errors["no_repo"]
    assert kind == "ValueError" and "test-org/no-such-adapter" in msg and "neither" in msg
    kind, msg = errors["no_revision"]
    assert kind == "ValueError" and "'no-such-branch' does not exist" in msg
    kind, msg = errors["no_base"]
    assert kind == "OSError" and "test-org/deleted-base" in msg and "base_model=" in msg
    kind, msg = errors["other_base"]
    assert kind == "ValueError" and "does not fit this base model" in msg and "model_type" in msg
    kind, msg = errors["pickle"]
    assert kind == "ValueError" and "adapter_model.bin" in msg and "never unpickles" in msg


# ---------------------------------------------------------------------------------------------
# offline
# ---------------------------------------------------------------------------------------------


def test_offline_loads_from_the_cache(hub, pushed, pulled, world, tmp_path):
    laid = tmp_path / "laid_home"
    lay_out_hub_cache(laid, "test-org/laid-wf", world["adapters"]["v1"])
    lay_out_hub_cache(laid, BASE, world["root"] / "base")
    out = run_json(hub, f"""
        import json
        import hf_unlearn
        import torch
        from hf_unlearn import UnlearnAdapter

        x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        def bee(adapter):
            with torch.no_grad():
                return adapter(pixel_values=x, forget="bee").logits.tolist()
        out = {{"pulled": bee(UnlearnAdapter.from_pretrained({ADAPTER!r})),
               "old": bee(UnlearnAdapter.from_pretrained({ADAPTER!r}, revision={pushed['v1']!r})),
               "laid": bee(UnlearnAdapter.from_pretrained("test-org/laid-wf", cache_dir={str(laid / 'hub')!r}))}}
        try:
            UnlearnAdapter.from_pretrained("test-org/never-pulled")
        except OSError as err:
            out["miss"] = str(err)
        print(json.dumps(out))
    """, env=hub.env(hf_home=pulled["home"], offline=True, HF_ENDPOINT="http://127.0.0.1:9"))
    assert_same(out["pulled"], world["expected"]["v2"]["bee"])
    assert_same(out["old"], world["expected"]["v1"]["bee"])
    assert_same(out["laid"], world["expected"]["v1"]["bee"])
    assert "test-org/never-pulled" in out["miss"] and "not in the Hub cache" in out["miss"]


# ---------------------------------------------------------------------------------------------
# failures while pushing
# ---------------------------------------------------------------------------------------------


def test_push_without_a_token_fails_before_any_traffic(monkeypatch, tmp_path, world):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    adapter = make_adapter(1)
    with pytest.raises(PushError, match="pushing needs a token: .*login.*HF_TOKEN.*token="):
        adapter.push_to_hub("test-org/anything")
    with pytest.raises(PushError, match="token=False"):
        adapter.push_to_hub("test-org/anything", token=False)
    # the command line checks before it loads anything (this folder does not even exist)
    with pytest.raises(PushError, match="pushing needs a token"):
        cli_push([str(tmp_path / "missing"), "test-org/anything"])
    assert not list(tmp_path.iterdir())


def test_push_offline_or_from_a_local_base_is_explained(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_anything")  # this process runs with HF_HUB_OFFLINE=1
    adapter = make_adapter(1)
    with pytest.raises(PushError, match="offline mode is on"):
        adapter.push_to_hub("test-org/anything")
    adapter.config.base_model_name_or_path = str(tmp_path)  # a local folder: others cannot load it
    with pytest.warns(UserWarning, match="not a Hub repo id.*base_model="), pytest.raises(PushError):
        adapter.push_to_hub("test-org/anything")


def test_failed_upload_leaves_the_remote_unchanged_and_a_retry_works(hub, world, tmp_path):
    repo = hub.repo("test-org/wf-retry")
    before, files_before = repo.head(), repo.files()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    hub.fail_next("lfs_upload", 1, status=507)  # not retried by the client: the push fails ...
    hub.fail_next("commit", 1)  # ... then the retry fails at the commit itself
    out = run_json(hub, f"""
        import json, os
        import hf_unlearn
        from huggingface_hub import HfApi
        from hf_unlearn import UnlearnAdapter
        from hf_unlearn.hub.push import PushError

        adapter = UnlearnAdapter.from_pretrained({str(world['adapters']['v3'])!r})
        attempts = []
        for _ in range(3):
            try:
                info = adapter.push_to_hub("test-org/wf-retry")
            except PushError as err:
                attempts.append({{"error": str(err), "head": HfApi().model_info("test-org/wf-retry").sha,
                                 "tmp": os.listdir({str(scratch)!r})}})
            else:
                attempts.append({{"sha": info.oid, "tmp": os.listdir({str(scratch)!r})}})
                break
        print(json.dumps(attempts))
    """, env=hub.env(TMPDIR=scratch))
    assert len(out) == 3, out
    for attempt, status in zip(out[:2], ("507", "500")):
        assert f"HTTP {status}" in attempt["error"] and "Nothing was committed" in attempt["error"]
        assert attempt["head"] == before  # the remote revision did not move
        assert attempt["tmp"] == []  # no staging folder left behind
    assert out[2]["tmp"] == []
    assert repo.head() == out[2]["sha"] != before
    assert repo.history()[1].sha == before
    new_files = repo.files()
    assert new_files["adapter_model.safetensors"] == (world["adapters"]["v3"] / "adapter_model.safetensors").read_bytes()
    assert new_files["adapter_model.safetensors"] != files_before["adapter_model.safetensors"]
    assert not hub.pending_failures()


# ---------------------------------------------------------------------------------------------
# cards, in process
# ---------------------------------------------------------------------------------------------


def test_cards_round_trip_and_tolerate_missing_keys(tmp_path):
    adapter = make_adapter(1)
    card = adapter_card(adapter, EVAL_REPORT, repo_id="me/wf")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert {e.metric_type: e.metric_value for e in loaded.data.eval_results}["mia_efficacy"] == 97.5
    assert loaded.data.eval_results[0].dataset_split == "test"

    for report in (None, {}, {"accuracy": {}}, {"accuracy": {"mean_forget_acc": None}}, {"dataset": "digits"}):
        text = adapter_card(adapter, report).content
        assert "No evaluation was published" in text
        assert "model-index" not in text
    # only some numbers: the card shows those
    partial = adapter_card(adapter, {"accuracy": {"forget_acc_per_class": [0.0, 10.0]}}).content
    assert "forget_accuracy" in partial and "5.0" in partial

    model = make_adapter(1).export(forget=["bee", "dog"])
    text = exported_card(model, report=METRICS).content
    assert "unlearned `bee` (id 1), `dog` (id 3)" in text and "| 3 dog |" in text
    assert "unlearned_class_ids:\n- 1\n- 3" in text
    with pytest.raises(ValueError, match="Unknown class name 'eel'"):
        exported_card(model, forgotten="eel")


def test_cards_read_the_evaluation_suite_reports():
    rows = {  # evaluate_unlearning on an adapter: every row, per-class MIA/ZRF by model
        "dataset": "fashion_mnist", "split": "test", "class_names": CLASSES, "base_accuracy": 90.0,
        "accuracy": {"method": "exact", "mean_forget_acc": 2.0, "mean_retain_acc": 85.0,
                     "forget_acc_per_class": [1.0, 2.0, 3.0, 2.0], "retain_acc_per_class": [84.0, 86.0, 85.0, 85.0]},
        "mia_efficacy": {"unlearned": [96.0, 98.0, 97.0, 99.0], "base": [10.0, 11.0, 12.0, 13.0]},
        "zrf": {"unlearned": [0.5, 0.6, 0.7, 0.8]},
        "settings": {"command": "recipes/evaluate.py --adapter runs/wf", "n_test": 400},
    }
    text = adapter_card(make_adapter(1), rows).content
    assert "value: 97.5" in text and "value: 0.65" in text  # means over the rows in the model-index
    assert "MIA-efficacy (%) | ZRF |" in text and "| 1 bee | 2.00 | 86.00 | 98.00 | 0.60 |" in text
    assert "recipes/evaluate.py --adapter runs/wf" in text and "400 images" in text

    model = make_adapter(1).export(forget="bee")
    card = exported_card(model, report=rows, adapter_repo="runs/wf")
    evals = {e.metric_type: e.metric_value for e in card.data.eval_results}
    assert evals == {"forget_accuracy": 2.0, "retain_accuracy": 86.0, "mia_efficacy": 98.0, "zrf": 0.6}
    assert "`runs/wf`" in card.content  # a local adapter is named, not linked
    # a one-set report about another set says nothing about this model
    other = {"accuracy": {"forget_acc": 1.0, "retain_acc": 80.0, "classes": [0]}, "mia_efficacy": {"unlearned": 90.0}}
    assert exported_card(model, report=other).data.eval_results is None
    same = {"accuracy": {"forget_acc": 1.0, "retain_acc": 80.0, "classes": [1], "base_retain_acc": 88.0},
            "retrain": {"forget_acc": 0.0, "retain_acc": 84.0}, "mia_efficacy": {"unlearned": 90.0}}
    card = exported_card(model, report=same)
    assert {e.metric_type: e.metric_value for e in card.data.eval_results}["mia_efficacy"] == 90.0
    assert "| retrained without them (reference) | 0.00 | 84.00 |" in card.content


def test_cards_show_the_representation_tests_against_base_and_retrain():
    """Issue 12: the few-shot probe (with its real shot count), CKA and k-shot relearning reach the cards."""
    rows = {
        "dataset": "fashion_mnist", "split": "test", "class_names": CLASSES,
        "accuracy": {"method": "exact", "mean_forget_acc": 2.0, "mean_retain_acc": 85.0,
                     "forget_acc_per_class": [1.0, 2.0, 3.0, 2.0], "retain_acc_per_class": [84.0, 86.0, 85.0, 85.0]},
        "few_shot_probe": {"unlearned": [None, 60.0, 70.0, None], "base": [None, 90.0, 80.0, None],
                           "retrain": [None, 50.0, 40.0, None]},
        "cka_to_retrain": {"unlearned": [None, 0.8, 0.6, None], "base": [None, 0.5, 0.4, None]},
        "relearn": {"head-5shot": {"unlearned": [None, 30.0, 10.0, None], "retrain": [None, 20.0, 10.0, None]}},
        "settings": {"few_shot_shots": 3, "relearn_steps": 30},
    }
    text = adapter_card(make_adapter(1), rows).content
    assert "| 3-shot probe (%): unlearned / base / retrain | 65.00 / 85.00 / 45.00 |" in text
    assert "| linear CKA to the retrain: unlearned / base / retrain | 0.700 / 0.450 / – |" in text
    assert "relearn head, 5 samples/class, 30 steps (%): unlearned / base / retrain | 20.00 / – / 15.00 |" in text
    card = exported_card(make_adapter(1).export(forget="bee"), report=rows).content  # bee = row 1
    assert "| 3-shot probe (%) | 60.00 | 90.00 | 50.00 |" in card
    assert "| linear CKA to the retrain | 0.800 | 0.500 | – |" in card


def test_report_loading_from_files_and_folders(tmp_path):
    (tmp_path / "untraining_metrics.json").write_text(json.dumps(METRICS))
    assert load_report(tmp_path)["seed"] == 3
    assert load_report(tmp_path / "untraining_metrics.json") == METRICS
    summary = summarize_report(load_report(tmp_path))
    assert summary["mean_retain_acc"] == 88.5 and summary["retain"][1] == 89.0 and summary["split"] == "test"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No report in"):
        load_report(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_report(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not an object"):
        load_report(tmp_path / "bad.json")


# ---------------------------------------------------------------------------------------------
# the command lines and the module layout
# ---------------------------------------------------------------------------------------------


def test_push_and_export_parse_their_flags_into_dataclasses():
    """`hf-unlearn push ADAPTER REPO_ID ...` and `hf-unlearn export ADAPTER ...`: the positionals and
    flags they always had, parsed into the dataclasses their library functions take."""
    from hf_unlearn.commands.arguments import parse_arguments
    from hf_unlearn.commands.export import ExportArguments, HubExportArguments
    from hf_unlearn.commands.push import PushArguments

    (push,) = parse_arguments((PushArguments,), ["runs/wf", "me/wf", "--no_report", "--private", "--space", "me/d"],
                              config=False, positional=("adapter", "repo_id"))
    assert (push.adapter, push.repo_id, push.no_report, push.private, push.space) == ("runs/wf", "me/wf", True, True, "me/d")
    assert push.report is None and push.token is None
    export, hub = parse_arguments((ExportArguments, HubExportArguments),
                                  ["runs/wf", "--forget", "3", "Coat", "--output_dir", "out", "--push_to_hub", "me/x",
                                   "--hub_private"], config=False, positional=("adapter",))
    assert (export.adapter, export.forget, export.output_dir) == ("runs/wf", ["3", "Coat"], "out")
    assert (hub.push_to_hub, hub.hub_private, hub.hub_revision) == ("me/x", True, None)
    with pytest.raises(SystemExit):  # both positionals are required
        parse_arguments((PushArguments,), ["runs/wf"], config=False, positional=("adapter", "repo_id"))


def test_hub_modules_do_not_import_the_adapter():
    """The adapter imports the Hub modules (download, cards, push); none imports it back (no cycle)."""
    import ast
    from pathlib import Path

    import hf_unlearn.hub

    for path in Path(hf_unlearn.hub.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
                assert not any(n == "adapter" or n.endswith(".adapter") for n in names), f"{path.name} imports the adapter"
