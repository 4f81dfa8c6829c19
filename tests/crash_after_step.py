"""Run ``hf-unlearn train`` and kill the process (``os._exit(17)``: no cleanup, no final save) right
after optimiser step N, through the job's ``on_step`` callback: the tests' stand-in for a killed run.

    python tests/crash_after_step.py 11 --base_model ... --output_dir ... --checkpoint_every 5
    accelerate launch ... tests/crash_after_step.py 11 --cpu --base_model ...
"""

import os
import sys

from hf_unlearn.commands.train import parse_train_arguments
from hf_unlearn.training.job import run_untraining


def main() -> None:
    crash_after = int(sys.argv[1])

    def crash(step, accelerator):
        if step == crash_after:
            os._exit(17)

    run_untraining(*parse_train_arguments(sys.argv[2:]), on_step=crash)


if __name__ == "__main__":
    main()
