"""One module per ``trustgate`` subcommand; each has ``register(subparsers)``. The help reads
defaults from the settings dataclasses (which costs ``cryptography``'s import, ~0.3 s, that every
role pays anyway); the heavy parts — uvicorn, FastAPI, the Kubernetes client, the TPM stack — are
imported inside the handlers."""
