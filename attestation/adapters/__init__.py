"""Adapters between the pure core and the world: the only Kubernetes client wrapper (``kube``),
the one list/watch/relist loop (``informer``), the HTTP client to agents (``httpclient``), the
embedded uvicorn server (``serving``), the image-tree reader (``filetree``) and the reader of
files someone else placed (``safefile``). The agent, the verifier and the webhook build on them; they build only on the core."""
