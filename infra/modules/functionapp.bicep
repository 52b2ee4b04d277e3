// The Function App (Python 3.11 on Linux) and its hosting plan.
//
// FlexConsumption (FC1, the default): scales to zero; the deployment package lives in a blob
// container that the platform reads with the user-assigned identity; the runtime is declared in
// functionAppConfig, because Flex Consumption rejects the FUNCTIONS_WORKER_RUNTIME and
// FUNCTIONS_EXTENSION_VERSION app settings.
//
// ElasticPremium (EP1): for always-ready (pre-warmed) instances on a classic plan. Created
// without the Azure Files content share, because Azure Files only accepts account keys and the
// storage account has shared keys switched off. The app instead runs the package from a blob
// URL (WEBSITE_RUN_FROM_PACKAGE) read with the same identity; docs/deploy.md shows how to
// publish to it. Both plans take VNet integration through appSubnetId.

@description('Function App name (also the default host name prefix).')
param name string

@description('Hosting plan name.')
param planName string

@description('Azure region.')
param location string

@description('Tags for the plan and the app; the app also gets azd-service-name.')
param tags object

@allowed([
  'FlexConsumption'
  'ElasticPremium'
])
@description('Hosting plan: FlexConsumption (FC1) or ElasticPremium (EP1).')
param hostingPlan string

@description('Resource id of the user-assigned identity.')
param identityId string

@description('Client id of the user-assigned identity.')
param identityClientId string

@description('Storage account for the Functions host and the deployment package.')
param storageAccountName string

@description('Blob container that holds the deployment package.')
param deploymentContainerName string

@description('Application Insights component the app reports to.')
param applicationInsightsName string

@description('App settings the gateway code reads (shared/settings.py), built in main.bicep.')
param gatewayAppSettings object

@description('Browser origins allowed to call the app. Empty (default): no cross-origin calls; the Teams app calls from its backend.')
param corsAllowedOrigins array = []

@description('Optional: resource id of an existing subnet for outbound VNet integration (delegated to Microsoft.App/environments for Flex Consumption, Microsoft.Web/serverFarms for Elastic Premium). Empty: no VNet.')
param appSubnetId string = ''

@description('Spread instances across availability zones (not every region supports it). Elastic Premium then runs at least 2 instances (premiumCapacity); Flex Consumption keeps at least 2 always-ready instances.')
param zoneRedundant bool = false

@description('Flex Consumption: most instances the app scales out to (40-1000, the range Microsoft\'s Flex Consumption quickstart template allows).')
@minValue(40)
@maxValue(1000)
param flexMaximumInstanceCount int = 40

@description('Flex Consumption: memory per instance in MB.')
@allowed([
  512
  2048
  4096
])
param flexInstanceMemoryMB int = 2048

@description('Flex Consumption: always-ready instances for the HTTP functions. 0 (default) scales to zero and bills nothing while idle; each always-ready instance is billed continuously.')
@minValue(0)
@maxValue(100)
param flexAlwaysReadyInstances int = 0

@description('Elastic Premium: always-ready instances (billed continuously).')
@minValue(1)
@maxValue(20)
param premiumMinimumInstances int = 1

@description('Elastic Premium: most instances the plan scales out to.')
@minValue(1)
@maxValue(100)
param premiumMaximumInstances int = 10

@description('Elastic Premium: blob name of the deployment package inside the deployment container.')
param premiumPackageBlobName string = 'gateway.zip'

var isFlex = hostingPlan == 'FlexConsumption'
var pythonVersion = '3.11'

var flexSku = {
  name: 'FC1'
  tier: 'FlexConsumption'
}

// A zone-redundant Elastic Premium plan needs at least two instances ("Reliability in Azure
// Functions", Premium: minimum instance count). The platform would enforce and bill that minimum
// anyway; setting it here keeps the deployed configuration equal to what runs and is billed.
var premiumCapacity = (zoneRedundant && !isFlex) ? max(premiumMinimumInstances, 2) : premiumMinimumInstances

var premiumSku = {
  name: 'EP1'
  tier: 'ElasticPremium'
  capacity: premiumCapacity
}

// Flex Consumption: where the package lives and how it is read, scale limits, runtime.
var flexFunctionAppConfig = {
  deployment: {
    storage: {
      type: 'blobContainer'
      value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
      authentication: {
        type: 'UserAssignedIdentity'
        userAssignedIdentityResourceId: identityId
      }
    }
  }
  scaleAndConcurrency: {
    maximumInstanceCount: flexMaximumInstanceCount
    instanceMemoryMB: flexInstanceMemoryMB
    alwaysReady: (flexAlwaysReadyInstances > 0) ? [{ name: 'http', instanceCount: flexAlwaysReadyInstances }] : []
  }
  runtime: {
    name: 'python'
    version: pythonVersion
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Zone redundancy is the zoneRedundant parameter, off by default: not every Flex Consumption region supports it, and on Elastic Premium it needs 3 always-ready instances billed around the clock.
  name: planName
  location: location
  tags: tags
  kind: isFlex ? 'functionapp' : 'elastic'
  sku: isFlex ? flexSku : premiumSku
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
    maximumElasticWorkerCount: isFlex ? null : premiumMaximumInstances
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: The gateway is a public HTTPS API: the Teams Patients app calls it from the internet. Management routes need a function key and FHIR routes a gateway-issued bearer token; only discovery (metadata, JWKS), the token endpoint and /api/health are anonymous.
  // checkov:skip=CKV_AZURE_17: Clients authenticate with OAuth2 client credentials (token endpoint) and bearer tokens, not mutual TLS; requiring client certificates would lock out the Teams app.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales to zero by design (no instances, no cost while idle); flexAlwaysReadyInstances, premiumMinimumInstances and zoneRedundant set a minimum where a customer needs one.
  // checkov:skip=CKV_AZURE_213: Platform health check is left off: it would call GET /api/health (which touches Table Storage and Key Vault) every minute on every instance, adding Key Vault operations and executions. Point an external monitor or an Application Insights availability test at /api/health instead (docs/deploy.md).
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    publicNetworkAccess: 'Enabled'
    virtualNetworkSubnetId: empty(appSubnetId) ? null : appSubnetId
    functionAppConfig: isFlex ? flexFunctionAppConfig : null
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      cors: {
        allowedOrigins: corsAllowedOrigins
        supportCredentials: false
      }
      // Elastic Premium only; Flex Consumption takes these from functionAppConfig and rejects them here.
      linuxFxVersion: isFlex ? null : 'Python|${pythonVersion}'
      minimumElasticInstanceCount: isFlex ? null : premiumCapacity
      functionAppScaleLimit: isFlex ? null : premiumMaximumInstances
      vnetRouteAllEnabled: isFlex ? null : !empty(appSubnetId)
    }
  }
}

// No user name/password publishing: deployments authenticate with Entra ID.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// Settings the platform, the Functions host and the Azure SDKs read. No keys, no connection
// strings with credentials: storage and Application Insights authenticate with the identity.
var platformAppSettings = {
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  // Not a credential: with local auth disabled on the component, ingestion needs the Entra token below.
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD;ClientId=${identityClientId}'
  // DefaultAzureCredential (azure-identity) picks the user-assigned identity by this client id.
  AZURE_CLIENT_ID: identityClientId
  // Known only once the site exists; absolute URLs in the capability statement and the token issuer.
  GATEWAY_PUBLIC_BASE_URL: 'https://${site.properties.defaultHostName}'
  // HTTP streams (azurefunctions-extensions-http-fastapi): the worker serves the FastAPI-typed
  // functions only with init indexing on (docs/streaming.md).
  PYTHON_ENABLE_INIT_INDEXING: '1'
}

// Elastic Premium only (see the header): runtime selection and run-from-package with the identity.
var premiumAppSettings = {
  FUNCTIONS_EXTENSION_VERSION: '~4'
  FUNCTIONS_WORKER_RUNTIME: 'python'
  WEBSITE_RUN_FROM_PACKAGE: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}/${premiumPackageBlobName}'
  WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID: identityId
}

// The complete set: app settings not listed here are removed on every deployment.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: checkov applies its authsettings check to every Microsoft.Web/sites/config resource; this one is appsettings. The gateway authenticates every request itself (function keys for /api/manage, its own OAuth2 tokens for FHIR); App Service Authentication would block the anonymous token endpoint.
  // checkov:skip=CKV_AZURE_63: HTTP logging is an App Service 'web' config setting (file-system logs) that checkov applies to appsettings; a Functions app logs requests to Application Insights.
  // checkov:skip=CKV_AZURE_65: Detailed error messages are an App Service 'web' config setting (file-system pages) that checkov applies to appsettings; not applicable to a Functions app, which logs to Application Insights.
  // checkov:skip=CKV_AZURE_66: Failed request tracing is an App Service 'web' config setting (file-system logs) that checkov applies to appsettings; a Functions app records failures in Application Insights.
  // checkov:skip=CKV_AZURE_80: .NET Framework version check applied to appsettings; the app is Python 3.11 (functionAppConfig.runtime / linuxFxVersion).
  // checkov:skip=CKV_AZURE_88: Azure Files is deliberately not used: it accepts only account keys, and shared-key access is off. Flex Consumption runs from blob storage; Elastic Premium runs from a blob package URL read with the managed identity.
  // checkov:skip=CKV_AZURE_222: Public network access: see the site resource; the gateway is a public HTTPS API.
  parent: site
  name: 'appsettings'
  properties: union(gatewayAppSettings, platformAppSettings, isFlex ? {} : premiumAppSettings)
}

output name string = site.name
output id string = site.id
output defaultHostName string = site.properties.defaultHostName
