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
