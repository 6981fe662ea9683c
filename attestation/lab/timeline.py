"""Record node and pod trust over time during the demo, and draw it as a PNG."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from attestation.core.names import NODE_STATES, POD_STATES

__all__ = ["COLOURS", "Sample", "Timeline"]

_BY_TRUST = {
    "trusted": "#2e9d4f",
    "untrusted": "#d43a2f",
    "unknown": "#9a9a9a",
    "pending": "#f0b429",
}
#: Colours by state: nodes (NodeAttestation state) and pods (trust-state annotation / lifecycle).
COLOURS: dict[str, str] = {
    **{state: _BY_TRUST[state.lower()] for state in (*NODE_STATES, *POD_STATES)},
    "evicted": "#7a1f1a",
    "none": "#ffffff",
}

Sample = dict[str, str]  # row name -> state


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    samples: list[tuple[float, Sample]] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def now(self) -> float:
        return time.monotonic() - self.started

    def mark(self, label: str) -> None:
        self.marks.append((self.now(), label))

    def record(self, sample: Callable[[], Sample], every: float = 0.2) -> None:
        """Sample in the background until :meth:`stop`; the plot's time 0 is now."""
        self.started = time.monotonic()

        def run() -> None:
            while not self._stop.is_set():
                try:
                    self.samples.append((self.now(), sample()))
                except Exception:  # noqa: S112 - a failed sample is a gap in the plot, not an error
                    continue
                finally:
                    self._stop.wait(every)

        self._thread = threading.Thread(target=run, name="timeline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def draw(self, path: Path, title: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch

        rows: list[str] = []
        for _, sample in self.samples:
            for name in sample:
                if name not in rows:
                    rows.append(name)
        rows.sort(key=lambda r: (not r.startswith("node "), r))
        end = self.samples[-1][0] if self.samples else self.now()
        fig, ax = plt.subplots(figsize=(13, 1.2 + 0.45 * max(len(rows), 1)), dpi=110)
        for y, row in enumerate(rows):
            spans: list[tuple[float, float, str]] = []
            for k, (t, sample) in enumerate(self.samples):
                state = sample.get(row, "none")
                t_next = self.samples[k + 1][0] if k + 1 < len(self.samples) else end
                if spans and spans[-1][2] == state:
                    spans[-1] = (spans[-1][0], t_next, state)
                else:
                    spans.append((t, t_next, state))
            for t0, t1, state in spans:
                if state != "none":
                    ax.barh(y, t1 - t0, left=t0, height=0.6, color=COLOURS.get(state, "#5b8def"))
        for k, (t, label) in enumerate(self.marks):
            ax.axvline(t, color="#333333", linewidth=0.8, linestyle="--")
            ax.annotate(
                label,
                (t, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, 4 + 10 * (k % 3)),
                textcoords="offset points",
                fontsize=7,
                ha="left",
                va="bottom",
                annotation_clip=False,
            )
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("seconds since the verifier started")
        ax.set_xlim(0, max(end, 1))
        ax.set_title(title, fontsize=10, pad=30)
        legend = [Patch(color=COLOURS[s], label=s) for s in
                  ("trusted", "untrusted", "unknown", "pending", "evicted")]  # fmt: skip
        ax.legend(
            handles=legend,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.12),
            fontsize=7,
            ncol=5,
            frameon=False,
        )
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
