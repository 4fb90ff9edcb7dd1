"""Process groups and the gradient exchange (see exchange.py)."""
