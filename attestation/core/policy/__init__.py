"""Runtime policies: what each network function (and the host) may run, loaded once, judged fast.

Two document formats load into the same frozen :class:`RuntimePolicy` (:mod:`.model`): ours, YAML
or JSON (:mod:`.load`), and Keylime's runtime policy JSON as is (:mod:`.keylime`); :mod:`.fields`
checks a document field by field. :mod:`.evaluate` judges entries, one or a whole log batch;
:mod:`.lint` warns about what loads but leaves a door open (an exclude covering a writable place).
:mod:`.objects` makes RuntimePolicy objects (``runtimepolicies.trustgate.io``, several per network
function) into policies, and :mod:`.conditions` their status (``Loaded``, ``Invalid``).
"""

from attestation.core.policy.evaluate import LogJudgement, evaluate, evaluate_log
from attestation.core.policy.lint import lint_policy
from attestation.core.policy.load import load_policy, policy_from_document
from attestation.core.policy.model import PolicyError, RuntimePolicy

__all__ = [
    "LogJudgement",
    "PolicyError",
    "RuntimePolicy",
    "evaluate",
    "evaluate_log",
    "lint_policy",
    "load_policy",
    "policy_from_document",
]
