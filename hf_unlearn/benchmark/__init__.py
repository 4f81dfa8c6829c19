"""Measuring hf_unlearn against its peers and on real hardware.

- ``arguments``, ``run``, ``rows``, ``tables``: the benchmark (WF vs every peer unlearning method, same
  data, model and machine; ``recipes/benchmark.py`` is its command line);
- ``timing``, ``models``, ``images``: device-synchronised timers and peak memory, the real-size models
  and their tiny stand-ins, an image stream without ``datasets``;
- ``gpu``: the prepared GPU check (``recipes/gpu_check.py``, ``scripts/gpu_check.sh``).

The package re-exports nothing: import from the module, e.g.
``from hf_unlearn.benchmark.run import run_benchmark``.
"""
