"""Ray Tune's PopulationBasedTraining for `population.backend: tune`: the only part of pbt/
that imports Ray (the rest is pure, and launch/spec/rules.py validates with it without Ray)."""
