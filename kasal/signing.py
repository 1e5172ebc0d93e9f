"""Signatures on what activities tell their workflow, so no other client can forge it.

Any holder of a Temporal client can signal a workflow. The events a task attempt sends
(LLM calls with their token counts, tool calls, retries) are trusted by the workflow only
when they carry an HMAC made with the workers' shared secret over the workflow id and the
batch. The workflow checks it with the same key, which the worker configures here once at
start: this module is passed through the workflow sandbox, so every workflow run on the
worker sees that key, and replaying a history on any worker with the same secret gives the
same verdicts.

Deterministic and light: only ``hmac`` and ``hashlib``.
"""

from __future__ import annotations

import hashlib
import hmac

#: Derivation label: the signing key is never the raw secret itself.
_LABEL = b"kasal-activity-events-v1"

_key: bytes | None = None


def derive_key(secret: str) -> bytes:
    """The signing key for a workers' secret."""
    return hmac.new(secret.encode(), _LABEL, hashlib.sha256).digest()


def configure(secret: str) -> None:
    """Use ``secret`` (shared by every worker of a deployment) to sign and check events."""
    global _key
    _key = derive_key(secret)


def configured() -> bool:
    """True once a worker secret is set in this process."""
    return _key is not None


def sign(workflow_id: str, body: bytes) -> str:
    """The signature of ``body`` sent to ``workflow_id``."""
    if _key is None:
        raise RuntimeError("no worker secret configured: call kasal.signing.configure first")
    return hmac.new(_key, workflow_id.encode() + b"\n" + body, hashlib.sha256).hexdigest()


def verify(workflow_id: str, body: bytes, signature: str | None) -> bool:
    """True if ``signature`` was made by a worker holding the same secret."""
    if _key is None or not signature:
        return False
    return hmac.compare_digest(sign(workflow_id, body), signature)
