"""Keyed pseudonyms for identifiers written into reports."""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["pseudonymize"]

PSEUDONYM_HEX_DIGITS = 24  # 96 bits: no collision in practice for any archive, still short enough for a table


def pseudonymize(value: str, key: str | bytes, prefix: str = "") -> str:
    """Replace an identifier with its keyed hash, HMAC-SHA256 under ``key``.

    The same value and key always give the same pseudonym, across runs and machines, so reports made at different
    times can be joined; without the key the original cannot be recovered or confirmed by hashing guesses.

    Args:
        value: identifier, e.g. a PatientID or a UID. An empty value stays empty (nothing to hide, and an empty
            PatientID must not turn into one shared pseudonym that looks like a real patient).
        key: the secret key (text is encoded as UTF-8).
        prefix: text put before the hash, e.g. ``"P-"``.

    Returns:
        ``prefix`` followed by the first 24 hex digits of the HMAC.

    Raises:
        ValueError: for an empty key.
    """
    if not key:
        raise ValueError("the pseudonymization key must not be empty.")
    if not value:
        return ""
    secret = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    digest = hmac.new(secret, value.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{prefix}{digest[:PSEUDONYM_HEX_DIGITS]}"
