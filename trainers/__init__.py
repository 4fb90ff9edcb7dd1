"""Models, tasks and the training loop that one DeepSpeed worker runs.

Knows nothing of YAML: it receives the already-parsed config sections it uses.
"""
