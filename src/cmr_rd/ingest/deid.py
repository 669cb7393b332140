"""De-identification: keyed-hash pseudonyms and the allow-list of what may leave ingestion.

The key never comes from config or git: an environment variable or a key file. The synthetic
cohort may fall back to a published demo key (its PHI is fake), with a warning.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

DEMO_KEY = b"cmr-rd-demo-key-for-synthetic-data-only"


class MissingKeyError(RuntimeError):
    pass


@dataclass(frozen=True)
class DeidKey:
    secret: bytes
    origin: str  # "env:NAME", "file", or "demo"; recorded in lineage, never the key itself

    def pseudonym(self, patient_id: str, prefix: str = "P") -> str:
        """Stable, non-reversible patient pseudonym (HMAC-SHA256, 16 hex characters)."""
        mac = hmac.new(self.secret, f"patient:{patient_id}".encode(), hashlib.sha256)
        return prefix + mac.hexdigest()[:16]

    def token(self, kind: str, value: str, length: int = 16) -> str:
        """Pseudonymous identifier for anything else (files, series) that must not be readable."""
        mac = hmac.new(self.secret, f"{kind}:{value}".encode(), hashlib.sha256)
        return mac.hexdigest()[:length]

    def uid(self, value: str) -> str:
        """A DICOM-style 2.25 UID derived from the key, for pseudonymous series/study ids."""
        mac = hmac.new(self.secret, f"uid:{value}".encode(), hashlib.sha256).digest()
        return "2.25." + str(int.from_bytes(mac[:16], "big"))


def load_key(key_env: str, key_file: str | None, *, synthetic: bool) -> DeidKey:
    """Environment variable first, then the key file; the demo key only for synthetic data."""
    value = os.environ.get(key_env)
    if value:
        return DeidKey(value.encode(), f"env:{key_env}")
    if key_file:
        path = Path(key_file)
        if not path.is_file():
            raise MissingKeyError(f"deid.key_file '{key_file}' does not exist")
        secret = path.read_bytes().strip()
        if len(secret) < 16:
            raise MissingKeyError(f"deid.key_file '{key_file}' holds fewer than 16 bytes")
        return DeidKey(secret, "file")
    if synthetic:
        warnings.warn(
            f"no pseudonym key in ${key_env} or deid.key_file: using the public demo key. "
            "This is acceptable only because data.source is synthetic.",
            stacklevel=2,
        )
        return DeidKey(DEMO_KEY, "demo")
    raise MissingKeyError(
        f"real data needs a pseudonym key: set ${key_env} or deid.key_file "
        "(a file outside git holding at least 16 random bytes)"
    )
