"""Who calls the API: a request's verified caller, as the IAM member the access config names.

``API_AUTH=google`` (the default): the caller sends a Google ID token whose audience is
``API_AUDIENCE`` (the API's URL), as ``Authorization: Bearer <token>``. It is checked with
google-auth through ``enqueuer_core.verify``'s machinery (certificates cached): Google's
signature (the emulator's, locally), expiry, audience, issuer, and a verified email, which
becomes ``user:EMAIL`` or ``serviceAccount:EMAIL``. A caller may send the token in
``X-Serverless-Authorization`` instead (Cloud Run's own header, which it checks first); it is
taken first when it carries a signature. Cloud Run replaces the signature of the token it
checked there (``SIGNATURE_REMOVED_BY_GOOGLE``), and such a token cannot be verified again:
then ``Authorization`` must carry the token too.

``API_AUTH=none``: the original anonymous API, on purpose only: every caller is ``allUsers``,
and may do what ``[access]`` grants ``allUsers`` (nothing, unless a line says so).

A refused token is ``Unauthenticated`` (401): why, and the exact command that gets a good
one. The token itself is never repeated.
"""

from __future__ import annotations

import anyio.to_thread

from enqueuer_core.access.policy import ALL_USERS, member_for_email
from enqueuer_core.config import LOCAL_API_AUDIENCE, LOCAL_API_CALLER, Settings
from enqueuer_core.errors import EnqueuerError, Unauthenticated
from enqueuer_core.verify import (
    GOOGLE_ISSUERS,
    CertsUnavailable,
    CertsUnreachable,
    Headers,
    TokenRejected,
    WouldFetch,
    bearer_token,
    header_values,
    signature_removed,
    verified_claims,
)

AUTHORIZATION = "Authorization"
SERVERLESS_AUTHORIZATION = "X-Serverless-Authorization"
# The audience of the ID token `gcloud auth print-identity-token` prints for a person: gcloud's
# own OAuth client. gcloud mints a token for another audience only for a service account.
GCLOUD_CLIENT_ID = "32555940559.apps.googleusercontent.com"


class Callers:
    """The API's door, built once from the settings: ``member(headers)`` of each request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.anonymous = settings.api_auth == "none"
        self.audience = settings.api_audience or ""
        self.certs_url = settings.id_token_certs_url
        self.how_to = _how_to(settings, self.audience)

    def member(self, headers: Headers) -> str:
        """The caller's member; ``Unauthenticated`` without a good token. May fetch the
        certificates (blocking): on an event loop, use ``member_async``."""
        if self.anonymous:
            return ALL_USERS
        header, token = self._token(headers)
        return self._member(header, token, fetch=True)

    async def member_async(self, headers: Headers) -> str:
        """``member`` for an event loop: verified inline from the cached certificates (an RSA
        check, tens of microseconds); a fetch of the certificates runs in a thread."""
        if self.anonymous:
            return ALL_USERS
        header, token = self._token(headers)
        try:
            return self._member(header, token, fetch=False)
        except WouldFetch:
            return await anyio.to_thread.run_sync(self._member, header, token, True)

    def cached_member(self, headers: Headers) -> str | None:
        """The caller's member when its token verifies from the cached certificates (or the
        API is anonymous), else None without saying why: for a quick path whose callers then
        go the long way, ``member_async``, which fetches what is missing or says what is
        wrong."""
        if self.anonymous:
            return ALL_USERS
        try:
            header, token = self._token(headers)
            return self._member(header, token, fetch=False)
        except (EnqueuerError, WouldFetch):
            return None

    def _token(self, headers: Headers) -> tuple[str, str]:
        """Which header's token is the caller's: Cloud Run's own header first, as Cloud Run
        itself checks it first, unless Cloud Run removed its signature."""
        try:
            if header_values(headers, SERVERLESS_AUTHORIZATION):
                token = bearer_token(headers, SERVERLESS_AUTHORIZATION)
                if not signature_removed(token):
                    return SERVERLESS_AUTHORIZATION, token
                if not header_values(headers, AUTHORIZATION):
                    raise self.refusal(TokenRejected("signature_removed"),
                                        SERVERLESS_AUTHORIZATION)
            return AUTHORIZATION, bearer_token(headers, AUTHORIZATION)
        except TokenRejected as e:
            raise self.refusal(e, e.facts.get("header", AUTHORIZATION)) from None

    def _member(self, header: str, token: str, fetch: bool) -> str:
        try:
            claims = verified_claims(token, [self.audience], self.certs_url, fetch=fetch)
        except TokenRejected as e:
            raise self.refusal(e, header) from None
        except CertsUnreachable as e:
            raise CertsUnavailable(
                f"Enqueuer could not fetch the certificates that verify callers' tokens from "
                f"{e.url} ({e.detail}): nothing was done; retry later.") from None
        email = claims.get("email")
        if not isinstance(email, str) or not email:
            raise Unauthenticated(
                "The token carries no email claim, so Enqueuer cannot tell who calls: ask for "
                "one with the email (gcloud impersonating an account: --include-email; the "
                f"metadata server: format=full). {self.how_to}")
        if claims.get("email_verified") is not True:
            raise Unauthenticated(
                f"The token's email {email} is not verified (email_verified is "
                f"{claims.get('email_verified')!r}): Enqueuer acts only for verified Google "
                f"identities. {self.how_to}")
        return member_for_email(email)

    def refusal(self, e: TokenRejected, header: str = AUTHORIZATION) -> Unauthenticated:
        """The 401 for a refused token: why, and how to get a good one."""
        return Unauthenticated(f"{self._why(e, header)} {self.how_to}")

    def _why(self, e: TokenRejected, header: str) -> str:
        f = e.facts
        minter = "this emulator" if self.settings.on_emulator else "Google"
        if e.reason == "no_header":
            return ("The request has no Authorization header: Enqueuer's API acts only for "
                    "callers it can name, from their Google ID token.")
        if e.reason == "several_headers":
            return f"The request has {f['count']} different {header} headers: send one."
        if e.reason == "not_bearer":
            return f"The {header} header is {f['shown']!r}, not 'Bearer <ID token>'."
        if e.reason == "signature_removed":
            if header == SERVERLESS_AUTHORIZATION:
                return ("Cloud Run removed the signature of the token in "
                        "X-Serverless-Authorization after checking it, as it does for that "
                        "header, so Enqueuer cannot verify it again: send the token in "
                        "Authorization: Bearer as well.")
            return ("The token's signature was removed by Google (SIGNATURE_REMOVED_BY_GOOGLE), "
                    "as Cloud Run does to a person's gcloud token, so Enqueuer cannot verify it: "
                    f"send a token minted for the audience {self.audience}.")
        if e.reason == "audience":
            got = f["audience"]
            why = (f" ({GCLOUD_CLIENT_ID} is gcloud's own: gcloud mints a token for another "
                   "audience only for a service account)" if got == GCLOUD_CLIENT_ID else "")
            return (f"The token's audience is {got!r}; this API expects {self.audience!r} "
                    f"(API_AUDIENCE){why}.")
        if e.reason == "expired":
            return (f"The token expired at {f['expired_at']}: ID tokens last an hour; get a "
                    "fresh one.")
        if e.reason == "early":
            return f"The token is issued in the future ({f['detail']}): check the clocks."
        if e.reason == "unknown_key":
            return (f"The token is signed with a key {self.certs_url} does not publish: it was "
                    f"not minted by {minter}.")
        if e.reason == "signature":
            return (f"The token's signature does not verify against {self.certs_url}: it was "
                    f"altered, or not minted by {minter}.")
        if e.reason == "issuer":
            return (f"The token was issued by {f['issuer']!r}, not by Google "
                    f"({GOOGLE_ISSUERS[0]}): Enqueuer takes only Google ID tokens.")
        return (f"The {header} token is not a Google ID token ({f.get('detail', e.reason)}); "
                "an access token (ya29...) is not one either.")


def www_authenticate(headers: Headers) -> str:
    """The ``WWW-Authenticate`` challenge of a 401 (RFC 6750: ``invalid_token`` only when a
    token was sent)."""
    sent = any(header_values(headers, h) for h in (AUTHORIZATION, SERVERLESS_AUTHORIZATION))
    return 'Bearer error="invalid_token"' if sent else "Bearer"


def _how_to(settings: Settings, audience: str) -> str:
    if settings.on_emulator:
        flag = "" if audience == LOCAL_API_AUDIENCE else f" --audience {audience}"
        return ("Get a token from the emulator's issuer and send it as 'Authorization: Bearer "
                f"<token>': `enqueuer --local token{flag}` prints one for {LOCAL_API_CALLER} (an "
                f"operator), `enqueuer --local token --as EMAIL{flag}` for another user.")
    return ("Send a Google ID token for the audience "
            f"{audience} as 'Authorization: Bearer <token>'. A service account gets one with "
            f"`gcloud auth print-identity-token --audiences={audience}` (or from the metadata "
            "server on Google Cloud); a person, through a service account they may impersonate: "
            "`gcloud auth print-identity-token --impersonate-service-account=SA "
            f"--audiences={audience} --include-email`.")
