"""A local Azure Key Vault (secrets only) for development and tests; never deployed.

No Key Vault emulator is available from the package registries we can reach, so this speaks the
secrets REST protocol closely enough for the unmodified ``azure.keyvault.secrets.SecretClient``
(4.12.0, api-version 2026-04-01) and authenticates callers with tokens from its own App Service
managed identity endpoint (:mod:`devtools.identity_endpoint`), which the unmodified
``ManagedIdentityCredential`` / ``DefaultAzureCredential`` use when ``IDENTITY_ENDPOINT`` and
``IDENTITY_HEADER`` are set.

Client side::

    client = SecretClient(
        vault_url=info["vault_url"],
        credential=ManagedIdentityCredential(),
        connection_verify=info["ca_bundle"],
    )

Choices made where Key Vault has to be imitated:

* Challenge. A request without a token gets 401 with ``WWW-Authenticate: Bearer
  authorization="https://login.microsoftonline.com/<EMULATOR_TENANT_ID>", resource="..."``.
  Real Key Vault names ``https://vault.azure.net``; the SDK accepts a challenge only when the
  vault's host ends with ``.<resource host>`` (ports included), which ``127.0.0.1`` never does
  for ``vault.azure.net``. So the emulator names its host minus the first label, with its port:
  ``https://0.0.1:<port>`` (as ``vault.azure.net`` is ``myvault.vault.azure.net`` minus its first
  label). ``127.0.0.1:<port>`` ends with ``.0.0.1:<port>``, so ``verify_challenge_resource``
  can stay at its default True. Only tokens issued for exactly that resource are accepted.
* Disabled secrets: getting one (latest or by version) answers 403 ``Forbidden``, "Operation get
  is not allowed on a disabled secret.", inner error ``SecretDisabled``, as Key Vault does.
* Expired (``exp`` passed) and not-yet-valid (``nbf`` ahead) secrets are returned normally:
  Key Vault documents that a secret's get works outside the nbf/exp window (the attributes are
  informational for secrets; only keys enforce them).
* Missing ``api-version``: 400 ``BadParameter``. The exact wording real Key Vault uses could not
  be confirmed, and one Microsoft reply claims the data plane defaults to the latest version;
  we reject so that hand-written REST calls are caught in development.
* ``maxresults`` outside 1..25 answers 400 ``BadParameter`` (25 is Key Vault's maximum page);
  the default page size is 25 and can be lowered (``page_size``) to exercise paging.
* Names are case-insensitive like Key Vault's, and keep the spelling of their first set.
* Soft delete is always on (``Recoverable+Purgeable``, 90 days): setting a soft-deleted name
  answers 409 ``Conflict`` / ``ObjectIsDeletedButRecoverable``; deleted secrets are purged
  automatically once their ``scheduledPurgeDate`` passes.

Control API (plain HTTP, on the identity port, unauthenticated because it only shapes test
traffic): ``POST /_control/faults`` ``{"status": 429|500|502|503|504, "retry_after":
seconds-or-null, "count": N}`` makes the next N authenticated vault requests fail that way
(``count: 0`` clears); ``GET /_control/faults``; ``GET /_control/stats`` (every vault request,
including 401 challenges, by operation and by status); ``POST /_control/reset-stats``.

State lives in ``<data-dir>/vault.json`` (secret values in clear text, file mode 0600); the TLS
certificate in ``cert.pem``/``key.pem``; issued token digests in ``identity.json``.
Nothing here logs secret values or tokens: only method, path without query, and status.

Modules: :mod:`.protocol` (routes, request validation, error bodies, the challenge),
:mod:`.responses` (the JSON bodies answered), :mod:`.storage` (secrets, versions, soft delete,
persistence and its lock), :mod:`.control` (fault injection and request counts),
:mod:`.service` (one request in, one response out), :mod:`.tls` (the certificate) and
:mod:`.server` (HTTPS server, lifecycle and ``main``).
"""

from devtools.keyvault_emulator.protocol import EMULATOR_TENANT_ID
from devtools.keyvault_emulator.server import EmulatorHandle, main, start_emulator

__all__ = ["EMULATOR_TENANT_ID", "EmulatorHandle", "main", "start_emulator"]
