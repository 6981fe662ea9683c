"""The verifier: re-attests every node (collector -> ``core.verdict``), publishes signed verdicts,
labels, taints and annotations (publisher), evicts divergent pods (remediate), keeps the audit
file, and elects a leader."""
