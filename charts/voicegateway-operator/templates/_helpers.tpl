{{/* The chart's name, or nameOverride. */}}
{{- define "voicegateway-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: fullnameOverride, else the release name
when it already holds the chart's name, else the chart's name when it
starts with the release name (release "voicegateway" gives
"voicegateway-operator", not "voicegateway-voicegateway-operator"), else
release-chart. Kept short enough for the suffixes added below.
*/}}
{{- define "voicegateway-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else if hasPrefix (printf "%s-" .Release.Name) $name }}
{{- $name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "voicegateway-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select the operator's pods; never change them in an upgrade. */}}
{{- define "voicegateway-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voicegateway-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object of the chart. */}}
{{- define "voicegateway-operator.labels" -}}
helm.sh/chart: {{ include "voicegateway-operator.chart" . }}
{{ include "voicegateway-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: voicegateway
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "voicegateway-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "voicegateway-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false: name an existing ServiceAccount" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's image: repository:tag, the tag defaulting to appVersion. */}}
{{- define "voicegateway-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The rules the operator needs, exactly as controller-gen generates them from
the controller's +kubebuilder:rbac markers: files/manager-role.yaml is a copy
of config/rbac/role.yaml that `make manifests` writes.
*/}}
{{- define "voicegateway-operator.managerRules" -}}
{{- $role := .Files.Get "files/manager-role.yaml" | fromYaml }}
{{- if not $role.rules }}
{{- fail "files/manager-role.yaml holds no rules: run `make manifests`" }}
{{- end }}
{{- toYaml $role.rules }}
{{- end }}
