"""The interactive demo (hf_unlearn.demo), its Space, and our model card in every saved folder.

One real adapter is untrained on sklearn digits (seconds) and shared: the app's functions run on
it as plain Python; then the Gradio app is served on 127.0.0.1 and driven through gradio_client
(its API) and a real headless Chromium (selenium). The Space is pushed to the local Hub test
server (tests/hub_server.py) and its app.py is run against it.
"""

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard, SpaceCard
from PIL import Image

from hf_unlearn import UnlearnAdapter, __version__
from hf_unlearn.demo import DemoInputError, UnlearnDemo, check_image, recorded_dataset
from tiny_models import build, image_processor, randomize_filters

PEFT_CARD_MARK = "# Model Card for Model ID"  # the heading of PEFT's own README template


@pytest.fixture(scope="module")
def adapter_dir(digits_base, tmp_path_factory):
    """`hf-unlearn train`'s job on digits: a real adapter that forgets, with its metrics and config."""
    from hf_unlearn.training.job import run_untraining, untraining_job_arguments

    base_dir, _ = digits_base
    out = tmp_path_factory.mktemp("demo") / "wf-digits"
    run_untraining(*untraining_job_arguments(base_model=str(base_dir), dataset="digits", output_dir=str(out),
                                             epochs=3.0, batch_size=128, no_progress=True, eval_pairs=0))
    return out


@pytest.fixture(scope="module")
def demo(adapter_dir, tmp_path_factory):
    return UnlearnDemo.from_pretrained(str(adapter_dir), eval_per_class=20,
                                       workdir=tmp_path_factory.mktemp("demo-work"))


def recognised_image(demo):
    """A gallery image (and its class) that the base model classifies correctly."""
    for image, name in demo.gallery():
        if demo.predict(image, [])["base"][0]["label"] == name:
            return image, name
    raise AssertionError("the base model recognises none of the gallery images")


# ------------------------------------------------------------------------------- our card


def test_train_output_carries_our_card_with_results_and_demo_command(adapter_dir):
    text = (adapter_dir / "README.md").read_text()
    assert PEFT_CARD_MARK not in text and "More Information Needed" not in text
    metrics = json.loads((adapter_dir / "untraining_metrics.json").read_text())
    card = ModelCard.load(adapter_dir / "README.md")
    evals = {e.metric_type: e.metric_value for e in card.data.eval_results}
    assert evals["forget_accuracy"] == pytest.approx(metrics["accuracy"]["mean_forget_acc"], abs=1e-3)
    assert "hf-unlearn train --config untraining_config.yaml" in text
    assert f"hf-unlearn demo --adapter {adapter_dir}" in text
    # the same card a push renders (which adds the repo id and the Space link)
    from hf_unlearn.hub.cards import adapter_card

    pushed = str(adapter_card(UnlearnAdapter.from_pretrained(adapter_dir), adapter_dir / "untraining_metrics.json",
                              repo_id="me/wf", command="hf-unlearn train --config untraining_config.yaml",
                              space="me/wf-demo"))
    assert pushed.split("## Try it")[0].replace("me/wf", "X").count("|") == text.split("## Try it")[0].count("|")
    assert "https://huggingface.co/spaces/me/wf-demo" in pushed


def test_save_pretrained_replaces_peft_template_and_keeps_it_atomic(tmp_path):
    adapter = UnlearnAdapter.attach(build("vit"), image_processor=image_processor())
    adapter.save_pretrained(tmp_path / "a")
    text = (tmp_path / "a" / "README.md").read_text()
    assert PEFT_CARD_MARK not in text
    assert "No evaluation was published" in text
    assert not [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no temp files left


def test_cli_export_writes_the_exported_card(adapter_dir, tmp_path):
    from hf_unlearn.cli import main

    main(["export", str(adapter_dir), "--forget", "3", "--output_dir", str(tmp_path / "no3")])
    card = ModelCard.load(tmp_path / "no3" / "README.md")
    assert card.data.unlearned_classes == ["3"]
    assert f"hf-unlearn export {adapter_dir} --forget 3" in card.text
    # the per-class numbers of row 3 come from the report next to the adapter
    metrics = json.loads((adapter_dir / "untraining_metrics.json").read_text())
    evals = {e.metric_type: e.metric_value for e in card.data.eval_results}
    assert evals["forget_accuracy"] == pytest.approx(metrics["accuracy"]["forget_acc_per_class"][3], abs=1e-3)


def test_model_cards_render_script_names_the_run_folders_as_given(adapter_dir, digits_base, tmp_path, monkeypatch):
    """model_cards/render.py (which regenerates the committed example cards) on a real run's layout."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("render_cards", Path(__file__).parents[1] / "model_cards" / "render.py")
    render_cards = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, render_cards)  # its dataclass looks its module up
    spec.loader.exec_module(render_cards)
    run = tmp_path / "runs" / "quickstart"
    run.mkdir(parents=True)
    (run / "adapter").symlink_to(adapter_dir)
    (run / "base").symlink_to(digits_base[0])
    monkeypatch.chdir(tmp_path)
    paths = render_cards.render(render_cards.RenderArguments(run_dir="runs/quickstart", forget="3", output_dir="cards"))
    assert [p.name for p in paths] == ["quickstart-adapter.md", "quickstart-exported-without-3.md"]
    adapter_card, exported = (ModelCard.load(p) for p in paths)
    for card in (adapter_card, exported):
        assert "`runs/quickstart/base` (a local folder when this was made)" in card.text
        assert str(tmp_path) not in card.content and str(digits_base[0]) not in card.content
    assert "hf-unlearn train --config untraining_config.yaml" in adapter_card.text
    assert exported.data.unlearned_classes == ["3"]
    saved = (adapter_dir / "README.md").read_text()  # the card the run wrote: the same tables
    assert adapter_card.text.split("## Try it")[0].count("|") == saved.split("## Try it")[0].count("|")
    # --report/--name: another report of the same adapter, under another file name
    other = render_cards.render(render_cards.RenderArguments(
        run_dir="runs/quickstart", forget="3", output_dir="cards", name="evaluated",
        report=str(adapter_dir / "untraining_metrics.json")))
    assert [p.name for p in other] == ["evaluated-adapter.md", "evaluated-exported-without-3.md"]
    with pytest.raises(FileNotFoundError):
        render_cards.render(render_cards.RenderArguments(run_dir="runs/quickstart", report="missing.json"))


# ---------------------------------------------------------------------------- app functions


def test_predict_base_unchanged_unlearned_changes_in_one_pass(demo):
    image, name = recognised_image(demo)
    plain = demo.predict(image, [])
    assert plain["base"] == plain["unlearned"]
    out = demo.predict(image, [name])
    assert out["forget"] == [name]
    assert out["base"] == plain["base"]
    assert out["unlearned"][0]["label"] != name
    # the per-sample selection gives exactly what the adapter gives with the row applied to the batch
    pixels = demo._pixels([check_image(image, demo._num_channels)])
    with torch.no_grad():
        probs = demo.adapter(pixel_values=pixels, forget=name).logits.softmax(-1)[0]
    assert out["unlearned"][0]["score"] == pytest.approx(float(probs.max()), abs=1e-5)
    # a set of two classes works the same way
    assert demo.predict(image, [name, "1" if name != "1" else "2"])["base"] == plain["base"]


def test_accuracy_rows_for_a_set_and_the_progress(demo):
    seen = []
    result = demo.accuracy(["4", "7"], progress=lambda f, text: seen.append(f))
    assert result["forget"] == ["4", "7"] and result["n_samples"] == 200
    assert len(result["rows"]) == 20 and {r["model"] for r in result["rows"]} == {"base", "unlearned"}
    assert [r["class"] for r in result["rows"] if r["forgotten"]] == ["4", "4", "7", "7"]
    assert result["base_forget_acc"] >= 80 and result["forget_acc"] <= 30
    assert 0 <= result["retain_acc"] <= 100 and result["base_retain_acc"] >= 80  # (a 3-epoch adapter: sets cost RA)
    assert seen[-1] == 1.0 and seen == sorted(seen)
    # the rows are the per-class accuracies of adapter.predict on the same images
    unlearned_4 = next(r["accuracy"] for r in result["rows"] if r["class"] == "4" and r["model"] == "unlearned")
    rows = demo._class_rows()[4][:20]
    preds = demo.adapter.predict([demo._image(r) for r in rows], forget=["4", "7"])
    assert unlearned_4 == pytest.approx(100 * np.mean([p[0]["label"] == "4" for p in preds]))


def test_filter_map_is_a_png_of_the_chosen_rows(demo, tmp_path):
    one = demo.filter_map(["2"], tmp_path / "one.png")
    two = demo.filter_map(["2", "5"], tmp_path / "two.png")
    for path in (one, two):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 200
    from hf_unlearn.explain.filters import filter_maps

    names, rows = demo.filter_map_rows(["5", "2"])
    assert names == ["2", "5", "2 × 5"]
    for layer, full in filter_maps(demo.adapter).items():
        np.testing.assert_allclose(rows[layer][:2], full[[2, 5]])
        np.testing.assert_allclose(1 - rows[layer][2], (1 - full[2]) * (1 - full[5]))  # the set multiplies alphas


def test_export_zip_loads_as_a_plain_model_with_its_card(demo, tmp_path):
    from transformers import AutoModelForImageClassification

    archive = demo.export_zip(["6"], tmp_path)
    assert archive.suffix == ".zip"
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl"))]
        z.extractall(tmp_path / "unzipped")
    folder = next((tmp_path / "unzipped").iterdir())
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md"} <= {p.name for p in folder.iterdir()}
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert model.config.unlearned_classes == ["6"]
    assert ModelCard.load(folder / "README.md").data.unlearned_classes == ["6"]
    x = demo._eval_sample()[0][:8]
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=x).logits, demo.adapter(pixel_values=x, forget="6").logits,
                                   rtol=1e-4, atol=1e-4)


def test_push_needs_a_token_and_a_repo_id(demo, monkeypatch):
    from hf_unlearn.hub.push import PushError

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", "/nonexistent/token")
    with pytest.raises(DemoInputError, match="ORG/NAME"):
        demo.push(["1"], "not a repo")
    with pytest.raises(PushError, match="token"):
        demo.push(["1"], "me/digits-without-1")


@pytest.mark.parametrize("bad, message", [
    (lambda d: d.predict(None, ["1"]), "No image"),
    (lambda d: d.predict(Image.new("CMYK", (8, 8)), ["1"]), "mode 'CMYK'"),
    (lambda d: d.predict(Image.new("I;16", (8, 8)), ["1"]), "mode 'I;16'"),
    (lambda d: d.predict(Image.new("L", (2, 2)), ["1"]), "2x2 pixels"),
    (lambda d: d.predict(Image.new("L", (64, 8)), ["1"]), "aspect ratio"),
    (lambda d: d.predict(Image.new("L", (5000, 5000)), ["1"]), "at most 4096"),
    (lambda d: d.predict(np.zeros((8, 8), dtype=np.float32), ["1"]), "must be uint8"),
    (lambda d: d.predict(np.zeros((8, 8, 2), dtype=np.uint8), ["1"]), "shape"),
    (lambda d: d.predict(Image.new("L", (8, 8)), ["Coat"]), "Unknown class name 'Coat'"),
    (lambda d: d.predict(Image.new("L", (8, 8)), [12]), "out of range"),
    (lambda d: d.accuracy([]), "at least one class"),
    (lambda d: d.filter_map([]), "at least one class"),
    (lambda d: d.export_zip(None), "at least one class"),
])
def test_bad_inputs_are_clear_errors(demo, bad, message):
    with pytest.raises(DemoInputError, match=message):
        bad(demo)


def test_good_images_of_other_modes_are_converted(demo):
    rgba = Image.new("RGBA", (16, 12), (0, 0, 0, 0))  # transparent: composited on white
    assert check_image(rgba, 1).getpixel((0, 0)) == 255
    assert check_image(np.zeros((8, 8, 3), dtype=np.uint8), 1).mode == "L"
    assert check_image(Image.new("P", (8, 8)), 3).mode == "RGB"


def test_dataset_is_read_from_the_adapter_or_must_be_given(adapter_dir, tmp_path):
    assert recorded_dataset(adapter_dir) == "digits"
    adapter = UnlearnAdapter.attach(build("resnet"), image_processor=image_processor())
    adapter.config.base_model_name_or_path = str(tmp_path / "base")
    build("resnet").save_pretrained(tmp_path / "base")
    adapter.save_pretrained(tmp_path / "bare")
    with pytest.raises(DemoInputError, match="--dataset"):
        UnlearnDemo.from_pretrained(str(tmp_path / "bare"))


def test_core_package_and_cli_help_do_not_import_gradio():
    code = ("import sys, contextlib, io\nimport hf_unlearn, hf_unlearn.demo, hf_unlearn.demo.space, hf_unlearn.hub.cards\n"
            "from hf_unlearn.cli import main\nwith contextlib.redirect_stdout(io.StringIO()) as out: main(['--help'])\n"
            "assert 'demo' in out.getvalue()\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'gradio'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ------------------------------------------------------------------------------- the Space


def test_space_files_pin_this_release_and_name_the_adapter(tmp_path):
    from hf_unlearn.demo.space import gradio_version, write_space

    folder = write_space(tmp_path / "space", "me/wf-digits", dataset="fashion_mnist", base_model="me/base")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "app.py", "requirements.txt"]
    card = SpaceCard.load(folder / "README.md")
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py"
    assert card.data.sdk_version == gradio_version()
    assert card.data.models == ["me/wf-digits", "me/base"]
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert (folder / "requirements.txt").read_text().strip() == f"hf_unlearn[demo]=={__version__}"
    app = (folder / "app.py").read_text()
    compile(app, "app.py", "exec")
    assert "ADAPTER = 'me/wf-digits'" in app and "DATASET = 'fashion_mnist'" in app
    assert "demo = create_app(ADAPTER, dataset=DATASET)" in app
    with pytest.raises(ValueError, match="ORG/NAME"):
        write_space(tmp_path / "bad", str(tmp_path), dataset="digits")  # a local folder cannot be a Space's adapter
    with pytest.raises(ValueError, match="dataset"):
        write_space(tmp_path / "bad", "me/wf-digits", dataset=None)
    assert not (tmp_path / "bad").exists()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from hub_server import HubServer

    server = HubServer(hf_home=tmp_path_factory.mktemp("hf_home_demo"))
    server.start()
    yield server
    server.stop()
    assert not server.errors, "test Hub server internal errors:\n" + "\n".join(server.errors)
    assert not server.unhandled, f"requests the test Hub server does not know: {server.unhandled}"


@pytest.mark.slow
def test_push_with_space_links_the_card_and_the_space_runs_the_same_app(hub, adapter_dir, digits_base, tmp_path):
    """`hf-unlearn push ADAPTER REPO --space ORG/SPACE`, then the Space's app.py built from the Hub."""
    hub.commit("test-org/digits-base", folder=digits_base[0], message="the base model")
    push = ["push", str(adapter_dir), "test-org/wf-digits", "--hub_base_model", "test-org/digits-base"]
    out = hub.run_python_json(textwrap.dedent(f"""
        import json, runpy
        from huggingface_hub import snapshot_download
        from hf_unlearn.cli import main
        from hf_unlearn.hub.push import PushError

        bad = []
        for argv in ({push!r} + ["--space", "no-slash"],  # not ORG/NAME
                     {push[:3]!r} + ["--space", "test-org/wf-digits-demo"]):  # a local base: no Space can load it
            try:
                main(argv)
            except SystemExit as err:
                bad.append(err.code)
        main({push!r} + ["--space", "test-org/wf-digits-demo"])
        space = snapshot_download("test-org/wf-digits-demo", repo_type="space")
        ns = runpy.run_path(space + "/app.py")  # not __main__: builds the app, does not serve it
        app = ns["demo"]
        names = sorted(d["api_name"] for d in app.config["dependencies"] if d.get("api_visibility") != "private")
        pushed = app.unlearn_demo.push(["3"], "test-org/digits-without-3")  # the app's push button
        print(json.dumps({{"bad": bad, "space": space, "names": names, "type": type(app).__name__,
                          "source": app.unlearn_demo.source, "pushed": pushed.oid}}))
    """), timeout=300)
    assert out["bad"] == [1, 1]  # both fail before anything is pushed
    space = hub.repo("test-org/wf-digits-demo", "space")
    assert sorted(space.files()) == [".gitattributes", "README.md", "app.py", "requirements.txt"]
    assert out["type"] == "Blocks" and out["source"] == "test-org/wf-digits"
    assert out["names"] == ["accuracy", "export", "filter_map", "predict", "push"]
    card = hub.repo("test-org/wf-digits").files()["README.md"].decode()
    assert "https://huggingface.co/spaces/test-org/wf-digits-demo" in card
    assert "hf-unlearn demo --adapter test-org/wf-digits" in card
    assert len(hub.repo("test-org/wf-digits").history()) == 2  # the bad pushes pushed nothing
    assert "models:\n- test-org/wf-digits\n- test-org/digits-base" in space.files()["README.md"].decode()
    exported = hub.repo("test-org/digits-without-3")
    assert exported.head() == out["pushed"]
    assert {"model.safetensors", "config.json", "README.md"} <= set(exported.files())
    assert "unlearned_classes:\n- '3'" in exported.files()["README.md"].decode()


# -------------------------------------------------------------------------- the running app


@pytest.fixture(scope="module")
def served(demo):
    pytest.importorskip("gradio", reason='the demo needs Gradio: pip install "hf_unlearn[demo]"')
    from hf_unlearn.demo.app import build_app, serve

    app = build_app(demo)
    serve(app, host="127.0.0.1", port=None, prevent_thread_lock=True, quiet=True)
    yield app.local_url.rstrip("/")
    app.close()


def test_gradio_client_endpoints(served, demo, tmp_path):
    gradio_client = pytest.importorskip("gradio_client")
    from gradio_client import handle_file

    image, name = recognised_image(demo)
    path = tmp_path / "x.png"
    image.save(path)
    client = gradio_client.Client(served, verbose=False)
    base, unlearned = client.predict([name], handle_file(str(path)), api_name="/predict")
    assert base["label"] == name and unlearned["label"] != name
    frame, text = client.predict([name], api_name="/accuracy")
    assert "forget accuracy" in text and len(frame["data"]) == 2 * len(demo.class_names)
    png = client.predict([name], api_name="/filter_map")
    assert Image.open(png).format == "PNG"
    archive = client.predict([name], api_name="/export")
    assert zipfile.is_zipfile(archive)
    with pytest.raises(Exception, match="Unknown class name 'Coat'"):
        client.predict(["Coat"], handle_file(str(path)), api_name="/predict")
    with pytest.raises(Exception, match="No image"):
        client.predict([name], None, api_name="/predict")


def _chromium(tmp_path):
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("Chromium cannot start: the chromium / chromium-driver packages are not installed "
                    "(bash scripts/setup.sh installs them)")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1500",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    opts.binary_location = browser
    try:
        return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))
    except WebDriverException as err:
        pytest.skip(f"Chromium cannot start here: {str(err).splitlines()[0]}")


def test_browser_forget_a_class_and_see_only_the_unlearned_prediction_change(served, demo, tmp_path):
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    gallery = demo.gallery()
    index = next(i for i, (image, name) in enumerate(gallery) if demo.predict(image, [])["base"][0]["label"] == name
                 and demo.predict(image, [name])["unlearned"][0]["label"] != name)
    name = gallery[index][1]
    driver = _chromium(tmp_path)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(served)

        def top(elem_id):
            found = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} [data-testid='label-output-value']")
            return found[0].text if found else None

        def classify(before):
            driver.find_element(By.ID, "classify").click()
            wait.until(lambda d: (top("base"), top("unlearned")) != before and top("unlearned") is not None)
            return top("base"), top("unlearned")

        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery button.thumbnail-item")) == len(gallery))
        driver.find_elements(By.CSS_SELECTOR, "#gallery button.thumbnail-item")[index].click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image img"))
        before = classify((None, None))
        assert before == (name, name)  # nothing forgotten: both models recognise it

        box = driver.find_element(By.CSS_SELECTOR, "#forget input")
        box.click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"li[data-testid='dropdown-option'][aria-label='{name}']"))
        driver.find_element(By.CSS_SELECTOR, f"li[data-testid='dropdown-option'][aria-label='{name}']").click()
        box.send_keys(Keys.ESCAPE)
        assert [t.text for t in driver.find_elements(By.CSS_SELECTOR, "#forget .token")] == [name]
        base, unlearned = classify(before)
        assert base == name  # the base model still recognises it
        assert unlearned != name  # the unlearned model no longer does

        driver.find_element(By.ID, "measure").click()
        wait.until(lambda d: "forget accuracy" in d.find_element(By.ID, "chart_text").text)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart canvas, #chart svg.marks"))  # the bars drawn
        shot = tmp_path / "demo.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        driver.quit()


def test_demo_command_line_errors_and_write_space(adapter_dir, tmp_path, capsys):
    from hf_unlearn.cli import main

    bare = tmp_path / "bare"
    UnlearnAdapter.attach(build("resnet"), image_processor=image_processor()).save_pretrained(bare)
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--adapter", str(bare)])
    assert exit_info.value.code == 2 and "pass --dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--adapter", str(adapter_dir), "--write_space", str(tmp_path / "s")])  # a folder, not a Hub id
    assert "ORG/NAME" in capsys.readouterr().err and not (tmp_path / "s").exists()
    main(["demo", "--adapter", "me/wf", "--dataset", "digits", "--write_space", str(tmp_path / "s")])
    assert (tmp_path / "s" / "app.py").is_file()
