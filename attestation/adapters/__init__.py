"""Adapters between the pure core and the world: the only Kubernetes client wrapper (``kube``),
the one list/watch/relist loop (``informer``), the HTTP client to agents (``httpclient``), the
embedded uvicorn server (``serving``), the readers of image trees and images (``filetree``,
``imagefs``) and of files someone else placed (``safefile``). The agent, the verifier and the
webhook build on them; they build only on the core."""
