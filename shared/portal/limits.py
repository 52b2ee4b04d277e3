"""The portal's brute-force limits: sign-in and registration, each per source address and per target.

The target is the client id typed into sign-in, or the invitation a registration code names. Each
limiter counts every attempt; a successful sign-in clears its client's count (not its address's:
an attacker with one valid client must not be able to reset the counter it guesses others under).
These limiters are the portal's own, so a locked portal sign-in never stops the client's app from
getting tokens. Every attempt is also counted in Table Storage (`shared.aggregate_limits`), so the
limits hold over all instances together, not per instance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shared.aggregate_limits import AggregateLimiter, SharedCounts
from shared.ratelimit import RateLimiter
from shared.settings import Settings


@dataclass(frozen=True)
class PortalLimits:
    signin_address: RateLimiter
    signin_client: RateLimiter
    register_address: RateLimiter
    register_invitation: RateLimiter

    @classmethod
    def from_settings(cls, settings: Settings, shared: Callable[[str, int], SharedCounts]) -> PortalLimits:
        window = settings.portal_attempt_window_seconds
        per_address, per_target = settings.portal_attempts_per_ip, settings.portal_attempts_per_client

        def limiter(name: str, limit: int) -> AggregateLimiter:
            return AggregateLimiter(shared(name, limit), limit, window)

        return cls(limiter("portal-signin-address", per_address), limiter("portal-signin-client", per_target),
                   limiter("portal-register-address", per_address), limiter("portal-register-invitation", per_target))
