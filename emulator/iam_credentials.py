"""IAM Service Account Credentials v1 (google.iam.credentials.v1.IAMCredentials): ID tokens
minted for a service account by whoever may, as the official client asks for them.

Served: GenerateIdToken. GenerateAccessToken, SignBlob and SignJwt answer UNIMPLEMENTED (on
the REST port too: their rules are in ``rest_rules``, served by no method).

The token is the emulator's OIDC issuer's (``oidc.Issuer``), the key Cloud Run's front door
and the workers verify with: ``iss`` ``https://accounts.google.com``, ``aud`` the request's
``audience``, ``sub`` = ``azp`` the account's ID, an hour's lifetime. ``email`` and
``email_verified`` are in it only with ``include_email``, as Google documents the field ("If
set to true, the token will contain email and email_verified claims": the
GenerateIdTokenRequest reference, e.g. googleapis.dev/dotnet/Google.Apis.IAMCredentials.v1).

Checked as Google checks it, in this order:

- ``name`` is ``projects/-/serviceAccounts/EMAIL_OR_UNIQUE_ID``; Google's reference: "The
  ``-`` wildcard character is required; replacing it with a project ID is invalid." Anything
  else is INVALID_ARGUMENT with the form to use.
- ``audience`` is required (the reference marks it so); an empty one is INVALID_ARGUMENT.
- ``iam.serviceAccounts.getOpenIdToken`` on the account or its project
  (``roles/iam.serviceAccountOpenIdTokenCreator``, ``roles/iam.serviceAccountTokenCreator``,
  owner, editor), when ``[iam] enforce``, before saying whether the account exists. A
  refusal is PERMISSION_DENIED "Permission 'iam.serviceAccounts.getOpenIdToken' denied on
  resource (or it may not exist)." with an ErrorInfo detail (reason IAM_PERMISSION_DENIED,
  domain iam.googleapis.com, metadata.permission), as IAM Credentials answers it
  (github.com/google-github-actions/auth/issues/340 for the shape, with getAccessToken;
  DataDog/stratus-red-team/issues/152 and /299; for getOpenIdToken the same words, quoted in
  many a "Mint IAP verification token" failure).
- An account that does not exist: NOT_FOUND "Not found; Gaia id not found for email EMAIL"
  (IAM's answer for an unknown account, e.g. hashicorp/terraform-provider-google/issues/9249,
  and through the metadata server "IAM returned 404 Not Found: Not found; Gaia id not found
  for email ...").

Where the emulator differs, on purpose: ``delegates`` (a chain of accounts each allowed to
mint for the next) answers UNIMPLEMENTED saying so; call without them, as the account at
the end of the chain.
"""

from __future__ import annotations

import grpc
from google.cloud import iam_credentials_v1
from google.rpc import error_details_pb2, status_pb2

from emulator.errors import ApiError, invalid, not_found
from emulator.grpc_server import GrpcRouter
from emulator.iam import Authorizer, service_account_resource
from emulator.iam_admin import IamAdmin
from emulator.oidc import Issuer

IAM_CREDENTIALS_V1 = "google.iam.credentials.v1.IAMCredentials"
GenerateIdTokenRequest = iam_credentials_v1.GenerateIdTokenRequest.pb()
GenerateIdTokenResponse = iam_credentials_v1.GenerateIdTokenResponse.pb()
GET_OPEN_ID_TOKEN = "iam.serviceAccounts.getOpenIdToken"
_FORM = "projects/-/serviceAccounts/EMAIL_OR_UNIQUE_ID"


def credentials_denied(permission: str) -> ApiError:
    """IAM Credentials' refusal, word for word, with its ErrorInfo detail."""
    message = f"Permission '{permission}' denied on resource (or it may not exist)."
    error = ApiError(grpc.StatusCode.PERMISSION_DENIED, message)
    status = status_pb2.Status(code=grpc.StatusCode.PERMISSION_DENIED.value[0],
                               message=message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(
        reason="IAM_PERMISSION_DENIED", domain="iam.googleapis.com",
        metadata={"permission": permission}))
    error.status_details = status.SerializeToString()  # type: ignore[attr-defined]
    return error


class IamCredentials:
    """Mints ID tokens for the accounts IAM Admin knows (configured or created)."""

    def __init__(self, accounts: IamAdmin, authorizer: Authorizer, issuer: Issuer) -> None:
        self.accounts = accounts
        self.authorizer = authorizer
        self.issuer = issuer

    def register(self, router: GrpcRouter) -> None:
        """Serve google.iam.credentials.v1.IAMCredentials on the emulator's gRPC port."""
        router.add_all(IAM_CREDENTIALS_V1, self, {"GenerateIdToken": GenerateIdTokenRequest})

    def GenerateIdToken(self, req: GenerateIdTokenRequest) -> GenerateIdTokenResponse:
        name = req.name
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != "projects" or parts[2] != "serviceAccounts" \
                or not parts[3]:
            raise invalid(f'Invalid service account name "{name}": use {_FORM}.')
        if parts[1] != "-":
            raise invalid(f'Invalid service account name "{name}": the project must be the '
                          f'wildcard "-" (use projects/-/serviceAccounts/{parts[3]}); a '
                          "project ID in its place is invalid.")
        if not req.audience:
            raise invalid('audience is required: the URL (or custom audience) of the service '
                          'the token is for, for example "https://worker-abc123-uc.a.run.app".')
        if req.delegates:
            raise ApiError(grpc.StatusCode.UNIMPLEMENTED,
                           "The emulator does not serve delegation chains (delegates): call "
                           "GenerateIdToken without them, as the last account of the chain.")
        account = self.accounts._find(name)  # the name's form is checked above
        resource = account.resource if account else service_account_resource(name)
        # IAM answers who may not before whether the account exists.
        if not self.authorizer.allows(self.authorizer.principal(), GET_OPEN_ID_TOKEN,
                                      resource):
            raise credentials_denied(GET_OPEN_ID_TOKEN)
        if account is None:
            raise not_found(f"Not found; Gaia id not found for email {parts[3]}")
        token = self.issuer.token(account.email, req.audience,
                                  include_email=req.include_email)
        return GenerateIdTokenResponse(token=token)
