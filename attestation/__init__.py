"""trustgate's attestation: a pure core (quotes, IMA logs, policies, verdicts) and its I/O shells
(the node agent, the verifier loop, the Kubernetes adapter, the CLI)."""
