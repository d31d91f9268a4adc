"""Sub-command modules of ``mailfleet`` (each with ``register(subparsers)``)."""
