"""One prepared check of the CUDA path: mixed precision, real-size step cost and latency, a launched round.

    bash scripts/gpu_check.sh                          # full size on a GPU (about 3-5 min on an H200)
    bash scripts/gpu_check.sh --smoke --cpu            # tiny models on CPU, ~1 min: what the test suite runs
    bash scripts/gpu_check.sh --help                   # every option

The check itself is ``hf_unlearn.benchmark.gpu`` (its ``check`` module's docstring says what it measures);
``scripts/gpu_check.sh`` sets the environment and calls this file.
"""

import os
import sys

try:
    import hf_unlearn  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_unlearn.benchmark.gpu.check import main

if __name__ == "__main__":
    sys.exit(main())
