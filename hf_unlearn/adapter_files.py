"""An adapter's and an export's files on disk: where they come from (a local folder or the Hub
cache), the checks made before any model is loaded, and the atomic writing of an export.

Only safetensors are ever read; a folder or repo with pickle weights instead is refused.

Example:

```py
>>> from hf_unlearn.adapter_files import check_adapter_tensors, check_peft_type, resolve_adapter_folder
>>> folder = resolve_adapter_folder("me/resnet-fashion-wf")      # a local folder, or the Hub snapshot
>>> check_peft_type(folder)                                        # a weight-filter adapter?
>>> save_export(adapter.export(forget="Coat"), "resnet-without-coat", adapter.image_processor)
```
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Union

from peft.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME
from safetensors import SafetensorError, safe_open
from transformers import PreTrainedModel

from .hub.download import PICKLE_SUFFIXES, download_adapter
from .tuners.weight_filter import WeightFilterConfig, compare_layouts
from .tuners.weight_filter.config import UnlearnPeftType

__all__ = [
    "EXPORT_MARKER", "refuse_pickle", "resolve_adapter_folder", "read_adapter_config", "check_peft_type",
    "check_adapter_tensors", "remove_stale_temp_folders", "save_export", "check_export_target",
]


# ---------------------------------------------------------------------- where the files come from


def refuse_pickle(folder: Path, what: str) -> None:
    """Raise unless ``folder`` holds ``adapter_model.safetensors`` itself: pickles are never read.

    Any other ``.safetensors`` file does not count (a decoy next to ``adapter_model.bin`` would let
    PEFT fall back to unpickling the ``.bin``).
    """
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if SAFETENSORS_WEIGHTS_NAME not in names:
        pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise ValueError(
                f"{what} holds pickle weights ({', '.join(pickles)}) and no {SAFETENSORS_WEIGHTS_NAME}. "
                "hf_unlearn never unpickles files (loading a pickle can run arbitrary code): "
                "convert the weights to safetensors and upload those."
            )
        raise FileNotFoundError(f"{what} has no {SAFETENSORS_WEIGHTS_NAME}.")


def resolve_adapter_folder(name_or_path, *, revision=None, token=None, cache_dir=None) -> Path:
    """The local folder of an adapter: ``name_or_path`` itself, or the Hub repo downloaded into the cache.

    A local folder must hold ``adapter_config.json`` and safetensors weights (pickles are refused).

    Example:

    ```py
    >>> resolve_adapter_folder("me/resnet-fashion-wf")   # a Hub id: its snapshot in the cache
    PosixPath('/home/me/.cache/huggingface/hub/models--me--resnet-fashion-wf/snapshots/1f0e...')
    ```
    """
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path} has no {CONFIG_NAME}: is it an adapter folder?")
        refuse_pickle(path, f"Adapter folder {path}")
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; pass the adapter folder (with {CONFIG_NAME}) or a Hub repo id.")
    return download_adapter(str(name_or_path), revision=revision, token=token, cache_dir=cache_dir)


def read_adapter_config(folder: Union[str, os.PathLike]) -> dict:
    """The raw ``adapter_config.json`` of an adapter folder."""
    return json.loads((Path(folder) / CONFIG_NAME).read_text())



# ---------------------------------------------------------------------- checks before loading


def check_peft_type(folder: Union[str, os.PathLike]) -> None:
    """Raise a clear ``ValueError`` unless ``adapter_config.json`` is a readable weight-filter config."""
    path = Path(folder) / CONFIG_NAME
    try:
        peft_type = json.loads(path.read_text()).get("peft_type")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"{path} is not a readable JSON adapter config ({err}).") from err
    if peft_type != UnlearnPeftType.WEIGHT_FILTER.value:
        raise ValueError(
            f"{path} has peft_type {peft_type!r}; UnlearnAdapter loads {UnlearnPeftType.WEIGHT_FILTER.value!r} "
            "adapters only (load other PEFT adapters with peft.PeftModel.from_pretrained)."
        )


def check_adapter_tensors(folder: Union[str, os.PathLike], config: WeightFilterConfig) -> None:
    """Refuse an adapter file that does not hold exactly the filter tensors its signature names.

    PEFT loads adapter files non-strictly: an extra tensor (e.g. ``classifier.weight``) would be
    written into the BASE model, and a missing filter would silently stay at its initial value.
    Only the header is read (no tensor data).

    Example:

    ```py
    >>> check_adapter_tensors("runs/wf-resnet", WeightFilterConfig.from_pretrained("runs/wf-resnet"))
    ```
    """
    path = Path(folder) / SAFETENSORS_WEIGHTS_NAME
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err}); save the adapter again.") from err
    suffix = ".weight_filter_theta"
    layers = (config.base_model_signature or {}).get("filtered_layers")
    if layers:
        expected = {f"base_model.model.{name}{suffix}": (int(config.num_classes), int(out)) for name, out in layers.items()}
    else:  # no signature (hand-made config): at least nothing but filters
        expected = {k: v for k, v in shapes.items() if k.endswith(suffix)}
    missing, extra, resized = compare_layouts(expected, shapes)
    if extra or missing or resized:
        problems = []
        if extra:
            problems.append(f"{len(extra)} tensor(s) that are not filters of this adapter: {extra[:5]}")
        if missing:
            problems.append(f"{len(missing)} filter tensor(s) missing: {missing[:5]}")
        if resized:
            k = resized[0]
            problems.append(f"{len(resized)} of the wrong shape, e.g. {k}: {shapes[k]} instead of {expected[k]}")
        raise ValueError(
            f"{path} does not match its {CONFIG_NAME} ({'; '.join(problems)}). It must hold exactly "
            "the filters the config's base_model_signature lists and nothing that would change the "
            "base model: get an untampered copy of the adapter."
        )


# ---------------------------------------------------------------------- atomic saving


def remove_stale_temp_folders(parent: Path, prefix: str) -> None:
    """Delete ``<prefix><pid>-*`` folders under ``parent`` whose writing process is gone (killed saves)."""
    for path in parent.glob(f"{prefix}*"):
        pid = path.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue  # another live process is saving right now
        shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


EXPORT_MARKER = "unlearned_class_ids"  # in config.json of every folder save_export writes


def save_export(model: PreTrainedModel, output_dir: Union[str, os.PathLike], image_processor: Any = None,
                write_extra=None) -> Path:
    """Write an exported model (``UnlearnAdapter.export``) to ``output_dir`` atomically.

    Everything is written to a temporary sibling folder, which then replaces ``output_dir`` by
    renames: a killed export leaves either the previous export or the new one, never a mix.
    ``output_dir`` must be new, empty, or an earlier export (it is replaced as a whole).
    ``write_extra(folder)`` may add files (e.g. the model card) to the new export before the swap.

    Example:

    ```py
    >>> save_export(adapter.export(forget="Coat"), "resnet-without-coat", adapter.image_processor)
    ```
    """
    target = Path(output_dir).expanduser().absolute()
    check_export_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_prefix, old_prefix = f".{target.name}.exporting-", f".{target.name}.replaced-"
    remove_stale_temp_folders(target.parent, tmp_prefix)
    remove_stale_temp_folders(target.parent, old_prefix)
    tmp = Path(tempfile.mkdtemp(prefix=f"{tmp_prefix}{os.getpid()}-", dir=target.parent))
    try:
        model.save_pretrained(str(tmp))
        if image_processor is not None:
            image_processor.save_pretrained(str(tmp))
        if write_extra is not None:
            write_extra(tmp)
        # mkdtemp makes the folder private (0700) and safetensors writes 0600: an export is meant to be shared
        os.chmod(tmp, 0o777 & ~_umask())
        for path in tmp.iterdir():
            os.chmod(path, 0o666 & ~_umask())
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{old_prefix}{os.getpid()}-", dir=target.parent))
            os.replace(target, old / "export")  # the previous export stays whole until the swap
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_export_target(target: Path) -> None:
    """Raise unless ``target`` may receive an export: new, empty, or an earlier export (replaced whole).

    ``hf-unlearn export`` calls it before loading any model, ``save_export`` again before writing.

    Example:

    ```py
    >>> check_export_target(Path("runs/resnet-without-coat").absolute())
    ```
    """
    if target.is_file():
        raise FileExistsError(f"--output_dir {target} is a file: give a folder for the exported model.")
    if not target.is_dir() or not any(target.iterdir()):
        return
    config = target / "config.json"
    try:
        is_export = EXPORT_MARKER in json.loads(config.read_text())
    except (OSError, ValueError):
        is_export = False
    if not is_export:
        raise FileExistsError(
            f"{target} already holds files and is not an earlier export (no {EXPORT_MARKER} in its "
            "config.json); an export replaces its folder as a whole. Choose a new or empty folder."
        )
