"""One module per ``trustgate`` subcommand; each has ``register(subparsers)``. Imports of the
heavy parts happen inside the handlers, so ``trustgate --help`` stays fast."""
