"""Identity-Aware Proxy in front of the dashboard: verify the assertion it signs.

IAP lets a request through only for a user it has authenticated and authorized, and adds
``x-goog-iap-jwt-assertion``: an ES256 JWT with the user's ``email``, issued by
``https://cloud.google.com/iap`` for the audience of this one application
(``/projects/NUMBER/locations/REGION/services/NAME`` for IAP on Cloud Run,
``/projects/NUMBER/global/backendServices/ID`` behind a load balancer), signed with the keys
published at https://www.gstatic.com/iap/verify/public_key
(https://cloud.google.com/iap/docs/signed-headers-howto).

The plain ``X-Goog-Authenticated-User-Email`` header that IAP also sends is never read: a
request that reaches the service without IAP (another route to it, a misconfigured load
balancer) can carry any value in it; only the signature makes an identity.

Verification is ``verify.verified_claims``, the one the API's callers and the workers use,
with IAP's issuer and keys: the keys are kept for the ``max-age`` the endpoint sends, and a
key id the cache does not know refetches them (IAP rotated its keys), at most every 30
seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from google.auth import exceptions as gauth_exc
from google.auth import jwt

from enqueuer_core.config import IAP_AUDIENCE_FORMS
from enqueuer_core.errors import Unauthenticated
from enqueuer_core.verify import (
    CertsUnavailable,
    CertsUnreachable,
    TokenRejected,
    verified_claims,
)

IAP_ISSUER = "https://cloud.google.com/iap"
ASSERTION_HEADER = "x-goog-iap-jwt-assertion"
ALGORITHM = "ES256"  # IAP signs with ES256 only

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


def assertion_in(headers: Headers) -> str:
    """The request's IAP assertion; ``Unauthenticated`` when there is none (or several)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found = {v.strip() for k, v in pairs if k.lower() == ASSERTION_HEADER and v.strip()}
    if not found:
        raise Unauthenticated(
            f"No {ASSERTION_HEADER} header came with the request, so IAP did not let it "
            "through: the dashboard is set to trust IAP (DASHBOARD_AUTH=iap), and it must "
            "be reached only through IAP. Turn IAP on for the dashboard's Cloud Run service "
            "(or its load balancer's backend service) and open the dashboard at that address; "
            "or log in with st.login instead: DASHBOARD_AUTH=oidc.")
    if len(found) > 1:
        raise Unauthenticated(f"The request carries {len(found)} different {ASSERTION_HEADER} "
                              "headers: IAP sends one; the request was refused.")
    return found.pop()


def verify_assertion(assertion: str, audience: str, keys_url: str) -> dict[str, Any]:
    """The verified claims of an IAP assertion for ``audience``, its ``email`` included.

    ``Unauthenticated`` says what was wrong (and what to change when it is the settings);
    ``CertsUnavailable`` when IAP's keys could not be fetched.
    """
    try:
        header = jwt.decode_header(assertion)
    except (ValueError, gauth_exc.GoogleAuthError):
        raise Unauthenticated(f"The {ASSERTION_HEADER} header is not a JWT: it did not come "
                              "from IAP; the request was refused.") from None
    if header.get("alg") != ALGORITHM:
        raise Unauthenticated(
            f"The IAP assertion is signed with {header.get('alg')!r}; IAP signs with "
            f"{ALGORITHM} only: the request was refused.")
    try:
        claims = verified_claims(assertion, [audience], keys_url, issuers=(IAP_ISSUER,))
    except CertsUnreachable as e:
        raise CertsUnavailable(
            f"Could not fetch IAP's public keys from {keys_url} ({e.detail}): nobody can be "
            "let in until they are; reload the page, and check that the dashboard can reach "
            "that URL.") from None
    except TokenRejected as e:
        raise _refused(e, audience, keys_url) from None
    if not claims.get("email"):
        raise Unauthenticated(
            "The IAP assertion carries no email, so the dashboard cannot tell who you are: "
            "IAP includes it for Google accounts and service accounts; sign in to IAP with "
            "one of those.")
    return claims


def _refused(e: TokenRejected, audience: str, keys_url: str) -> Unauthenticated:
    f = e.facts
    if e.reason == "audience":
        got = f["audience"]
        return Unauthenticated(
            f"The IAP assertion is for the audience {got!r}, and this dashboard expects "
            f"IAP_AUDIENCE={audience!r}. If {got!r} is the audience of the IAP in front of "
            f"this dashboard ({' or '.join(IAP_AUDIENCE_FORMS)}), set IAP_AUDIENCE to it; "
            "otherwise the assertion was made for another application, and is refused.")
    if e.reason == "issuer":
        return Unauthenticated(
            f"The assertion was issued by {f['issuer']!r}, not by IAP ({IAP_ISSUER}): the "
            "request was refused.")
    if e.reason == "expired":
        return Unauthenticated(
            f"The IAP assertion expired at {f['expired_at']}: IAP signs a fresh one for each "
            "request, so this one was replayed, or this server's clock is wrong. Reload the "
            "page.")
    if e.reason == "early":
        return Unauthenticated(f"The IAP assertion is issued in the future ({f['detail']}): "
                               "check this server's clock.")
    if e.reason == "unknown_key":
        return Unauthenticated(
            f"The IAP assertion is signed with a key {keys_url} does not publish: it was not "
            "made by IAP; the request was refused.")
    if e.reason in ("signature", "signature_removed"):
        return Unauthenticated(
            f"The IAP assertion's signature does not verify against {keys_url}: it was "
            "altered, or made by someone other than IAP; the request was refused.")
    return Unauthenticated(f"The IAP assertion does not verify ({f.get('detail', e.reason)}): "
                           "the request was refused.")
