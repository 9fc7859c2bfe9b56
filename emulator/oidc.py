"""The emulator's OIDC issuer: Google-shaped ID tokens and the keys to verify them.

Tokens are RS256 JWTs with Google's claims (iss ``https://accounts.google.com``), signed by
google-auth's signer with a key kept in the emulator's state, so tokens minted before a
restart still verify after it. The certificates are served at Google's own paths
(``/oauth2/v1/certs``, ``/oauth2/v3/certs``), so a worker verifies a token with
``google.oauth2.id_token.verify_token(..., certs_url=...)`` and nothing else.

Two kinds of token share the key: a service account's (``token``: what Cloud Tasks puts in a
dispatch, ``azp`` = the account's ID) and a signed-in user's (``user_token``: what Google's
token endpoint answers an OAuth client, ``aud`` = ``azp`` = the client ID).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from emulator.store import Store

ISSUER = "https://accounts.google.com"
TOKEN_LIFETIME_S = 3600
# A token is reused for this long, as Google's metadata server reuses its tokens: minting
# one per dispatch would cost an RSA signature per request at 500 dispatches/s.
REUSE_S = 300


def _b64url_uint(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def subject_id(email: str) -> str:
    """A stable 21-digit unique ID for a service account, shaped like Google's."""
    return "1" + str(int(hashlib.sha256(email.encode()).hexdigest(), 16))[:20]


def access_token_hash(access_token: str) -> str:
    """OIDC Core 3.1.3.6 ``at_hash``: the left half of SHA-256, base64url, as Google sends it."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


class Issuer:
    def __init__(self, store: Store) -> None:
        key_pem, cert_pem = store.get_meta("oidc_key"), store.get_meta("oidc_cert")
        if key_pem is None or cert_pem is None:
            key_pem, cert_pem = _new_key_and_cert()
            store.set_meta("oidc_key", key_pem)
            store.set_meta("oidc_cert", cert_pem)
        self._cert_pem = cert_pem.decode()
        cert = x509.load_pem_x509_certificate(cert_pem)
        self.key_id = cert.fingerprint(hashes.SHA1()).hex()
        self._public = cert.public_key().public_numbers()  # type: ignore[union-attr]
        self._signer = crypt.RSASigner.from_string(key_pem, key_id=self.key_id)
        self._cache: dict[tuple[str, str, bool], tuple[str, float]] = {}

    def token(self, email: str, audience: str, now: float | None = None, *,
              include_email: bool = True) -> str:
        """An ID token for ``email`` with ``aud`` = ``audience``; without ``include_email``,
        no ``email`` and ``email_verified`` claims (IAM Credentials' generateIdToken adds them
        only when asked: its ``includeEmail``)."""
        now = time.time() if now is None else now
        key = (email, audience, include_email)
        cached = self._cache.get(key)
        if cached and now - cached[1] < REUSE_S:
            return cached[0]
        sub = subject_id(email)
        claims: dict[str, Any] = {"aud": audience, "azp": sub, "sub": sub}
        if include_email:
            claims |= {"email": email, "email_verified": True}
        token = self._sign(claims, now)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (token, now)
        return token

    def user_token(self, email: str, client_id: str, name: str, nonce: str | None = None,
                   access_token: str | None = None, now: float | None = None) -> str:
        """The ID token Google's token endpoint gives OAuth client ``client_id`` for a user."""
        claims: dict[str, Any] = {"aud": client_id, "azp": client_id, "sub": subject_id(email),
                                  "email": email, "email_verified": True, "name": name}
        if nonce is not None:
            claims["nonce"] = nonce
        if access_token is not None:
            claims["at_hash"] = access_token_hash(access_token)
        return self._sign(claims, time.time() if now is None else now)

    def _sign(self, claims: dict[str, Any], now: float) -> str:
        iat = int(now)
        return jwt.encode(self._signer, {
            "iss": ISSUER, **claims, "iat": iat, "exp": iat + TOKEN_LIFETIME_S,
        }).decode()

    def certs_v1(self) -> dict[str, str]:
        return {self.key_id: self._cert_pem}

    def certs_v3(self) -> dict[str, Any]:
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "kid": self.key_id,
                    "n": _b64url_uint(self._public.n),
                    "e": _b64url_uint(self._public.e),
                }
            ]
        }

    @staticmethod
    def discovery(base_url: str) -> dict[str, Any]:
        return {
            "issuer": ISSUER,
            "jwks_uri": f"{base_url}/oauth2/v3/certs",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": ["aud", "azp", "email", "email_verified", "exp", "iat", "iss",
                                 "name", "nonce", "sub"],
        }


def _new_key_and_cert() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloud-tasks-emulator")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)
