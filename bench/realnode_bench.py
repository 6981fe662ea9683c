"""Reading a real kernel's IMA list: what one agent round costs with 10k+ entries in securityfs.

    .venv/bin/python bench/realnode_bench.py              # 10,000 new measurements
    .venv/bin/python bench/realnode_bench.py --entries 2000

Boots the realnode guest (Debian 12's kernel under QEMU/TCG, swtpm, the agent inside with its
production defaults; attestation.lab.realnode), makes the kernel measure ``--entries`` distinct
files (each mapped executable from /tmp: one MMAP_CHECK measurement and one PCR 10 extend each),
then measures inside the guest, on the real ``binary_runtime_measurements``:

- the baseline, what the agent did every watch tick and every page before: open, seek to the
  last end, read to EOF (a seek on the seq_file re-formats every record up to the offset);
- the kept-open cursor the agent uses now (attestation.agent.log): read on from where it was;

both as CPU seconds (user + system) per round over the same list, and their ratio; and the
agent process's own CPU per watch tick (its 50 ms poll of the list) and RSS, before and after
the list grew. Detection latency (push) is what tests/realnode prints (exec -> Untrusted).
Writes bench/out/realnode.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, write_result

from attestation.lab.kernel import debian_kernel
from attestation.lab.pki import CertificateAuthority
from attestation.lab.process import free_port
from attestation.lab.realnode import IMA_LIST, RealNode
from attestation.lab.swtpm import LocalCa

#: Runs in the guest (the host's Python over the share): grows the list, then times both reads.
_GUEST = r"""
import json, mmap, os, sys, time
from attestation.agent.log import ImaLogFile
n, rounds, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.makedirs("/tmp/m", exist_ok=True)
t = time.perf_counter()
for i in range(n):
    p = f"/tmp/m/{i}"
    with open(p, "wb") as f:
        f.write(b"realnode bench %d" % i)
    fd = os.open(p, os.O_RDONLY)
    mmap.mmap(fd, 0, prot=mmap.PROT_READ | mmap.PROT_EXEC).close()
    os.close(fd)
grow = time.perf_counter() - t
log = ImaLogFile(__import__("pathlib").Path(path))
end = log.end_offset(0)
def cpu(fn):
    t = time.process_time()
    for _ in range(rounds):
        fn()
    return (time.process_time() - t) / rounds
seek = cpu(lambda: log.end_offset(end))          # reopen + seek to the end + read to EOF
log.read_from(end, 1 << 20)                       # the kept cursor, at the end
kept = cpu(lambda: log.read_from(end, 1 << 20))  # read on: nothing new
print(json.dumps({"grow_seconds": grow, "list_bytes": end, "reopen_seek_cpu": seek,
                  "kept_open_cpu": kept}))
"""


def _agent_pid(node: RealNode) -> int:
    out = node.vm.run(["/usr/bin/pgrep", "-f", "[t]rustgate agent"]).stdout
    return int(out.split()[0])


def _agent_sample(node: RealNode, pid: int, seconds: float) -> dict[str, float]:
    """The agent's CPU per second over ``seconds`` (its 50 ms watch ticks) and its memory."""

    def cpu() -> float:
        stat = node.vm.get(f"/proc/{pid}/stat").decode()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / 100  # USER_HZ

    before, t = cpu(), time.monotonic()
    time.sleep(seconds)
    spent, took = cpu() - before, time.monotonic() - t
    status = node.vm.get(f"/proc/{pid}/status").decode()
    fields = (line.partition(":") for line in status.splitlines())
    mem = {k: int(v.split()[0]) / 1024 for k, _, v in fields if k in ("VmRSS", "VmHWM")}
    return {"cpu_per_tick_ms": 1000 * spent / (took / 0.05), "rss_mib": mem["VmRSS"],
            "peak_rss_mib": mem["VmHWM"]}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--sample-seconds", type=float, default=20.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="realnode-bench-") as scratch:
        work = Path(scratch)
        ca = LocalCa.create(work / "tpm-ca")
        tls = CertificateAuthority.create(work / "tls")
        # pushes go nowhere (no verifier): the agent's watch still polls the list every tick
        node = RealNode.create("bench-1", work / "node", debian_kernel(print), ca, tls,
                               verifier_port=free_port(), log=print)  # fmt: skip
        try:
            started = time.monotonic()
            node.start()
            boot = time.monotonic() - started
            pid = _agent_pid(node)
            idle_small = _agent_sample(node, pid, args.sample_seconds)
            r = node.vm.run([sys.executable, "-c", _GUEST, str(args.entries), str(args.rounds),
                             IMA_LIST], timeout=3600)  # fmt: skip
            guest: dict[str, Any] = json.loads(r.stdout)
            idle_big = _agent_sample(node, pid, args.sample_seconds)
            list_bytes_at_end = len(node.ima_log())
        finally:
            node.shutdown()
    ratio = guest["reopen_seek_cpu"] / max(guest["kept_open_cpu"], 1e-9)
    result = {
        "boot_to_agent_seconds": boot, "entries_added": args.entries, **guest,
        "reopen_seek_over_kept_open": ratio, "agent_small_list": idle_small,
        "agent_big_list": idle_big, "list_bytes_at_end": list_bytes_at_end, "machine": machine(),
    }  # fmt: skip
    print(f"guest boot to agent serving: {boot:.1f}s")
    print(
        f"{args.entries} measurements in {guest['grow_seconds']:.1f}s; list {guest['list_bytes']} B"
    )
    print(
        f"per round, reopen+seek to the end: {1000 * guest['reopen_seek_cpu']:.2f} ms CPU "
        f"(baseline); kept-open read on: {1000 * guest['kept_open_cpu']:.3f} ms; ratio {ratio:.0f}x"
    )
    for label, s in (("small list", idle_small), (f"+{args.entries} entries", idle_big)):
        print(
            f"agent, {label}: {s['cpu_per_tick_ms']:.3f} ms CPU per 50 ms watch tick, "
            f"RSS {s['rss_mib']:.0f} MiB (peak {s['peak_rss_mib']:.0f})"
        )
    write_result("realnode", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
