"""Hyper-parameter search (``python -m recjax tune``, the ``tune`` extra: Optuna): each
model family's search space (:mod:`recjax.tuning.space`: default TOML spaces shipped in
``recjax/tuning/spaces/``, replaceable by the user's own file), searched on the validation
carve with the family's CLI defaults as the first trial.
"""
