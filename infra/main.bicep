// FHIR gateway: everything it needs, in one resource group.
//
//   azd up                                   (uses main.parameters.json)
//   az deployment group create -g <rg> -f infra/main.bicep -p environmentName=<env>
//
// Read top to bottom: parameters, names, the modules (one per concern), outputs.
// docs/deploy.md walks through a deployment; tests/test_infra.py checks these templates offline.
//
// Secure by default: one user-assigned identity for everything, no keys or secrets in app
// settings or outputs, shared-key access off on storage, Key Vault with RBAC + purge protection,
// HTTPS only with TLS 1.2, FTP and basic-auth publishing off, CORS closed.

targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Environment name (azd: AZURE_ENV_NAME). Seeds every resource name; tagged as azd-env-name.')
param environmentName string

// Regions that offer Flex Consumption, the default plan.
// Source: the @allowed list on `location` in Microsoft's Flex Consumption azd samples,
//   https://github.com/Azure-Samples/functions-quickstart-dotnet-azd/blob/main/infra/main.bicep (changed 2026-02-21)
//   https://github.com/Azure-Samples/functions-quickstart-python-http-azd/blob/main/infra/main.bicep (same 32 names)
// Retrieved: 2026-11-30. Microsoft's docs publish no fixed list; the live one for a subscription is
// `az functionapp list-flexconsumption-locations` (with `--zone-redundant true` for zone redundancy).
// Elastic Premium is offered in more regions: extend this list when a customer needs one of them.
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'eastus2euap'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@description('Region for every resource: one that offers Flex Consumption (list above, with its source and date).')
param location string = resourceGroup().location

@allowed([
  'FlexConsumption'
  'ElasticPremium'
])
@description('FlexConsumption (FC1, default): scales to zero, pay per execution. ElasticPremium (EP1): always-ready instances billed continuously, for customers who need a classic Premium plan.')
param hostingPlan string = 'FlexConsumption'

@description('Optional: resource id of an existing subnet for outbound VNet integration (Flex Consumption: delegated to Microsoft.App/environments; Elastic Premium: Microsoft.Web/serverFarms). Empty: no VNet.')
param appSubnetId string = ''

@description('Flex Consumption: always-ready instances for the HTTP functions (0 = scale to zero, nothing billed while idle).')
@minValue(0)
@maxValue(100)
param flexAlwaysReadyInstances int = 0

@description('Flex Consumption: most instances the app scales out to (40-1000, the range Microsoft\'s Flex Consumption quickstart template allows).')
@minValue(40)
@maxValue(1000)
param flexMaximumInstanceCount int = 40

@description('Elastic Premium: always-ready instances (billed continuously). With zoneRedundant the plan runs at least 2 (the platform enforces and bills that minimum).')
@minValue(1)
@maxValue(20)
param premiumMinimumInstances int = 1

@description('Spread the plan across availability zones where the region supports it. Use a zone-redundant storageSkuName (Standard_ZRS or Standard_GZRS) with it. Flex Consumption then keeps at least 2 always-ready instances, billed as such; Elastic Premium at least 2 instances.')
param zoneRedundant bool = false

@description('Storage replication for host storage and the tenants/clients tables.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSkuName string = 'Standard_LRS'

@description('Key Vault public network access. Disabled needs a private endpoint you provide; the default deployment has no VNet.')
@allowed([
  'Enabled'
  'Disabled'
])
param keyVaultPublicNetworkAccess string = 'Enabled'

@description('Browser origins allowed to call the gateway (CORS). Empty: none.')
param corsAllowedOrigins array = []

@description('Days Log Analytics keeps logs (30 are included in the ingestion price).')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

@description('Daily Log Analytics ingestion cap in GB; -1 = no cap. A cap bounds cost but drops telemetry, audit events included, once reached.')
param logDailyQuotaGb int = -1

@description('Who gets the gateway\'s alert emails (5xx rate, upstream failures per tenant, Key Vault throttling, token failure spikes). Empty: the alert rules still fire and show in the portal, but notify nobody.')
param alertEmailAddress string = ''

// Gateway settings. Each default equals the default in shared/settings.py (tests/test_infra.py
// checks it), so an unchanged deployment behaves like an unconfigured local run.

@description('GATEWAY_TENANTS_TABLE: table of tenant routes.')
param tenantsTableName string = 'tenants'

@description('GATEWAY_CLIENTS_TABLE: table of registered clients.')
param clientsTableName string = 'clients'

@description('GATEWAY_INVITATIONS_TABLE: table of client registration invitations.')
param invitationsTableName string = 'invitations'

@description('GATEWAY_PORTAL_SESSIONS_TABLE: table of portal session generations (one row per client; signing out or disabling a client ends its portal sessions).')
param portalSessionsTableName string = 'portalsessions'
@description('GATEWAY_LIMITS_TABLE: table of rate-limit counts shared by every instance.')
param limitsTableName string = 'ratelimits'

@description('GATEWAY_ASSERTIONS_TABLE: table of used client-assertion ids (private_key_jwt replay protection, shared by every instance).')
param assertionsTableName string = 'assertions'

@description('TOKEN_LIFETIME_SECONDS: lifetime of the access tokens the gateway issues.')
@minValue(0)
param tokenLifetimeSeconds int = 3600

@description('SECRET_CACHE_TTL_SECONDS: how long a Key Vault secret is cached (the code caps it at 60).')
@minValue(0)
@maxValue(60)
param secretCacheTtlSeconds int = 60

@description('ROUTE_CACHE_TTL_SECONDS: how long a tenant route is cached.')
@minValue(0)
param routeCacheTtlSeconds int = 30

@description('SIGNING_KEY_CACHE_TTL_SECONDS: how long the signing keys are cached.')
@minValue(0)
param signingKeyCacheTtlSeconds int = 300

@description('UPSTREAM_CONNECT_TIMEOUT_SECONDS: connect timeout towards the provider\'s FHIR server.')
@minValue(0)
param upstreamConnectTimeoutSeconds int = 5

@description('UPSTREAM_READ_TIMEOUT_SECONDS: read timeout towards the provider\'s FHIR server.')
@minValue(0)
param upstreamReadTimeoutSeconds int = 30

@description('UPSTREAM_RETRIES: retries of idempotent upstream requests.')
@minValue(0)
param upstreamRetries int = 2

@description('BATCH_CONCURRENCY: parallel upstream requests per batch Bundle.')
@minValue(1)
param batchConcurrency int = 6

@description('TENANT_CONCURRENCY: upstream requests one tenant\'s batches may hold at once, all batches together.')
@minValue(1)
param tenantConcurrency int = 32

@description('BATCH_DEADLINE_SECONDS: entries not answered by then get a 504 entry in the batch-response.')
@minValue(1)
param batchDeadlineSeconds int = 60

@description('BATCH_MAX_RESPONSE_BYTES: cap on one batch-response; entries past it get a 502 too-costly entry.')
@minValue(1024)
param batchMaxResponseBytes int = 33554432

@description('MAX_REQUEST_BODY_BYTES: largest request body the gateway accepts.')
@minValue(0)
param maxRequestBodyBytes int = 1048576

@description('MAX_UPSTREAM_RESPONSE_BYTES: largest upstream response the gateway relays.')
@minValue(0)
param maxUpstreamResponseBytes int = 104857600

@description('PORTAL_ATTEMPTS_PER_CLIENT: registration portal attempts allowed per client in one window.')
@minValue(1)
param portalAttemptsPerClient int = 10

@description('PORTAL_ATTEMPTS_PER_IP: registration portal attempts allowed per source IP in one window.')
@minValue(1)
param portalAttemptsPerIp int = 30

@description('PORTAL_ATTEMPT_WINDOW_SECONDS: length of the portal rate-limit window.')
@minValue(1)
param portalAttemptWindowSeconds int = 900

@description('TOKEN_FAILURES_PER_CLIENT_AND_SOURCE: failed token-endpoint authentications per client and source IP in one window.')
@minValue(1)
param tokenFailuresPerClientAndSource int = 20

@description('TOKEN_FAILURES_PER_SOURCE: failed token-endpoint authentications per source IP (any client) in one window.')
@minValue(1)
param tokenFailuresPerSource int = 60

@description('TOKEN_FAILURES_PER_CLIENT: failed token-endpoint authentications per client (any source) in one window.')
@minValue(1)
param tokenFailuresPerClient int = 300

@description('TOKEN_FAILURE_WINDOW_SECONDS: length of the token endpoint\'s failure-counting window.')
@minValue(1)
param tokenFailureWindowSeconds int = 60

@description('UPSTREAM_AZURE_AD_SCOPES_ALLOWED: comma-separated Entra scopes an azure_ad tenant may use besides its provider\'s own <origin>/.default. Each one lets a function-key holder send the gateway\'s managed-identity token to that resource: never list Storage, Key Vault or Management.')
param upstreamAzureAdScopesAllowed string = ''

@description('CLIENT_ADDRESS_HEADER: the header whose trusted hop is the caller\'s address for rate limits; App Service\'s front end appends the peer to X-Forwarded-For.')
param clientAddressHeader string = 'X-Forwarded-For'

@description('CLIENT_ADDRESS_TRUSTED_HOPS: trusted proxies that append to CLIENT_ADDRESS_HEADER (1: App Service\'s front end only; 2 with Front Door or Application Gateway in front).')
@minValue(1)
param clientAddressTrustedHops int = 1

@description('HEALTH_CACHE_SECONDS: the anonymous /api/health probes each dependency at most once per this many seconds per instance.')
@minValue(10)
@maxValue(30)
param healthCacheSeconds int = 15

// ---------------------------------------------------------------------------------------------
// Names and tags
// ---------------------------------------------------------------------------------------------

// Stable per subscription + resource group + environment: redeploying updates in place.
var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = {
  'azd-env-name': environmentName
  application: 'fhir-gateway'
}
var names = {
  identity: 'id-fhirgw-${resourceToken}'
  storage: 'stfhirgw${resourceToken}'
  keyVault: 'kv-fhirgw-${resourceToken}'
  logAnalytics: 'log-fhirgw-${resourceToken}'
  applicationInsights: 'appi-fhirgw-${resourceToken}'
  plan: 'plan-fhirgw-${resourceToken}'
  functionApp: 'func-fhirgw-${resourceToken}'
  deploymentContainer: 'app-package'
}

// ---------------------------------------------------------------------------------------------
// Resources, one module per concern (deployment names carry the token, so two environments can
// share a resource group without their nested deployments colliding)
// ---------------------------------------------------------------------------------------------

module identity 'modules/identity.bicep' = {
  name: 'identity-${resourceToken}'
  params: {
    name: names.identity
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring-${resourceToken}'
  params: {
    logAnalyticsName: names.logAnalytics
    applicationInsightsName: names.applicationInsights
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
    dailyQuotaGb: logDailyQuotaGb
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage-${resourceToken}'
  params: {
    name: names.storage
    location: location
    tags: tags
    skuName: storageSkuName
    deploymentContainerName: names.deploymentContainer
    tenantsTableName: tenantsTableName
    clientsTableName: clientsTableName
    invitationsTableName: invitationsTableName
    portalSessionsTableName: portalSessionsTableName
    limitsTableName: limitsTableName
    assertionsTableName: assertionsTableName
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault-${resourceToken}'
  params: {
    name: names.keyVault
    location: location
    tags: tags
    publicNetworkAccess: keyVaultPublicNetworkAccess
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles-${resourceToken}'
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

// Alert rules (5xx rate, provider failures per tenant, Key Vault throttling, token failure spikes)
// and the operations workbook, over the gateway's audit lines in Application Insights.
module alerts 'modules/monitoring-alerts.bicep' = {
  name: 'alerts-${resourceToken}'
  params: {
    namePrefix: 'fhirgw-${resourceToken}'
    location: location
    tags: tags
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    alertEmailAddress: alertEmailAddress
  }
}

// Every app setting shared/settings.py reads, except GATEWAY_PUBLIC_BASE_URL (set in
// functionapp.bicep: it needs the app's host name) and the local-only ones (Azurite connection
// string, Key Vault emulator CA bundle). tests/test_infra.py keeps this list and the code in step.
var gatewayAppSettings = {
  GATEWAY_TABLES_ENDPOINT: storage.outputs.tableEndpoint
  GATEWAY_TENANTS_TABLE: tenantsTableName
  GATEWAY_CLIENTS_TABLE: clientsTableName
  GATEWAY_INVITATIONS_TABLE: invitationsTableName
  GATEWAY_PORTAL_SESSIONS_TABLE: portalSessionsTableName
  GATEWAY_LIMITS_TABLE: limitsTableName
  GATEWAY_ASSERTIONS_TABLE: assertionsTableName
  KEY_VAULT_URL: keyVault.outputs.vaultUri
  TOKEN_LIFETIME_SECONDS: string(tokenLifetimeSeconds)
  SECRET_CACHE_TTL_SECONDS: string(secretCacheTtlSeconds)
  ROUTE_CACHE_TTL_SECONDS: string(routeCacheTtlSeconds)
  SIGNING_KEY_CACHE_TTL_SECONDS: string(signingKeyCacheTtlSeconds)
  UPSTREAM_CONNECT_TIMEOUT_SECONDS: string(upstreamConnectTimeoutSeconds)
  UPSTREAM_READ_TIMEOUT_SECONDS: string(upstreamReadTimeoutSeconds)
  UPSTREAM_RETRIES: string(upstreamRetries)
  BATCH_CONCURRENCY: string(batchConcurrency)
  TENANT_CONCURRENCY: string(tenantConcurrency)
  BATCH_DEADLINE_SECONDS: string(batchDeadlineSeconds)
  BATCH_MAX_RESPONSE_BYTES: string(batchMaxResponseBytes)
  MAX_REQUEST_BODY_BYTES: string(maxRequestBodyBytes)
  MAX_UPSTREAM_RESPONSE_BYTES: string(maxUpstreamResponseBytes)
  PORTAL_ATTEMPTS_PER_CLIENT: string(portalAttemptsPerClient)
  PORTAL_ATTEMPTS_PER_IP: string(portalAttemptsPerIp)
  PORTAL_ATTEMPT_WINDOW_SECONDS: string(portalAttemptWindowSeconds)
  TOKEN_FAILURES_PER_CLIENT_AND_SOURCE: string(tokenFailuresPerClientAndSource)
  TOKEN_FAILURES_PER_SOURCE: string(tokenFailuresPerSource)
  TOKEN_FAILURES_PER_CLIENT: string(tokenFailuresPerClient)
  TOKEN_FAILURE_WINDOW_SECONDS: string(tokenFailureWindowSeconds)
  UPSTREAM_AZURE_AD_SCOPES_ALLOWED: upstreamAzureAdScopesAllowed
  CLIENT_ADDRESS_HEADER: clientAddressHeader
  CLIENT_ADDRESS_TRUSTED_HOPS: string(clientAddressTrustedHops)
  HEALTH_CACHE_SECONDS: string(healthCacheSeconds)
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp-${resourceToken}'
  params: {
    name: names.functionApp
    planName: names.plan
    location: location
    tags: tags
    hostingPlan: hostingPlan
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    gatewayAppSettings: gatewayAppSettings
    corsAllowedOrigins: corsAllowedOrigins
    appSubnetId: appSubnetId
    zoneRedundant: zoneRedundant
    flexAlwaysReadyInstances: flexAlwaysReadyInstances
    flexMaximumInstanceCount: flexMaximumInstanceCount
    premiumMinimumInstances: premiumMinimumInstances
  }
  // The app's first start already needs its storage, table, vault and telemetry roles.
  dependsOn: [
    roles
  ]
}

// ---------------------------------------------------------------------------------------------
// Outputs (azd stores them in .azure/<env>/.env). Names and URLs only: no keys, no secrets.
// ---------------------------------------------------------------------------------------------

var baseUrl = 'https://${functionApp.outputs.defaultHostName}'

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output FUNCTION_APP_NAME string = functionApp.outputs.name
output GATEWAY_BASE_URL string = baseUrl
output FHIR_BASE_URL_STU3 string = '${baseUrl}/api/fhir/stu3'
output FHIR_BASE_URL_DSTU2 string = '${baseUrl}/api/fhir/dstu2'
output TOKEN_URL string = '${baseUrl}/api/oauth2/token'
output MANAGEMENT_BASE_URL string = '${baseUrl}/api/manage'
output KEY_VAULT_NAME string = keyVault.outputs.name
output KEY_VAULT_URI string = keyVault.outputs.vaultUri
output TABLE_ENDPOINT string = storage.outputs.tableEndpoint
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output DEPLOYMENT_CONTAINER_NAME string = storage.outputs.deploymentContainerName
// For granting the gateway access to an upstream Azure Health Data Services FHIR service (upstream_auth kind azure_ad).
output GATEWAY_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
