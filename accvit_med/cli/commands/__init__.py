"""One module per command; each defines ``register(app)`` (see accvit_med.cli.app)."""
