"""A local lab: what `trustgate demo` and the test suite need to stand up a real control plane,
software TPMs and simulated nodes on one machine. Never imported by the product's runtime paths."""

__all__: list[str] = []
