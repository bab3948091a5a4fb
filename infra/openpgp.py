"""OpenPGP (RFC 4880) encryption of exports to a tenant's public key, through the
system's ``gpg`` (python-gnupg), in a throwaway keyring per operation."""

from __future__ import annotations

import tempfile

import gnupg

from contact_centre.errors import ValidationError


class OpenPGPUnavailableError(RuntimeError):
    """No working gpg binary on this machine."""


def _gpg(home: str) -> gnupg.GPG:
    try:
        return gnupg.GPG(gnupghome=home)
    except (OSError, ValueError) as error:
        raise OpenPGPUnavailableError(f"gpg is not usable: {type(error).__name__}") from None


def fingerprint(public_key: str) -> str:
    """Check an armored public key; return its fingerprint (ValidationError if unusable)."""
    if "BEGIN PGP PUBLIC KEY BLOCK" not in public_key or "PRIVATE KEY" in public_key:
        raise ValidationError("send an ASCII-armored OpenPGP public key (never a private key)")
    with tempfile.TemporaryDirectory(prefix="cc-gpg-") as home:
        result = _gpg(home).import_keys(public_key)
        if not result.fingerprints:
            raise ValidationError("that is not a usable OpenPGP public key")
        return str(result.fingerprints[0])


def encrypt(data: bytes, public_key: str) -> str:
    """ASCII-armored OpenPGP message of ``data``, readable only with the key's secret."""
    with tempfile.TemporaryDirectory(prefix="cc-gpg-") as home:
        gpg = _gpg(home)
        imported = gpg.import_keys(public_key)
        if not imported.fingerprints:
            raise ValidationError("the configured export key is not a usable public key")
        result = gpg.encrypt(data, imported.fingerprints[0], armor=True, always_trust=True)
        if not result.ok:
            raise OpenPGPUnavailableError(f"gpg could not encrypt: {result.status}")
        return str(result)
