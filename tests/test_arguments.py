"""The one argument parser of the sub-commands: dataclasses in, dataclasses out, YAML configs checked."""

from dataclasses import dataclass, field

import pytest
import yaml

from hf_unlearn.commands.arguments import DataArguments, RuntimeArguments, load_config, parse_arguments


@dataclass
class _Job:
    output_dir: str = field(metadata={"help": "where results go"})
    epochs: float = 2.0
    shots: list[int] = field(default_factory=lambda: [1, 5])
    flag: bool = False


def test_flags_config_and_defaults(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"output_dir": "from-config", "epochs": 3, "flag": True}))
    data, runtime, job = parse_arguments(
        (DataArguments, RuntimeArguments, _Job),
        ["--config", str(config), "--epochs", "4", "--no_progress", "--shots", "2", "3"],
    )
    assert data.dataset == "fashion_mnist" and runtime.no_progress and not runtime.cpu
    assert job == _Job(output_dir="from-config", epochs=4.0, shots=[2, 3], flag=True)  # the flag beats the config


def test_bool_reads_false_as_false():
    (job,) = parse_arguments((_Job,), ["--output_dir", "x", "--flag", "false"])
    assert job.flag is False


def test_unknown_config_key_is_named(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"output_dir": "x", "epoch": 3}))
    with pytest.raises(ValueError, match=r"unknown keys \['epoch'\].*epochs"):
        load_config(str(config), (_Job,))


def test_abbreviations_and_missing_required_fail():
    with pytest.raises(SystemExit):
        parse_arguments((_Job,), ["--output", "x"])
    with pytest.raises(SystemExit):
        parse_arguments((_Job,), [])


@dataclass
class _Lists:
    shots: list[int] = field(default_factory=lambda: [1], metadata={"nargs": "*", "help": "none = skip"})
    sizes: list[int] = field(default_factory=lambda: [2])


def test_a_list_marked_nargs_star_accepts_no_value():
    (lists,) = parse_arguments((_Lists,), ["--shots"])
    assert lists.shots == [] and lists.sizes == [2]
    with pytest.raises(SystemExit):  # the others keep HfArgumentParser's "one or more"
        parse_arguments((_Lists,), ["--sizes"])
