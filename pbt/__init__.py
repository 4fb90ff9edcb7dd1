"""Population-based training: exploit/explore decisions and hyperparameter mutation."""
