{{- define "shardedstore-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shardedstore-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "shardedstore-operator.labels" -}}
app.kubernetes.io/name: {{ include "shardedstore-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "shardedstore-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shardedstore-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The fixed label storage-pod NetworkPolicies admit to the peer port (operator.rs). */}}
{{- define "shardedstore-operator.componentLabel" -}}
shardedstore.io/component: operator
{{- end -}}

{{- define "shardedstore-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shardedstore-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Namespace and name of the store `helm test` writes to ("" when there is none). */}}
{{- define "shardedstore-operator.testStore" -}}
{{- if .Values.tests.storeName -}}
{{- .Values.tests.storeName -}}
{{- else if .Values.store.create -}}
{{- .Values.store.name -}}
{{- end -}}
{{- end -}}
