{{/* Chart name, truncated to the 63 characters Kubernetes allows in a name. */}}
{{- define "tether-runner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. With the default release name tether-runner it is just "tether-runner"
(the Secret is then tether-runner-config). Shorter than 63 characters minus the "-config" suffix.
*/}}
{{- define "tether-runner.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 56 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tether-runner.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tether-runner.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tether-runner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tether-runner.labels" -}}
helm.sh/chart: {{ include "tether-runner.chart" . }}
{{ include "tether-runner.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: runner
{{- end }}

{{- define "tether-runner.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tether-runner.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the runner's configuration and credentials. */}}
{{- define "tether-runner.configSecretName" -}}
{{- printf "%s-config" (include "tether-runner.fullname" .) }}
{{- end }}

{{/*
Checksum of the Secret's content, as a pod template annotation: when it changes, `helm upgrade`
rolls the pods, which is how a new client_secret reaches runners that read it from the environment.
In hot-reload mode the client_secret reaches running pods through the mounted file instead, so it is
left out and a new secret does not restart anything.
*/}}
{{- define "tether-runner.configChecksum" -}}
{{- $content := dict "url" .Values.config.url "oauthClientId" .Values.config.oauthClientId -}}
{{- if not .Values.hotReload.enabled -}}
{{- $_ := set $content "oauthClientSecret" .Values.config.oauthClientSecret -}}
{{- end -}}
{{- toJson $content | sha256sum -}}
{{- end }}
