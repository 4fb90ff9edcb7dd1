"""Ray Tune's PopulationBasedTraining for `population.backend: tune` (`tune_scheduler.py`),
and every use of Ray's private API in sparsepop, launch's included (`private_api.py`): the
only part of pbt/ that imports Ray (the rest is pure, and launch/spec/rules.py validates with
it without Ray)."""
