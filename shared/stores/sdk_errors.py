"""azure-core's exceptions in the stores' vocabulary (shared.errors): one mapping for Table Storage
and Key Vault, each store adding what one of its HTTP errors means to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)

from shared.errors import AlreadyExists, NotFound, StoreUnavailable
from shared.stores.backoff import retry_after

Refine = Callable[[HttpResponseError], Exception | None]


@contextmanager
def translated(component: str, refine: Refine) -> Iterator[None]:
    """NotFound, AlreadyExists, what `refine` makes of any other HTTP error, else StoreUnavailable
    (throttled: a 429, or a 503 with Retry-After); anything transport-like fails closed."""
    try:
        yield
    except ResourceNotFoundError as exc:
        raise NotFound() from exc
    except ResourceExistsError as exc:
        raise AlreadyExists() from exc
    except HttpResponseError as exc:  # ClientAuthenticationError (401/403) included
        refined = refine(exc)
        if refined is not None:
            raise refined from exc
        wait = retry_after(getattr(exc.response, "headers", None))
        throttled = exc.status_code == 429 or (exc.status_code == 503 and wait is not None)
        raise StoreUnavailable(component, f"HTTP {exc.status_code}", wait, throttled) from exc
    except (ClientAuthenticationError, AzureError) as exc:
        raise StoreUnavailable(component, type(exc).__name__) from exc
