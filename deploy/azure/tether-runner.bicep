// tether runner on Azure Container Apps.
//
// The runner connects outbound only: the Container App has no ingress. Its credentials are two
// Container App secrets, tether-client-id and tether-client-secret, that reach the runner as the
// environment variables OAUTH_CLIENT_ID and OAUTH_CLIENT_SECRET through secretRef. Applying
// refreshed credentials means editing the tether-client-secret value and restarting the revision
// (Container Apps gives running replicas a secret's value only when they start).
//
// tether-runner.json is the same deployment as an ARM template, for tools without Bicep; keep the
// two in step (crates/deploytest checks the secret wiring of both).
//
// Deploy:
//   az deployment group create --resource-group <RESOURCE_GROUP> --template-file tether-runner.bicep \
//     --parameters tetherUrl=https://tether.example.com clientId=tcid_... clientSecret=tcs_... image=<IMAGE>

@description('The runner\'s name in tether; names the Container App.')
@minLength(2)
@maxLength(32)
param runnerName string = 'tether-runner'

@description('Azure region for every resource.')
param location string = resourceGroup().location

@description('Base URL of the tether control plane, e.g. https://tether.example.com')
param tetherUrl string

@description('The runner\'s client_id (tcid_...).')
param clientId string

@description('The runner\'s client_secret (tcs_...). Stored only as the Container App secret tether-client-secret.')
@secure()
param clientSecret string

@description('The tether image built from deploy/docker/Dockerfile, e.g. myregistry.azurecr.io/tether:0.1.0')
param image string

@description('Registry server to pull the image from (e.g. myregistry.azurecr.io); empty for a public image.')
param registryServer string = ''

@description('Resource ID of a user-assigned managed identity with AcrPull on registryServer; used to pull the image.')
param registryIdentityId string = ''

@description('Runner instances. Fixed: the app never scales to zero, so the runner stays connected.')
@minValue(1)
@maxValue(10)
param replicas int = 2

@description('CPU cores per instance.')
param cpu string = '1.0'

@description('Memory per instance; must suit the CPU size.')
param memory string = '2Gi'

@description('Pipeline tasks one instance runs at once (TETHER_MAX_TASKS).')
@minValue(1)
param maxTasks int = 20

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${runnerName}-logs'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource environment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: '${runnerName}-env'
  location: location
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
  }
}

resource runner 'Microsoft.App/containerApps@2024-03-01' = {
  name: runnerName
  location: location
  identity: empty(registryIdentityId) ? {
    type: 'None'
  } : {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${registryIdentityId}': {}
    }
  }
  properties: {
    managedEnvironmentId: environment.id
    configuration: {
      activeRevisionsMode: 'Single'
      // No ingress block: nothing can connect to the runner; it only connects out.
      secrets: [
        {
          name: 'tether-client-id'
          value: clientId
        }
        {
          name: 'tether-client-secret'
          value: clientSecret
        }
      ]
      registries: empty(registryServer) ? [] : [
        {
          server: registryServer
          identity: registryIdentityId
        }
      ]
    }
    template: {
      // Time to finish running tasks after SIGTERM; 600 s is the Container Apps maximum.
      terminationGracePeriodSeconds: 600
      containers: [
        {
          name: 'tether-runner'
          image: image
          args: [
            'runner'
          ]
          env: [
            {
              name: 'TETHER_URL'
              value: tetherUrl
            }
            {
              name: 'OAUTH_CLIENT_ID'
              secretRef: 'tether-client-id'
            }
            {
              name: 'OAUTH_CLIENT_SECRET'
              secretRef: 'tether-client-secret'
            }
            {
              name: 'TETHER_PLATFORM'
              value: 'azure_container_app'
            }
            {
              name: 'TETHER_MAX_TASKS'
              value: string(maxTasks)
            }
            {
              name: 'TETHER_WORKDIR'
              value: '/var/lib/tether/work'
            }
            {
              name: 'TETHER_METRICS_LISTEN'
              value: '127.0.0.1:9464'
            }
          ]
          resources: {
            cpu: json(cpu)
            memory: memory
          }
        }
      ]
      scale: {
        minReplicas: replicas
        maxReplicas: replicas
      }
    }
  }
}

output containerAppName string = runner.name
output restartCommand string = 'az containerapp revision restart --resource-group ${resourceGroup().name} --name ${runner.name} --revision ${runner.properties.latestRevisionName}'
