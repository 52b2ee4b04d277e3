// Key Vault for the gateway's secrets: client-secret verifiers, token signing keys and the
// upstream credentials of each tenant. Azure RBAC only (no access policies), soft delete and
// purge protection on, every data-plane operation audited to Log Analytics.

@description('Key Vault name: 3-24 letters, digits and hyphens, globally unique.')
param name string

@description('Azure region.')
param location string

@description('Tags for the vault.')
param tags object

@description('Enabled (default): reachable over the internet, still only with an Entra token and an RBAC role. Disabled: reachable only through a private endpoint you add (the default deployment has no VNet, so the app could not reach it).')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Enabled'

@description('Days a deleted vault or secret can be recovered (7-90). Purge protection keeps them for at least this long.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Resource id of the Log Analytics workspace that receives the vault audit log.')
param logAnalyticsWorkspaceId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: The firewall default action follows publicNetworkAccess: Allow while the vault is public (the default deployment has no VNet, and Functions are not a trusted service for the bypass), Deny when it is Disabled. Every call still needs an Entra token and an RBAC role.
  // checkov:skip=CKV_AZURE_189: Public network access is the keyVaultPublicNetworkAccess parameter, Enabled by default because the app has no VNet; set Disabled together with a private endpoint.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: publicNetworkAccess == 'Enabled' ? 'Allow' : 'Deny'
    }
  }
}

// Who read or wrote which secret, when: hospital IT will ask.
resource vaultAudit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output name string = vault.name
output id string = vault.id
output vaultUri string = vault.properties.vaultUri
