{{/*
Names. The default release name "kvinject" gives the names of manifests/:
kvinject (the webhook configuration), kvinject-webhook, kvinject-ca, ...
*/}}
{{- define "kvinject.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 54 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kvinject.webhookName" -}}
{{- printf "%s-webhook" (include "kvinject.fullname" .) -}}
{{- end -}}

{{- define "kvinject.serviceAccountName" -}}
{{- default (include "kvinject.webhookName" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "kvinject.priorityClassName" -}}
{{- default (include "kvinject.webhookName" .) .Values.priorityClassName -}}
{{- end -}}

{{- define "kvinject.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "kvinject.webhookName" .)) .Values.tls.secretName -}}
{{- end -}}

{{/*
Labels. Selector labels are those of manifests/ (selectors are immutable:
they never change with the chart or release). Object metadata also carries
Helm's standard labels; pod templates only the selector labels and podLabels.
*/}}
{{- define "kvinject.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "kvinject.standardLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | trunc 63 | quote }}
{{- end }}
{{- end -}}

{{/* Labels of objects that are not the webhook's own (namespace, CA, ...). */}}
{{- define "kvinject.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
{{ include "kvinject.standardLabels" . }}
{{- end -}}

{{/* Labels of the webhook's objects. */}}
{{- define "kvinject.webhookLabels" -}}
{{ include "kvinject.selectorLabels" . }}
{{ include "kvinject.standardLabels" . }}
{{- end -}}

{{/*
The image reference: repository, then :tag (default the appVersion), then
@digest when set. The webhook injects this same reference as the agent.
*/}}
{{- define "kvinject.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- $ref := .Values.image.repository -}}
{{- if $tag }}{{ $ref = printf "%s:%s" $ref $tag }}{{ end -}}
{{- if .Values.image.digest }}{{ $ref = printf "%s@%s" $ref .Values.image.digest }}{{ end -}}
{{- $ref -}}
{{- end -}}

{{/*
The KVINJECT_* environment twins of `kvinject webhook` flags set in values:
flag name → value, rendered sorted by flag name; unset values render nothing.
*/}}
{{- define "kvinject.flagEnv" -}}
{{- $d := .Values.agentDefaults -}}
{{- $ib := $d.identityBinding | default dict -}}
{{- $w := .Values.webhook -}}
{{- $flags := dict
  "vault" $d.vault
  "client-id" $d.clientId
  "tenant-id" $d.tenantId
  "cloud" $d.cloud
  "authority-host" $d.authorityHost
  "vault-suffix" $d.vaultSuffix
  "refresh" $d.refresh
  "sidecar" $d.sidecar
  "mount-path" $d.mountPath
  "file-mode" $d.fileMode
  "agent-image-pull-policy" $d.imagePullPolicy
  "agent-cpu-request" $d.cpuRequest
  "agent-memory-request" $d.memoryRequest
  "agent-cpu-limit" $d.cpuLimit
  "agent-memory-limit" $d.memoryLimit
  "volume-size-limit" $d.volumeSizeLimit
  "ca-configmap" $d.caConfigMap
  "identity-binding-token-proxy" $ib.tokenProxy
  "identity-binding-sni-name" $ib.sniName
  "identity-binding-ca-configmap" $ib.caConfigMap
  "identity-binding-audience" $ib.audience
  "tls-min-version" $w.tlsMinVersion
  "graceful-shutdown-timeout" $w.gracefulShutdownTimeout
-}}
{{- if $ib.default }}{{ $_ := set $flags "identity-binding" "true" }}{{ end -}}
{{- if eq $d.metrics false }}{{ $_ := set $flags "agent-metrics" "false" }}{{ end -}}
{{- if $d.disableInstanceDiscovery }}{{ $_ := set $flags "disable-instance-discovery" "true" }}{{ end -}}
{{- if $d.disableChallengeResourceVerification }}{{ $_ := set $flags "disable-challenge-resource-verification" "true" }}{{ end -}}
{{- range $name := keys $flags | sortAlpha }}
{{- $v := get $flags $name }}
{{- if $v }}
- name: {{ printf "KVINJECT_%s" ($name | upper | replace "-" "_") }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- end }}
{{- end -}}
