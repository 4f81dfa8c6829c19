"""The Gradio app around :class:`hf_unlearn.demo.UnlearnDemo` (``pip install "hf_unlearn[demo]"``).

Every callback is a thin wrapper: the work and the checks are in :mod:`hf_unlearn.demo.core`, and a
:class:`~hf_unlearn.demo.core.DemoInputError` (or a failed push) is shown to the user as a
``gr.Error`` with its message. The API endpoints (for ``gradio_client``) are ``/predict``,
``/accuracy``, ``/filter_map``, ``/export`` and ``/push``.

Example:

```py
>>> from hf_unlearn.demo.app import create_app, serve
>>> app = create_app("runs/quickstart/adapter")      # or a Hub repo id; dataset= to override
>>> serve(app, host="127.0.0.1", port=7860)
```
"""

# No `from __future__ import annotations`: Gradio reads the `gr.SelectData` annotation at run time.
import functools
import os
from typing import Any, Optional

from huggingface_hub import get_token

from ..hub.push import PushError
from .core import DemoInputError, UnlearnDemo

# Datasets like digits and Fashion-MNIST have 8-28 px images: show their pixels, not a blur.
CSS = ("#image img, #gallery img { image-rendering: pixelated; }\n"
       "#image img { width: 100%; height: 100%; object-fit: contain; }")
INSTALL_HINT = 'The demo needs Gradio: pip install "hf_unlearn[demo]"'


def import_gradio():
    """``gradio``, or an ImportError that says how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a demo
    try:
        import gradio as gr
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err}).") from err
    return gr


def _label(preds: list[dict]) -> dict[str, float]:
    return {p["label"]: float(p["score"]) for p in preds}


def _rows_frame(result: dict):
    import pandas as pd  # comes with Gradio (the demo extra), like everything this function feeds

    rows = [{**r, "bar": f"{r['class']} · {r['model']}", "accuracy": r["accuracy"] if r["accuracy"] is not None else 0.0}
            for r in result["rows"]]
    return pd.DataFrame(rows, columns=["bar", "class", "model", "accuracy", "forgotten"])


def _fmt(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:.1f}%"


def accuracy_text(result: dict) -> str:
    """One line under the chart: FA and RA of the set next to the base model's."""
    return (f"Forgetting **{', '.join(result['forget'])}** on {result['n_samples']} test images: forget accuracy "
            f"{_fmt(result['forget_acc'])} (base {_fmt(result['base_forget_acc'])}), retain accuracy "
            f"{_fmt(result['retain_acc'])} (base {_fmt(result['base_retain_acc'])}).")


def build_app(demo: UnlearnDemo, *, top_k: int = 3, title: Optional[str] = None):
    """The ``gr.Blocks`` of the demo (not launched: see :func:`serve`).

    Example: ``build_app(UnlearnDemo.from_pretrained("runs/quickstart/adapter")).launch()``.
    """
    gr = import_gradio()
    names = demo.class_names
    gallery_items = demo.gallery() if demo.data is not None else []
    base_name = demo.adapter.config.base_model_name_or_path
    header = title or f"Unlearning with weight filters: {demo.source or base_name}"
    fns = _callbacks(gr, demo, top_k, gallery_items)
    with gr.Blocks(title="hf_unlearn demo") as app:
        gr.Markdown(
            f"# {header}\n"
            f"Base model `{base_name}`, {len(names)} classes; one weight-filter adapter forgets any of them, or any "
            "set, per request ([WF-Net](https://arxiv.org/abs/2304.02049), made with `hf_unlearn`). Choose classes, "
            "then pick a test image or upload one: the unlearned model should stop recognising them while the "
            "base model still does."
        )
        # Custom values on: a typed name (any case) or id reaches the demo's own check, whose error
        # lists the valid classes, through the UI and the API alike.
        forget = gr.Dropdown(choices=names, value=[], multiselect=True, allow_custom_value=True,
                             label="Classes to forget (names or ids)", elem_id="forget")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", image_mode=None, label="Image", sources=["upload", "clipboard"],
                                 elem_id="image", height=260)
                classify = gr.Button("Classify", variant="primary", elem_id="classify")
            if gallery_items:
                gallery = gr.Gallery(value=gallery_items, label=f"Test images of {demo.data.source} (click one)",
                                     columns=min(10, max(1, demo.gallery_per_class * 2)), height=260,
                                     allow_preview=False, elem_id="gallery")
                gallery.select(fns["pick"], None, image, api_visibility="private")
        with gr.Row():
            base_out = gr.Label(num_top_classes=top_k, label="Base model", elem_id="base")
            unlearned_out = gr.Label(num_top_classes=top_k, label="Unlearned model", elem_id="unlearned")
        classify.click(fns["predict"], [forget, image], [base_out, unlearned_out], api_name="predict")
        _tool_sections(gr, forget, fns)
    app.unlearn_demo = demo  # serve() allows the demo's folder for the files it hands out
    return app


def _callbacks(gr, demo: UnlearnDemo, top_k: int, gallery_items: list) -> dict:
    """The app's event handlers by name; each shows the demo's input errors (and failed pushes) to the
    user as a ``gr.Error`` instead of a traceback."""

    def errors(fn):
        @functools.wraps(fn)  # Gradio reads the signature (gr.Progress) through __wrapped__
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (DemoInputError, PushError) as err:
                raise gr.Error(str(err)) from None
        return wrapper

    @errors
    def predict(forget, image):
        """Top-k of the base and the unlearned model for one image."""
        out = demo.predict(image, forget or [], top_k=top_k)
        return _label(out["base"]), _label(out["unlearned"])

    @errors
    def accuracy(forget, progress=gr.Progress()):
        """Per-class accuracy of both models on the test sample, for the chosen set."""
        result = demo.accuracy(forget or [], progress=lambda f, text: progress(f, desc=text))
        return _rows_frame(result), accuracy_text(result)

    @errors
    def filter_map(forget):
        """The filter map (1 - alpha per unit and layer) of the chosen rows."""
        return str(demo.filter_map(forget or []))

    @errors
    def export(forget):
        """The model without the chosen classes, as a zip of a transformers model folder."""
        return str(demo.export_zip(forget or []))

    @errors
    def push(forget, repo_id):
        """Push the model without the chosen classes to the Hub (needs a token)."""
        info = demo.push(forget or [], (repo_id or "").strip())
        return f"Pushed to [{repo_id}]({info.commit_url}) (commit `{info.oid[:10]}`)."

    def pick(evt: gr.SelectData):
        return gallery_items[evt.index][0]

    return {"predict": predict, "accuracy": accuracy, "filter_map": filter_map, "export": export, "push": push,
            "pick": pick}


def _tool_sections(gr, forget, fns: dict) -> None:
    """The accordions under the predictions: the accuracy chart, the filter map, export and push."""
    with gr.Accordion("Accuracy per class on a test sample", open=True):
        chart_button = gr.Button("Measure", elem_id="measure")
        chart = gr.BarPlot(x="bar", y="accuracy", color="model", y_lim=[0, 100], x_label_angle=-45,
                           y_title="accuracy (%)", x_title="class · model", elem_id="chart", sort=None)
        chart_text = gr.Markdown(elem_id="chart_text")
        chart_button.click(fns["accuracy"], [forget], [chart, chart_text], api_name="accuracy")
    with gr.Accordion("Filter map of the chosen rows", open=False):
        map_button = gr.Button("Draw", elem_id="draw_map")
        map_image = gr.Image(type="filepath", label="1 - alpha per filtered layer and unit", elem_id="filter_map")
        map_button.click(fns["filter_map"], [forget], map_image, api_name="filter_map")
    with gr.Accordion("Export the unlearned model", open=False):
        gr.Markdown("Folds the chosen rows into the weights: a plain transformers model, no adapter, with its "
                    "model card. Only this form is unlearned for whoever receives it.")
        export_button = gr.Button("Export as a zip", elem_id="export")
        export_file = gr.File(label="model folder (zip)", elem_id="export_file")
        export_button.click(fns["export"], [forget], export_file, api_name="export")
        has_token = bool(get_token())
        repo = gr.Textbox(label="Hub repo (ORG/NAME)", interactive=has_token, elem_id="repo",
                          placeholder="me/model-without-them" if has_token else
                          "no Hub token configured: `hf auth login` or HF_TOKEN to push")
        push_button = gr.Button("Push to the Hub", interactive=has_token, elem_id="push")
        push_text = gr.Markdown()
        push_button.click(fns["push"], [forget, repo], push_text, api_name="push")


def create_app(adapter: str, *, dataset: Optional[str] = None, split: str = "test", top_k: int = 3,
               title: Optional[str] = None, **kwargs):
    """Load ``adapter`` (folder or Hub id) and its test data, and build the app (what a Space's app.py calls)."""
    import_gradio()  # fail before loading any model
    demo = UnlearnDemo.from_pretrained(adapter, dataset=dataset, split=split, **kwargs)
    return build_app(demo, top_k=top_k, title=title)


def serve(app, *, host: Optional[str] = None, port: Optional[int] = None, prevent_thread_lock: bool = False,
          **launch_kwargs: Any):
    """``app.launch`` with the demo's work folder allowed (filter maps and zips are served from there).

    ``host``/``port`` default to Gradio's own (``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``, as on a Space).
    """
    demo = getattr(app, "unlearn_demo", None)
    allowed = [str(demo.workdir)] if demo is not None else []
    return app.launch(server_name=host, server_port=port, prevent_thread_lock=prevent_thread_lock,
                      allowed_paths=allowed, share=False, footer_links=["api"], css=CSS,
                      show_error=True,  # any other failure: its message in the page, not just "Error"
                      **launch_kwargs)
