// Storage for the Functions host (keys, locks, diagnostic events), the deployment package
// container and the gateway's tables (tenants = tenant routes, clients = client registry,
// invitations = registration invitations, portalsessions = portal session generations,
// ratelimits = failure counts shared by every instance, assertions = used client-assertion ids).
// Reached only with Microsoft Entra ID (managed identity): shared keys are switched off, so no
// connection string or SAS for this account can exist anywhere.

@description('Storage account name: 3-24 lowercase letters and digits, globally unique.')
param name string

@description('Azure region.')
param location string

@description('Tags for the storage account.')
param tags object

@description('Replication. LRS is the cheapest; ZRS or GZRS keep the tenant and client tables through a zone or region outage.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_LRS'

@description('Blob container that holds the deployment package.')
param deploymentContainerName string

@description('Table that holds tenant routes (GATEWAY_TENANTS_TABLE).')
param tenantsTableName string

@description('Table that holds the client registry (GATEWAY_CLIENTS_TABLE).')
param clientsTableName string

@description('Table that holds registration invitations (GATEWAY_INVITATIONS_TABLE).')
param invitationsTableName string

@description('Table that holds portal session generations (GATEWAY_PORTAL_SESSIONS_TABLE).')
param portalSessionsTableName string

@description('Table that holds rate-limit counts shared by every instance (GATEWAY_LIMITS_TABLE).')
param limitsTableName string

@description('Table that holds used client-assertion ids, for replay protection (GATEWAY_ASSERTIONS_TABLE).')
param assertionsTableName string

@description('Days a deleted blob or container can be restored.')
@minValue(1)
@maxValue(365)
param deleteRetentionDays int = 7

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Default action Allow: without VNet integration (the default) the app reaches storage over its public endpoint. Every request still needs an Entra token and a data role; shared keys and anonymous access are off. Customers with a VNet add private endpoints and set the default action to Deny.
  // checkov:skip=CKV_AZURE_59: Public network access stays enabled for the same reason as CKV_AZURE_35; no key, SAS or anonymous access is possible.
  // checkov:skip=CKV_AZURE_206: Replication is the storageSkuName parameter. LRS by default keeps the data in one region at the lowest cost; the tables hold configuration that the onboarding calls re-create. Choose Standard_GRS or Standard_GZRS for geo-redundancy.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: deleteRetentionDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: deleteRetentionDays
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource tenantsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: tenantsTableName
}

resource clientsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: clientsTableName
}

resource invitationsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: invitationsTableName
}

resource portalSessionsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: portalSessionsTableName
}

resource limitsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: limitsTableName
}

resource assertionsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: assertionsTableName
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output tableEndpoint string = storage.properties.primaryEndpoints.table
output deploymentContainerName string = deploymentContainer.name
