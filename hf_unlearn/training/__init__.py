"""Training: the base model (``base``), the untraining round (``untrain``), retrain references
(``retrain``), the convergence rule (``convergence``) and the ``hf-unlearn train`` job (``job``).

Import from the submodules (``from hf_unlearn.training.untrain import untrain``); this package
re-exports nothing, so a module and a function of the same name never shadow each other.
"""
