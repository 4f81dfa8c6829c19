"""Render this folder's example model cards from a quickstart run, with the package's own renderer.

    PYTHONPATH=. python model_cards/render.py --run_dir runs/quickstart --forget Trouser

writes ``model_cards/quickstart-adapter.md`` (what ``hf-unlearn push`` would publish for the adapter)
and ``model_cards/quickstart-exported-without-<class>.md`` (what ``hf-unlearn export --push_to_hub``
would publish). ``--report runs/eval/report.json --name <prefix>`` publishes an evaluation report of the
same adapter instead (one with retrain references carries the representation tests). The cards name the run's folders as given in ``--run_dir`` (relative), not as the
absolute paths the run recorded, so that they read the same on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from hf_unlearn import UnlearnAdapter
from hf_unlearn.commands.arguments import parse_arguments
from hf_unlearn.files import atomic_write_text
from hf_unlearn.hub.card_data import find_report, load_report
from hf_unlearn.hub.cards import TRAIN_CONFIG, adapter_card, exported_card


@dataclass
class RenderArguments:
    run_dir: str = field(default="runs/quickstart", metadata={"help": "the quickstart's --output_dir"})
    forget: str = field(default="Trouser", metadata={"help": "the class the quickstart exported away"})
    output_dir: str = field(default="model_cards", metadata={"help": "where the cards go"})
    report: Optional[str] = field(default=None, metadata={
        "help": "a report.json of recipes/evaluate.py to publish instead of the one next to the adapter "
                "(e.g. with retrain references: the probe, CKA and relearning tables)"})
    name: str = field(default="quickstart", metadata={"help": "file name prefix of the cards"})


def render(args: RenderArguments) -> list[Path]:
    """Write the adapter's and the exported model's cards; returns their paths."""
    run, out = Path(args.run_dir), Path(args.output_dir)
    adapter_dir = run / "adapter"
    adapter = UnlearnAdapter.from_pretrained(adapter_dir)
    adapter.config.base_model_name_or_path = str(run / "base")  # as typed, not this machine's absolute path
    report = load_report(Path(args.report) if args.report else find_report(adapter_dir))
    report["base_model"] = str(run / "base")  # the run line too names the folder as typed
    command = f"hf-unlearn train --config {TRAIN_CONFIG}" if (adapter_dir / TRAIN_CONFIG).is_file() else None
    card = adapter_card(adapter, report, command=command, location=str(adapter_dir))
    paths = [atomic_write_text(out / f"{args.name}-adapter.md", str(card))]
    model = adapter.export(forget=args.forget)
    name = "-".join(model.config.unlearned_classes).replace("/", "-").replace(" ", "-")
    card = exported_card(model, None, report, adapter_repo=str(adapter_dir), base_model=str(run / "base"))
    paths.append(atomic_write_text(out / f"{args.name}-exported-without-{name}.md", str(card)))
    return paths


def main(argv: Optional[Sequence[str]] = None) -> None:
    (args,) = parse_arguments((RenderArguments,), argv, prog="model_cards/render.py", config=False)
    for path in render(args):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
