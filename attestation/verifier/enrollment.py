"""Enrollment: prove an agent's AK belongs to a genuine TPM, and bind the node to that TPM's EK.

The checks are pure (``attestation.core.enroll``); this module does the agent calls around them
(identity, credential activation), reads an operator's approval when the EK is not the bound
one, and publishes a failed enrollment as the node's verdict (Untrusted, ``enroll.*``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from attestation.core import enroll as core_enroll
from attestation.core.checkpoint import resume
from attestation.core.clock import Clock
from attestation.core.evidence import Identity
from attestation.core.pushauth import push_key
from attestation.core.types import Failure, NodeVerdict
from attestation.core.verdict import AttestationState, PodInfo
from attestation.verifier.collector import AgentClient, CollectorError
from attestation.verifier.publisher import Publisher
from attestation.verifier.pushgate import PushGate

__all__ = ["Enrolled", "Enroller"]


@dataclass(frozen=True, slots=True)
class Enrolled:
    """A node's TPM proved and bound: where its attestation goes on, and its AK's name."""

    state: AttestationState
    ak_name: bytes


class Enroller:
    def __init__(
        self,
        client: AgentClient,
        publisher: Publisher,
        ek_ca_bundle: bytes,
        clock: Clock,
        push_gate: PushGate | None = None,
    ) -> None:
        self.client = client
        self.publisher = publisher
        self.ek_ca_bundle = ek_ca_bundle
        self._clock = clock
        #: Where a successful enrollment installs the node's push key (core.pushauth).
        self.push_gate = push_gate

    async def enroll(
        self,
        node: str,
        url: str,
        pods: Callable[[], Mapping[str, PodInfo]],
        *,
        identity: Identity | None = None,
        keep: AttestationState | None = None,
    ) -> Enrolled | None:
        """Enroll the agent's AK: the EK chain, the AK's fitness, credential activation, then
        the node's binding to its EK (``enroll.bind_ek``). ``keep`` is what is known of the
        node's TPM from before (its clock, log position, findings): kept only when the EK is
        the one the node is bound to, so a clock rolled back across a re-enrollment is still
        caught. A failure is published (Untrusted, judged with ``pods()``) with its ``enroll.*``
        id, and None returned. Raises CollectorError when the agent fails us."""
        identity = identity or await self.client.identity(url)
        failures, ak_name, secret = await self._prove(node, url, identity)
        binding = None if failures else await self._bind(node, identity.ek_public)
        if binding is None or binding.failures:
            failures += binding.failures if binding else ()
            verdict = NodeVerdict(node=node, trusted=False, failures=tuple(failures))
            await self.publisher.publish(node, verdict, pods(), ak_name)
            return None
        kept = keep is not None and binding.same_ek
        if self.push_gate is not None:
            # Only the TPM that activated the credential knows this secret: the agent derived
            # the same key when it did, and signs its pushes with it from now on.
            self.push_gate.install(node, push_key(secret))
        state = AttestationState(ak_public=identity.ak_public)
        if keep is not None and kept:
            state = dataclasses.replace(keep, ak_public=identity.ak_public)
        await self.publisher.audit(
            {"kind": "enrolled", "node": node, "akName": ak_name.hex(),
             "ekDigest": binding.pin, "reenrolled": keep is not None, "tpmStateKept": kept}
        )  # fmt: skip
        return Enrolled(state, ak_name)

    async def start(
        self, node: str, url: str, pods: Callable[[], Mapping[str, PodInfo]]
    ) -> Enrolled | None:
        """Enroll a node this process has not enrolled yet (it started, took over, or got the
        lead back) and pick its log up where its last checkpoint says (``core.checkpoint``), if
        this verifier signed one: ``enroll`` keeps it only for the EK the node is bound to, and
        the first quote's clock decides the rest. The audit trail says where it picked up, so a
        reader can tell a resumed node from one read again from the start."""
        wire = self.publisher.checkpoints.get(node)
        enrolled = await self.enroll(node, url, pods, keep=None if wire is None else resume(wire))
        if enrolled is not None and enrolled.state.ima_offset:
            replay = enrolled.state.replay
            await self.publisher.audit(
                {"kind": "resumed", "node": node, "imaIndex": replay.next_index,
                 "imaOffset": replay.next_offset}
            )  # fmt: skip
        return enrolled

    async def new_identity(self, url: str, ak_name: bytes) -> Identity | None:
        """After a bad quote signature: the agent's identity if it came back with another AK (a
        restart with a new key), else None (the same AK, or no identity: the bad signature is
        the verdict)."""
        try:
            identity = await self.client.identity(url)
            changed = core_enroll.ak_name(identity.ak_public) != ak_name
        except (CollectorError, core_enroll.EnrollParseError):
            return None
        return identity if changed else None

    async def _prove(
        self, node: str, url: str, identity: Identity
    ) -> tuple[list[Failure], bytes, bytes]:
        """The agent's identity checks and the credential activation: (failures, AK name, the
        credential's secret, which the push key derives from)."""
        failures: list[Failure] = []
        if identity.node != node:
            why = f"the agent says it is {identity.node!r}, not {node!r}"
            failures.append(Failure("enroll.node_mismatch", why))
        try:
            failures += core_enroll.verify_ek(
                identity.ek_certificate, identity.ek_public, self.ek_ca_bundle, self._clock()
            )
            failures += core_enroll.check_ak(identity.ak_public)
            ak_name = core_enroll.ak_name(identity.ak_public)
        except core_enroll.EnrollParseError as e:
            return [*failures, Failure("enroll.malformed", str(e))], b"", b""
        if failures:
            return failures, ak_name, b""
        secret = os.urandom(32)
        credential = core_enroll.make_credential(identity.ek_public, ak_name, secret)
        try:
            returned = await self.client.activate(
                url, credential.credential_blob, credential.encrypted_secret
            )
        except CollectorError as e:
            if e.failure_id != "agent.http_error":
                raise
            returned = b""
        return list(core_enroll.check_activation(secret, returned)), ak_name, secret

    async def _bind(self, node: str, ek_public: bytes) -> core_enroll.EkBinding:
        """Bind ``node`` to the EK its TPM just proved, or say why not. The operator's approval
        is read only when the EK is not the bound one; from the decision to the new pin nothing
        is awaited, so two nodes enrolling one EK at once cannot both take it."""
        digest = core_enroll.ek_digest(ek_public)
        pins = self.publisher.ek_pins
        approved = "" if digest == pins.get(node) else await self.publisher.approved_ek(node)
        binding = core_enroll.bind_ek(node, digest, pins.get(node, ""), approved, pins)
        if not binding.failures:
            pins[node] = binding.pin
        return binding
