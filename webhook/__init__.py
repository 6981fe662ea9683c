"""trustgate's admission webhook: 5G core pods only land on nodes with fresh, passing,
verifier-signed attestation; every other pod passes untouched."""
