// What an operator is told, and what they look at: alert rules and a workbook over the gateway's
// audit lines.
//
// The gateway writes one JSON audit line per FHIR request (logger gateway.audit, event
// "fhir-request": tenant_id, status, upstream_ms, duration_ms, ...) and one per token request
// (event "token-request": outcome, client_id, tenant_id). The Functions host sends them to
// Application Insights as traces; the queries below parse the JSON in `message`. Key Vault's own
// ServiceApiResult metric shows its throttling (HTTP 429), whatever the app logged.
//
// Azure Functions samples Application Insights telemetry adaptively by default, traces included:
// one stored line can stand for several (its itemCount). Every count and percentile below is
// weighted by itemCount, so rates and spikes stay right under sampling.
// tests/test_infra.py checks that every audit field a query reads is one the code writes.

@description('Prefix of the alert rule, action group and workbook names.')
param namePrefix string

@description('Azure region of the log alert rules and the workbook.')
param location string

@description('Tags for every resource.')
param tags object

@description('Application Insights component that receives the gateway\'s traces.')
param applicationInsightsName string

@description('Key Vault whose throttling is watched.')
param keyVaultName string

@description('Who gets the alert emails. Empty: the rules fire and show in the portal, but notify nobody.')
param alertEmailAddress string = ''

@description('FHIR requests answered 5xx, in percent of all FHIR requests over 15 minutes, above which the 5xx alert fires.')
@minValue(1)
@maxValue(100)
param serverErrorPercentThreshold int = 5

@description('A tenant\'s requests that failed at its provider (502, 504), in percent over 15 minutes, above which its alert fires.')
@minValue(1)
@maxValue(100)
param upstreamFailurePercentThreshold int = 20

@description('Fewest requests in the window (gateway-wide, or per tenant) before a rate alert can fire: a few requests make a noisy percentage.')
@minValue(1)
param minimumRequests int = 20

@description('Failed token requests in 15 minutes that count as a spike when they are also this many times the day\'s usual rate.')
@minValue(1)
param tokenFailureSpikeMinimum int = 50

@description('How many times the usual 15-minute rate of failed token requests makes a spike.')
@minValue(2)
param tokenFailureSpikeFactor int = 3

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmailAddress)) {
  name: 'ag-${namePrefix}'
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'fhirgw'
    enabled: true
    emailReceivers: [
      {
        name: 'gateway-operator'
        emailAddress: alertEmailAddress
        useCommonAlertSchema: true
      }
    ]
  }
}

var logAlertActions = {
  actionGroups: empty(alertEmailAddress) ? [] : [
    actionGroup.id
  ]
}

// --- the audit lines as tables ---------------------------------------------------------------------

// One row per FHIR request. `contains` finds the line cheaply; parse_json reads it whatever the
// field order or spacing.
var fhirRequests = 'traces | where message contains "fhir-request" | extend audit = parse_json(message) | where tostring(audit.event) == "fhir-request" | extend tenant_id = tostring(audit.tenant_id), status = toint(audit.status), upstream_ms = todouble(audit.upstream_ms), duration_ms = todouble(audit.duration_ms)'

// One row per token request; outcome is "issued" or the RFC 6749 error code.
var tokenRequests = 'traces | where message contains "token-request" | extend audit = parse_json(message) | where tostring(audit.event) == "token-request" | extend outcome = tostring(audit.outcome), tenant_id = tostring(audit.tenant_id)'

// 502 and 504 are the gateway's answers when the provider failed: unreachable, too slow, a 5xx,
// no FHIR JSON, or refused the gateway's credentials (shared/response_shaping.py, shared/provider_client.py).
var upstreamFailed = 'status in (502, 504)'

// --- alert rules -------------------------------------------------------------------------------------

var serverErrorQuery = '${fhirRequests} | summarize requests = sum(itemCount), server_errors = sumif(itemCount, status >= 500) | where requests >= ${minimumRequests} | extend error_percent = 100.0 * server_errors / requests'

var upstreamFailureQuery = '${fhirRequests} | where isnotempty(tenant_id) | summarize requests = sum(itemCount), upstream_failures = sumif(itemCount, ${upstreamFailed}) by tenant_id | where requests >= ${minimumRequests} | extend failure_percent = 100.0 * upstream_failures / requests'

// The last 15 minutes against the 95 quarter-hours before them (the rule's window is one day).
var tokenFailureSpikeQuery = '${tokenRequests} | where outcome != "issued" | summarize recent = sumif(itemCount, timestamp > ago(15m)), earlier = sumif(itemCount, timestamp <= ago(15m)) | extend usual = earlier / 95.0 | where recent >= ${tokenFailureSpikeMinimum} and recent > ${tokenFailureSpikeFactor} * usual'

resource serverErrorRate 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-${namePrefix}-fhir-5xx-rate'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'FHIR gateway: 5xx rate'
    description: 'More than ${serverErrorPercentThreshold}% of FHIR requests answered 5xx in 15 minutes. Check /api/health, then the upstream-failure alert and the workbook.'
    severity: 1
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: serverErrorQuery
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'error_percent'
          operator: 'GreaterThan'
          threshold: serverErrorPercentThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: logAlertActions
  }
}

resource upstreamFailureRate 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-${namePrefix}-upstream-failures'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'FHIR gateway: provider failures per tenant'
    description: 'More than ${upstreamFailurePercentThreshold}% of one tenant\'s FHIR requests failed at its provider (502/504) in 15 minutes. The alert names the tenant_id; tell that hospital\'s IT.'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: upstreamFailureQuery
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'failure_percent'
          dimensions: [
            {
              name: 'tenant_id'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: upstreamFailurePercentThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: logAlertActions
  }
}

resource tokenFailureSpike 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-${namePrefix}-token-failure-spike'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'FHIR gateway: spike in failed token requests'
    description: 'At least ${tokenFailureSpikeMinimum} failed token requests in 15 minutes, over ${tokenFailureSpikeFactor}x the usual rate of the past day: a client with a wrong or expired secret, or someone guessing secrets (the token endpoint answers 429 slow_down per client and source).'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'P1D'
    criteria: {
      allOf: [
        {
          query: tokenFailureSpikeQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: logAlertActions
  }
}

// Key Vault's platform metric: every 429 the vault answered, to the gateway or anyone else.
resource keyVaultThrottling 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-${namePrefix}-key-vault-throttling'
  location: 'global'
  tags: tags
  properties: {
    description: 'Key Vault answered HTTP 429 (throttled). The gateway backs off and serves from its caches; /api/health says "throttled". Look for a client hammering the token endpoint with made-up secrets, or another app sharing the vault.'
    severity: 2
    enabled: true
    scopes: [
      vault.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'throttled'
          metricNamespace: 'Microsoft.KeyVault/vaults'
          metricName: 'ServiceApiResult'
          dimensions: [
            {
              name: 'StatusCode'
              operator: 'Include'
              values: [
                '429'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Count'
        }
      ]
    }
    autoMitigate: true
    actions: empty(alertEmailAddress) ? [] : [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

// --- the workbook ----------------------------------------------------------------------------------------

var lastDay = {
  durationMs: 86400000
}

var workbookQueries = {
  requests: '${fhirRequests} | summarize requests = sum(itemCount) by status_class = strcat(tostring(status / 100), "xx"), bin(timestamp, 15m)'
  latencyByTenant: '${fhirRequests} | summarize requests = sum(itemCount), p50_ms = percentilew(duration_ms, itemCount, 50), p95_ms = percentilew(duration_ms, itemCount, 95), p99_ms = percentilew(duration_ms, itemCount, 99), upstream_p50_ms = percentilew(upstream_ms, itemCount, 50), upstream_p95_ms = percentilew(upstream_ms, itemCount, 95) by tenant_id | order by p95_ms desc'
  upstreamErrors: '${fhirRequests} | where ${upstreamFailed} | summarize upstream_failures = sum(itemCount) by tenant_id, bin(timestamp, 15m)'
  tokenOutcomes: '${tokenRequests} | summarize requests = sum(itemCount) by outcome, bin(timestamp, 15m)'
}

var workbookContent = {
  version: 'Notebook/1.0'
  items: [
    {
      type: 1
      name: 'about'
      content: {
        json: '## FHIR gateway\nFrom the gateway\'s audit lines (one per FHIR request and per token request), last 24 hours. Tenants are Entra tenant ids; no patient data is logged.'
      }
    }
    {
      type: 3
      name: 'requests'
      content: {
        version: 'KqlItem/1.0'
        title: 'FHIR requests by status class'
        query: workbookQueries.requests
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
        timeContext: lastDay
      }
    }
    {
      type: 3
      name: 'latency-by-tenant'
      content: {
        version: 'KqlItem/1.0'
        title: 'Latency percentiles by tenant (whole request, and the provider\'s share)'
        query: workbookQueries.latencyByTenant
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'table'
        timeContext: lastDay
      }
    }
    {
      type: 3
      name: 'upstream-errors'
      content: {
        version: 'KqlItem/1.0'
        title: 'Provider failures (502/504) by tenant'
        query: workbookQueries.upstreamErrors
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
        timeContext: lastDay
      }
    }
    {
      type: 3
      name: 'token-outcomes'
      content: {
        version: 'KqlItem/1.0'
        title: 'Token requests by outcome'
        query: workbookQueries.tokenOutcomes
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
        timeContext: lastDay
      }
    }
  ]
  fallbackResourceIds: [
    appInsights.id
  ]
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, namePrefix, 'fhir-gateway-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'FHIR gateway operations'
    category: 'workbook'
    sourceId: appInsights.id
    serializedData: string(workbookContent)
    version: '1.0'
  }
}
