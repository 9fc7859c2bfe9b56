"""Identity-Aware Proxy's signing keys, and the assertions IAP puts in front of an app.

IAP signs each request it lets through with an ES256 JWT in ``x-goog-iap-jwt-assertion``
and publishes the public keys at https://www.gstatic.com/iap/verify/public_key (``{kid:
PEM}``) and ``.../public_key-jwk`` (a JWK set). The emulator serves both at the same paths,
so an app verifies an assertion with
``google.oauth2.id_token.verify_token(assertion, request, audience=AUD,
certs_url=f"{EMULATOR_HTTP}/iap/verify/public_key")`` exactly as it would on Google.

The key is kept in the emulator's state, like the OIDC issuer's, so its ``kid`` and the
assertions made with it survive a restart.

``POST /emulator/v1/iap-assertion`` (see ``http_api``) is emulator-only: Google has no way
to ask IAP for an assertion; the emulator has one so that tests and local tools can put
themselves where IAP would be, including with a wrong audience or issuer, or expired.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth import crypt, jwt

from emulator.oidc import subject_id
from emulator.store import Store

IAP_ISSUER = "https://cloud.google.com/iap"
# IAP's assertions live for 10 minutes.
ASSERTION_LIFETIME_S = 600


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class IapKey:
    """IAP's P-256 key: the public halves in Google's two formats, and the signer."""

    def __init__(self, store: Store) -> None:
        key_pem = store.get_meta("iap_key")
        if key_pem is None:
            key_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            store.set_meta("iap_key", key_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        public = key.public_key()
        der = public.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        # Google's IAP kids are short opaque strings; one derived from the key stays the same
        # for as long as the key does.
        self.key_id = _b64url(hashlib.sha256(der).digest()[:6])
        self._public_pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        self._numbers = public.public_numbers()
        self._signer = crypt.ES256Signer.from_string(key_pem, key_id=self.key_id)

    def public_key(self) -> dict[str, str]:
        """What https://www.gstatic.com/iap/verify/public_key serves: ``{kid: PEM}``."""
        return {self.key_id: self._public_pem}

    def public_key_jwk(self) -> dict[str, Any]:
        """What https://www.gstatic.com/iap/verify/public_key-jwk serves."""
        return {"keys": [{
            "kty": "EC",
            "crv": "P-256",
            "x": _b64url(self._numbers.x.to_bytes(32, "big")),
            "y": _b64url(self._numbers.y.to_bytes(32, "big")),
            "kid": self.key_id,
            "alg": "ES256",
            "use": "sig",
        }]}

    def assertion(self, email: str, audience: str, issuer: str = IAP_ISSUER,
                  expires_in_s: float = ASSERTION_LIFETIME_S, now: float | None = None) -> str:
        """An ``x-goog-iap-jwt-assertion`` for ``email`` with ``aud`` = ``audience``.

        A negative ``expires_in_s`` makes one that expired that long ago; it was issued a
        full lifetime before it expired, as a real stale assertion would have been.
        """
        now = time.time() if now is None else now
        exp = int(now + expires_in_s)
        iat = int(now) if expires_in_s > 0 else exp - ASSERTION_LIFETIME_S
        claims = {
            "iss": issuer,
            "aud": audience,
            "sub": f"accounts.google.com:{subject_id(email)}",
            "email": email,
            "iat": iat,
            "exp": exp,
        }
        return jwt.encode(self._signer, claims).decode()
