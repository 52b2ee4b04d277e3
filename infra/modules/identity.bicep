// The one identity the gateway uses for everything: host storage, the gateway's tables,
// Key Vault and Application Insights. Its roles are granted in roles.bicep.
// A user-assigned identity (not system-assigned) so that roles exist before the app starts
// and survive the app being deleted and recreated.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags for the identity.')
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
