"""Training stages: the shared loop (loop.py) and one module per stage."""
