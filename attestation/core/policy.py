"""Runtime policies: what each network function (and the host) may run, loaded once, judged fast.

Two formats load into the same frozen :class:`RuntimePolicy`:

- ours (YAML or JSON): ``{"apiVersion": "trustgate.io/v1alpha1", "kind": "RuntimePolicy",
  "metadata": {"name": ...}, "spec": {"networkFunction": ..., "digests": {path: ["sha256:<hex>"]},
  "excludes": [regex], "keyrings": {name: [PEM public key]}, "bootAggregate": ["sha256:<hex>"]}}``
- Keylime's runtime policy JSON as is (``meta``, ``digests`` with bare hex, ``excludes``,
  ``keyrings``, ``ima``, ``ima-buf``, ``verification-keys``), so existing policies carry over.

Judging one measurement is a dict lookup on the raw path bytes and a frozenset membership test on
the raw digest: a node logs 10^5+ entries per boot. Excludes and signatures are consulted only when
that lookup fails. Digests are compared as bytes whatever their algorithm (as Keylime does).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import compress, repeat
from itertools import count as counter
from operator import contains, not_
from types import MappingProxyType
from typing import Any, Final

import yaml

from attestation.core.attribution import attribute
from attestation.core.ima import ImaLog
from attestation.core.ima_signature import (
    PublicKey,
    load_keylime_keys,
    load_pem_key,
    verify_signature,
)
from attestation.core.names import RUNTIME_POLICY_API_VERSION, RUNTIME_POLICY_KIND
from attestation.core.types import Failure, HashAlg, ImaEntry, PodRef

_HEX: Final = re.compile(r"[0-9a-f]+")
_SIZES: Final = {alg.value: alg.digest_size for alg in HashAlg}
_SPEC_KEYS: Final = {"networkFunction", "digests", "excludes", "keyrings", "bootAggregate"}
_KEYLIME_KEYS: Final = {
    "meta", "release", "digests", "excludes", "keyrings", "ima", "ima-buf", "verification-keys",
}  # fmt: skip


class PolicyError(ValueError):
    """A policy document is malformed; the message names the policy and the field."""


@dataclass(frozen=True, slots=True)
class RuntimePolicy:
    """One network function's (or the host's) allowed measurements. Immutable: evaluating
    never changes it, and one instance is shared by every round and pod."""

    name: str
    network_function: str
    digests: Mapping[str, frozenset[bytes]]
    excludes: tuple[str, ...] = ()
    keys: Mapping[int, PublicKey] = field(default_factory=lambda: MappingProxyType({}))
    boot_aggregates: frozenset[bytes] = frozenset()
    #: ima-buf entries (keys measured into keyrings, kexec command lines) by buffer name
    buffers: Mapping[str, frozenset[bytes]] = field(default_factory=lambda: MappingProxyType({}))
    ignored_keyrings: frozenset[str] = frozenset()
    #: the same digests keyed by the path's UTF-8 bytes: the parser's raw columns look up here
    by_raw_path: Mapping[bytes, frozenset[bytes]] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )
    exclude_re: re.Pattern[str] | None = field(default=None, repr=False, compare=False)


def _build(
    name: str,
    nf: str,
    digests: dict[str, frozenset[bytes]],
    excludes: list[str],
    keys: dict[int, PublicKey],
    boot: frozenset[bytes],
    buffers: dict[str, frozenset[bytes]],
    ignored: frozenset[str],
) -> RuntimePolicy:
    combined = re.compile("|".join(f"(?:{e})" for e in excludes)) if excludes else None
    return RuntimePolicy(
        name=name,
        network_function=nf,
        digests=MappingProxyType(digests),
        excludes=tuple(excludes),
        keys=MappingProxyType(keys),
        boot_aggregates=boot,
        buffers=MappingProxyType(buffers),
        ignored_keyrings=ignored,
        by_raw_path=MappingProxyType({p.encode(): d for p, d in digests.items()}),
        exclude_re=combined,
    )


# --- loading -----------------------------------------------------------------------------------


class _Ctx:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, what: str) -> PolicyError:
        return PolicyError(f"policy {self.source}: {where}: {what}")

    def obj(self, value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise self.fail(where, f"must be an object with string keys, not {_kind(value)}")
        return value

    def lst(self, value: object, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, f"must be a list, not {_kind(value)}")
        return value

    def text(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"must be a non-empty string, not {_kind(value)}")
        return value

    def digest(self, value: object, where: str, *, prefixed: bool) -> bytes:
        if not isinstance(value, str):
            raise self.fail(where, f"must be a string, not {_kind(value)}")
        alg, sep, hexd = value.partition(":")
        if not prefixed:
            alg, hexd = "", value
        elif not sep:
            raise self.fail(where, f'"{value}" is not "algorithm:hex"')
        if not _HEX.fullmatch(hexd) or len(hexd) % 2:
            raise self.fail(where, f'"{value}" is not a hex digest')
        size = len(hexd) // 2
        if prefixed and _SIZES.get(alg) != size:
            raise self.fail(where, f'"{value}": {alg} digests are not {size} bytes')
        if not prefixed and size not in (20, 32, 48, 64):
            raise self.fail(where, f'"{value}" is not a 20, 32, 48 or 64-byte hex digest')
        return bytes.fromhex(hexd)

    def digest_map(
        self, value: object, where: str, *, prefixed: bool
    ) -> dict[str, frozenset[bytes]]:
        out = {}
        for path, values in self.obj(value, where).items():
            here = f"{where}[{json.dumps(path)}]"
            items = self.lst(values, here)
            if not items:
                raise self.fail(here, "must list at least one digest")
            out[path] = frozenset(
                self.digest(v, f"{here}[{i}]", prefixed=prefixed) for i, v in enumerate(items)
            )
        return out

    def regexes(self, value: object, where: str) -> list[str]:
        out = []
        for i, pattern in enumerate(self.lst(value, where)):
            text = self.text(pattern, f"{where}[{i}]")
            try:
                re.compile(text)
            except re.error as e:
                raise self.fail(
                    f"{where}[{i}]", f"{text!r} is not a regular expression: {e}"
                ) from e
            out.append(text)
        return out


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else repr(value)[:40]


def load_policy(text: str | bytes, *, source: str) -> RuntimePolicy:
    """Parse and check a policy document (YAML or JSON; ours or Keylime's). ``source`` names it in
    errors (usually the file name)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PolicyError(f"policy {source}: not YAML or JSON: {e}") from e
    return policy_from_document(doc, source=source)


def policy_from_document(doc: object, *, source: str) -> RuntimePolicy:
    ctx = _Ctx(source)
    top = ctx.obj(doc, "document")
    if "apiVersion" in top or "kind" in top:
        return _ours(ctx, top)
    if "digests" in top and "meta" in top:
        return _keylime(ctx, top)
    raise ctx.fail(
        "document", f"neither apiVersion {RUNTIME_POLICY_API_VERSION} nor a Keylime runtime policy"
    )


def _ours(ctx: _Ctx, top: dict[str, Any]) -> RuntimePolicy:
    if top.get("apiVersion") != RUNTIME_POLICY_API_VERSION:
        raise ctx.fail(
            "apiVersion", f"must be {RUNTIME_POLICY_API_VERSION!r}, not {top.get('apiVersion')!r}"
        )
    if top.get("kind") != RUNTIME_POLICY_KIND:
        raise ctx.fail("kind", f"must be {RUNTIME_POLICY_KIND!r}, not {top.get('kind')!r}")
    extra = set(top) - {"apiVersion", "kind", "metadata", "spec"}
    if extra:
        raise ctx.fail("document", f"unknown fields {sorted(extra)}")
    name = ctx.text(ctx.obj(top.get("metadata"), "metadata").get("name"), "metadata.name")
    spec = ctx.obj(top.get("spec"), "spec")
    extra = set(spec) - _SPEC_KEYS
    if extra:
        raise ctx.fail("spec", f"unknown fields {sorted(extra)} (known: {sorted(_SPEC_KEYS)})")
    nf = ctx.text(spec.get("networkFunction"), "spec.networkFunction")
    digests = ctx.digest_map(spec.get("digests", {}), "spec.digests", prefixed=True)
    excludes = ctx.regexes(spec.get("excludes", []), "spec.excludes")
    keys: dict[int, PublicKey] = {}
    for ring, pems in ctx.obj(spec.get("keyrings", {}), "spec.keyrings").items():
        where = f"spec.keyrings[{json.dumps(ring)}]"
        for i, pem in enumerate(ctx.lst(pems, where)):
            try:
                keyid, key = load_pem_key(ctx.text(pem, f"{where}[{i}]").encode())
            except ValueError as e:
                raise ctx.fail(f"{where}[{i}]", str(e)) from e
            keys[keyid] = key
    boot = frozenset(
        ctx.digest(v, f"spec.bootAggregate[{i}]", prefixed=True)
        for i, v in enumerate(ctx.lst(spec.get("bootAggregate", []), "spec.bootAggregate"))
    )
    return _build(name, nf, digests, excludes, keys, boot, {}, frozenset())


def _keylime(ctx: _Ctx, top: dict[str, Any]) -> RuntimePolicy:
    extra = set(top) - _KEYLIME_KEYS
    if extra:
        raise ctx.fail("document", f"unknown Keylime policy fields {sorted(extra)}")
    meta = ctx.obj(top["meta"], "meta")
    if not isinstance(meta.get("version"), int) or meta["version"] < 0:
        raise ctx.fail(
            "meta.version", f"must be a non-negative integer, not {meta.get('version')!r}"
        )
    digests = ctx.digest_map(top["digests"], "digests", prefixed=False)
    boot = digests.pop("boot_aggregate", frozenset())
    excludes = ctx.regexes(top.get("excludes", []), "excludes")
    buffers = ctx.digest_map(top.get("ima-buf", {}), "ima-buf", prefixed=False)
    for ring, values in ctx.digest_map(top.get("keyrings", {}), "keyrings", prefixed=False).items():
        buffers[ring] = buffers.get(ring, frozenset()) | values
    ima = ctx.obj(top.get("ima", {}), "ima")
    ignored = frozenset(
        ctx.text(v, f"ima.ignored_keyrings[{i}]")
        for i, v in enumerate(ctx.lst(ima.get("ignored_keyrings", []), "ima.ignored_keyrings"))
    )
    vkeys = top.get("verification-keys", "")
    if not isinstance(vkeys, str):
        raise ctx.fail("verification-keys", f"must be a string, not {_kind(vkeys)}")
    try:
        keys = load_keylime_keys(vkeys) if vkeys else {}
    except ValueError as e:
        raise ctx.fail("verification-keys", str(e)) from e
    name = ctx.source.rsplit("/", 1)[-1]
    return _build(name, "keylime", digests, excludes, keys, boot, buffers, ignored)


# --- evaluation --------------------------------------------------------------------------------


def _owner(pod: PodRef | None) -> str:
    if pod is None:
        return "host"
    return f"pod {pod.uid}" + (f" container {pod.container_id[:12]}" if pod.container_id else "")


def judge(
    policy: RuntimePolicy,
    template: bytes,
    path: bytes,
    alg: bytes,
    digest: bytes,
    signature: bytes | None,
    pod: PodRef | None = None,
) -> Failure | None:
    """Judge one measurement given as the parser's raw fields. The common case (a listed file
    with an allowed digest) is one dict lookup and one set lookup."""
    allowed = policy.by_raw_path.get(path)
    if allowed is not None and digest in allowed:
        return None
    return _judge_slow(policy, template, path, alg, digest, signature, pod, allowed)


def _judge_slow(
    policy: RuntimePolicy,
    template: bytes,
    raw_path: bytes,
    raw_alg: bytes,
    digest: bytes,
    signature: bytes | None,
    pod: PodRef | None,
    allowed: frozenset[bytes] | None,
) -> Failure | None:
    path = raw_path.decode("utf-8", "replace")
    if policy.exclude_re is not None and policy.exclude_re.match(path):
        return None
    alg = raw_alg.decode("ascii", "replace")
    shown = f"{alg}:{digest.hex()}"
    uid = pod.uid if pod else None
    if template == b"ima-buf":
        if "*" in policy.ignored_keyrings or path in policy.ignored_keyrings:
            return None
        buffers = policy.buffers.get(path)
        if buffers is not None and digest in buffers:
            return None
        allowed = buffers if allowed is None else allowed
    if signature and policy.keys:
        why = verify_signature(signature, alg, digest, policy.keys)
        if why is None:
            return None
        return Failure(
            "ima.policy.signature_invalid",
            f"{_owner(pod)}: {path} ({shown}) carries an IMA signature that does not verify "
            f"against policy {policy.name}: {why}",
            pod_uid=uid,
            path=path,
            digest=shown,
        )
    if allowed is None:
        return Failure(
            "ima.policy.unknown_file",
            f"{_owner(pod)}: {path} ({shown}) is not in policy {policy.name}",
            pod_uid=uid,
            path=path,
            digest=shown,
        )
    return Failure(
        "ima.policy.digest_mismatch",
        f"{_owner(pod)}: {path} has digest {shown}, which policy {policy.name} does not allow "
        f"({len(allowed)} digest(s) listed for it)",
        pod_uid=uid,
        path=path,
        digest=shown,
    )


def evaluate(entry: ImaEntry, policy: RuntimePolicy, pod: PodRef | None = None) -> Failure | None:
    """Judge one entry against ``policy``: excluded or allowed -> None, else the failure."""
    return judge(
        policy,
        entry.template_name.encode(),
        entry.path.encode(),
        entry.file_digest_alg.encode(),
        entry.file_digest,
        entry.signature,
        pod,
    )


@dataclass(frozen=True, slots=True)
class LogJudgement:
    """The policy outcome for a stretch of the log: failures (host and per pod) and how many
    measurements each owner had (``None``: the host)."""

    failures: tuple[Failure, ...]
    measurements: Mapping[str | None, int]


def evaluate_log(
    log: ImaLog,
    policy_for: Callable[[PodRef | None], RuntimePolicy | None],
    *,
    count: int | None = None,
) -> LogJudgement:
    """Attribute each of the first ``count`` entries of ``log`` to its pod (or the host) and judge
    it against ``policy_for(owner)``; owners without a policy (pods that are not network
    functions) are counted but not judged.

    Skipped: the ``boot_aggregate`` record (replay.check_boot_aggregate checks it against the
    quoted PCRs) and violations, which carry no digest and become warnings.

    Speed: the common case (a listed path with an allowed digest) is decided for the whole batch
    by C-level ``map``s over the columns: owner table per cgroup, dict lookup per path, set
    membership per digest. Only the entries that fail it ("suspects") are looked at one by one.
    """
    n = len(log) if count is None else min(count, len(log))
    cgs, paths, digests = log.cgroups[:n], log.paths[:n], log.digests[:n]
    owners: dict[bytes | None, tuple[PodRef | None, RuntimePolicy | None]] = {}
    for cg in set(cgs):
        pod = attribute(cg.decode()) if cg else None
        owners[cg] = (pod, policy_for(pod))
    tables = {cg: _UNJUDGED if p is None else p.by_raw_path for cg, (_, p) in owners.items()}
    if len(tables) == 1:
        (table,) = tables.values()
        alloweds = map(table.get, paths, repeat(_NOTHING))
    else:
        alloweds = map(_proxy_get, map(tables.__getitem__, cgs), paths, repeat(_NOTHING))
    suspects = compress(counter(), map(not_, map(contains, alloweds, digests)))
    failures: list[Failure] = []
    first = log.start_index
    for k in suspects:
        pod, policy = owners[cgs[k]]
        path = paths[k]
        if policy is None or (first + k == 0 and path == b"boot_aggregate"):
            continue  # not a network function / checked against the quoted PCRs
        if not any(log.columns[k]):
            failures.append(_violation(first + k, path, pod))
            continue
        allowed = policy.by_raw_path.get(path)
        tpl, alg, sig = log.templates[k], log.algs[k], log.signatures[k]
        failure = _judge_slow(policy, tpl, path, alg, digests[k], sig, pod, allowed)
        if failure is not None:
            failures.append(failure)
    measurements: Counter[str | None] = Counter()
    for cg, seen in Counter(cgs).items():
        pod = owners[cg][0]
        measurements[pod.uid if pod else None] += seen
    return LogJudgement(tuple(failures), MappingProxyType(dict(measurements)))


_NOTHING: Final[frozenset[bytes]] = frozenset()
_UNJUDGED: Final[Mapping[bytes, frozenset[bytes]]] = MappingProxyType({})
_Get = Callable[[Mapping[bytes, frozenset[bytes]], bytes, frozenset[bytes]], frozenset[bytes]]
_proxy_get: _Get = MappingProxyType.get  # type: ignore[assignment]  # the unbound C method


def _violation(index: int, raw_path: bytes, pod: PodRef | None) -> Failure:
    path = raw_path.decode("utf-8", "replace")
    return Failure(
        "ima.violation",
        f"{_owner(pod)}: IMA logged a violation for {path} (entry {index}): the file was open for "
        "writing, or changed while measured",
        severity="warning",
        pod_uid=pod.uid if pod else None,
        path=path,
    )
