"""kill -9 at random moments, then check that nothing was lost (issue 10's acceptance loop).

    python scripts/kill9_loop.py --work /work/runs/issue10/kill9 --train_kills 8 --export_kills 12

1. train + resume: a reference run goes through uninterrupted; a second run of the same config is
   SIGKILLed at random times and restarted each time (``--resume latest`` once a complete checkpoint
   exists, else ``--overwrite_output_dir``) until it finishes. Its adapter must equal the
   reference's, and no temporary folder may be left behind.
2. export over an existing export: ``hf-unlearn export`` over a folder holding an earlier export,
   SIGKILLed at random times. After every kill the folder must be ONE complete export: config.json
   readable, and the weights forgetting exactly the class its ``unlearned_class_ids`` names.

Prints a JSON summary (also written to ``<work>/kill9.json``); exit status 1 if anything was lost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from hf_unlearn.files import atomic_write_text

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONWARNINGS": "ignore",
       "OMP_NUM_THREADS": "1"}


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "hf_unlearn.cli", *args]


def run_killed(cmd, delay: float) -> bool:
    """Start ``cmd``, SIGKILL it after ``delay`` s; True if it was killed (False: it finished first)."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def filters(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def train_loop(work: Path, base: Path, kills: int, rng: random.Random) -> dict:
    import torch

    common = ["--base_model", str(base), "--dataset", "digits", "--max_train_samples", "512", "--batch_size", "32",
              "--epochs", "2", "--eval_split", "", "--no_progress", "--seed", "3", "--checkpoint_every", "3",
              "--num_threads", "1"]
    ref, killed_dir = work / "train-reference", work / "train-killed"
    for d in (ref, killed_dir):
        shutil.rmtree(d, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(cli("train", *common, "--output_dir", str(ref)), env=ENV, check=True, capture_output=True)
    full = time.perf_counter() - start
    kill_times, actual_kills = [], 0
    for _ in range(kills + 50):
        resume = any((killed_dir / "checkpoints").glob("checkpoint-*/progress.json"))
        cmd = cli("train", *common, "--output_dir", str(killed_dir),
                  *(["--resume", "latest"] if resume else ["--overwrite_output_dir"]))
        if actual_kills >= kills:
            done = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
            if done.returncode != 0:
                return {"ok": False, "error": done.stderr[-2000:]}
            break
        delay = rng.uniform(0.3, 1.0) * full
        if run_killed(cmd, delay):
            actual_kills += 1
            kill_times.append(round(delay, 2))
    a, b = filters(ref), filters(killed_dir)
    same = a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)
    leftovers = [p.name for p in killed_dir.iterdir() if p.name.startswith(".")]
    return {"ok": bool(same and not leftovers), "kills": actual_kills, "kill_after_s": kill_times,
            "uninterrupted_run_s": round(full, 1), "adapter_equal_to_reference": bool(same),
            "temp_leftovers": leftovers}


def export_loop(work: Path, adapter_dir: Path, kills: int, rng: random.Random) -> dict:
    import torch
    from transformers import AutoModelForImageClassification

    from hf_unlearn import UnlearnAdapter

    out = work / "export"
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(cli("export", str(adapter_dir), "--forget", "1", "--output_dir", str(out)), env=ENV, check=True,
                   capture_output=True)
    adapter = UnlearnAdapter.from_pretrained(adapter_dir)
    x = torch.randn(4, adapter.base_model.config.num_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = {c: adapter(pixel_values=x, forget=c).logits for c in range(adapter.num_classes)}
    start = time.perf_counter()
    subprocess.run(cli("export", str(adapter_dir), "--forget", "2", "--output_dir", str(out)), env=ENV, check=True,
                   capture_output=True)
    full = time.perf_counter() - start
    results, broken = [], []
    for i in range(kills):
        target_class = rng.choice([c for c in range(adapter.num_classes)])
        delay = rng.uniform(0.5, 1.05) * full
        killed = run_killed(cli("export", str(adapter_dir), "--forget", str(target_class), "--output_dir", str(out)),
                            delay)
        try:
            ids = json.loads((out / "config.json").read_text())["unlearned_class_ids"]
            model = AutoModelForImageClassification.from_pretrained(out).eval()
            with torch.no_grad():
                consistent = len(ids) == 1 and torch.allclose(model(pixel_values=x).logits, expected[ids[0]],
                                                              atol=1e-5)
        except Exception as err:  # a torn or missing export is exactly what must not happen
            ids, consistent = f"unreadable: {type(err).__name__}: {err}", False
        results.append({"killed": killed, "asked": target_class, "folder_says": ids, "consistent": consistent})
        if not consistent:
            broken.append(i)
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(".export.")]
    return {"ok": not broken, "kills": sum(r["killed"] for r in results), "runs": len(results),
            "inconsistent": broken, "temp_leftovers_after_loop": leftovers, "uninterrupted_export_s": round(full, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/kill9")
    parser.add_argument("--train_kills", type=int, default=8)
    parser.add_argument("--export_kills", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(args.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    base = work / "digits-base"
    if not (base / "model.safetensors").is_file():
        from hf_unlearn.commands.train_base import TrainBaseArguments
        from hf_unlearn.training.base import train_base

        train_base(TrainBaseArguments(preset="resnet-micro", dataset="digits", epochs=15, output_dir=str(base),
                                      no_progress=True, seed=0))
    summary = {"train_resume": train_loop(work, base, args.train_kills, rng)}
    summary["export_over_export"] = export_loop(work, work / "train-reference", args.export_kills, rng)
    summary["nothing_lost"] = summary["train_resume"]["ok"] and summary["export_over_export"]["ok"]
    text = json.dumps(summary, indent=2)
    atomic_write_text(work / "kill9.json", text)
    print(text)
    return 0 if summary["nothing_lost"] else 1


if __name__ == "__main__":
    sys.exit(main())
