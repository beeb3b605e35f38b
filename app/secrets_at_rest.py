"""Secrets stored in PostgreSQL (webhook signing secrets, alert routing keys), encrypted with Fernet.

Keys come from settings (TRIAGE_ENCRYPTION_KEYS): the first encrypts, every one decrypts, so a
key is rotated by putting a new one first and re-encrypting at leisure.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretDecryptionError(RuntimeError):
    """A stored secret that none of the configured keys opens (a key was removed too early)."""


class SecretBox:
    """Encrypts and decrypts short secrets with the configured keys."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])

    def seal(self, plaintext: str) -> str:
        """The ciphertext (URL-safe text) of a secret."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, ciphertext: str) -> str:
        """The secret behind a ciphertext made by seal()."""
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise SecretDecryptionError("no configured encryption key opens this secret") from None


@lru_cache(maxsize=4)
def box_for(keys: tuple[str, ...]) -> SecretBox:
    """A process-wide box for these keys (building one parses every key)."""
    return SecretBox(keys)


def generate_key() -> str:
    """A new key for TRIAGE_ENCRYPTION_KEYS."""
    return Fernet.generate_key().decode()
