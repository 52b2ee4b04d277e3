"""The two ways upstream authentication fails: a bad config at the management API, or no credential
at request time. Both messages are safe to show; neither ever carries a secret or a token."""

from __future__ import annotations

from shared.errors import FhirError, InvalidField


class InvalidUpstreamAuth(InvalidField):
    """A config broke a rule; `.field` names the offending key (``upstream_auth.<key>``). A domain
    error like any other input's: the HTTP edge (shared/edge.py) shapes it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message, subject="upstream_auth")
        self.message = message  # as UpstreamAuthError's: both upstream-auth errors read alike


class UpstreamAuthError(FhirError):
    """The gateway could not obtain credentials for the provider (a 502 to the client).

    The message is safe to show: it never carries a secret, a token or the provider's response
    body, only the OAuth ``error`` code (also in `.oauth_error`) when the provider sent one.
    """

    def __init__(self, message: str, *, oauth_error: str | None = None) -> None:
        super().__init__(502, "exception", message)
        self.message = message
        self.oauth_error = oauth_error
