"""Adapters between the pure core and the world: the only Kubernetes client wrapper (``kube``),
the one list/watch/relist loop (``informer``), the HTTP client to agents (``httpclient``), the
embedded uvicorn server (``serving``), and the image-tree reader (``filetree``). The agent, the
verifier and the webhook build on them; they build only on the core."""
