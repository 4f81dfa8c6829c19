"""The prepared GPU check (``scripts/gpu_check.sh`` -> ``recipes/gpu_check.py`` -> :mod:`.check`):
``settings`` (options, shared pieces), ``cases`` (training steps, inference latency), ``round`` (the
launched untraining round), ``report`` (checks, targets, the report files). Re-exports nothing."""
