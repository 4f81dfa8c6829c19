# Make the helper modules in tests/ importable from test files, e.g.
# `from hub_server import hub_server` (the local Hugging Face Hub test server fixture).
import os
import sys
import tempfile

# Tests never reach the Hub, and never write into the user's cache: one temporary HF_HOME per run.
# Set before any test module imports huggingface_hub/datasets (they read these at import).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="hf_unlearn-tests-hf-home-"))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits_base(tmp_path_factory):
    """A ResNet micro preset trained on sklearn digits (seconds), saved like recipes/train_base.py does."""
    from hf_unlearn.commands.train_base import TrainBaseArguments
    from hf_unlearn.training.base import train_base

    out = tmp_path_factory.mktemp("digits-base")
    metrics = train_base(TrainBaseArguments(preset="resnet-micro", dataset="digits", epochs=15, output_dir=str(out),
                                            no_progress=True, seed=0))
    return out, metrics
