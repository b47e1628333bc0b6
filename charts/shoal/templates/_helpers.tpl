{{/*
Every name and label of the chart comes from here. Selectors use only the stable
selectorLabels (name, instance, component): never the chart version, which changes on upgrade
and would orphan the pods of an immutable Deployment selector.
*/}}

{{- define "shoal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, or just <release> when it already contains the chart name. */}}
{{- define "shoal.fullname" -}}
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

{{- define "shoal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shoal.namespace" -}}
{{- .Release.Namespace -}}
{{- end -}}

{{/* Names of the parts; component names are kept short so `<fullname>-<component>` fits 63 chars. */}}
{{- define "shoal.scheduler.fullname" -}}{{ include "shoal.fullname" . | trunc 53 | trimSuffix "-" }}-scheduler{{- end -}}
{{- define "shoal.worker.fullname" -}}{{ include "shoal.fullname" . | trunc 56 | trimSuffix "-" }}-worker{{- end -}}
{{- define "shoal.dashboard.fullname" -}}{{ include "shoal.fullname" . | trunc 53 | trimSuffix "-" }}-dashboard{{- end -}}
{{- /* At most 52 characters: a StatefulSet's controller-revision-hash label is `<name>-<10 chars>`. */}}
{{- define "shoal.redis.fullname" -}}{{ include "shoal.fullname" . | trunc 46 | trimSuffix "-" }}-redis{{- end -}}
{{- define "shoal.redis.headless" -}}{{ include "shoal.redis.fullname" . }}-headless{{- end -}}
{{- define "shoal.config.fullname" -}}{{ include "shoal.fullname" . | trunc 56 | trimSuffix "-" }}-config{{- end -}}
{{- define "shoal.leaseName" -}}{{ include "shoal.scheduler.fullname" . | trunc 56 | trimSuffix "-" }}-leader{{- end -}}

{{- define "shoal.grafanaDashboard.fullname" -}}{{ include "shoal.fullname" . | trunc 45 | trimSuffix "-" }}-grafana-dashboard{{- end -}}
{{- define "shoal.test.fullname" -}}{{ include "shoal.fullname" . | trunc 54 | trimSuffix "-" }}-test-api{{- end -}}

{{- define "shoal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shoal.scheduler.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret with the API token and the bundled Redis password. */}}
{{- define "shoal.secretName" -}}
{{- default (include "shoal.fullname" .) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "shoal.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- with .Values.image.digest }}@{{ . }}{{ end -}}
{{- end -}}

{{/* The workers' image: worker.image when set (an application's tasks on top of Shoal), else the image. */}}
{{- define "shoal.workerImage" -}}
{{- if .Values.worker.image.repository -}}
{{- printf "%s:%s" .Values.worker.image.repository (default .Chart.AppVersion .Values.worker.image.tag) -}}
{{- else -}}
{{- include "shoal.image" . -}}
{{- end -}}
{{- end -}}

{{- define "shoal.redis.image" -}}
{{- printf "%s:%s" .Values.redis.image.repository .Values.redis.image.tag -}}
{{- with .Values.redis.image.digest }}@{{ . }}{{ end -}}
{{- end -}}

{{/* Labels that never change over the life of a release: the only ones used in selectors. */}}
{{- define "shoal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* Usage: include "shoal.labels" (dict "ctx" $ "component" "worker") */}}
{{- define "shoal.labels" -}}
helm.sh/chart: {{ include "shoal.chart" .ctx }}
{{ include "shoal.selectorLabels" . }}
app.kubernetes.io/version: {{ default .ctx.Chart.AppVersion .ctx.Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: shoal
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Label selector string of the worker pods, for the scheduler's pod watcher (SHOAL_WORKER_POD_SELECTOR). */}}
{{- define "shoal.worker.podSelector" -}}
{{- $labels := include "shoal.selectorLabels" (dict "ctx" . "component" "worker") | fromYaml -}}
{{- $parts := list -}}
{{- range $key := keys $labels | sortAlpha -}}
{{- $parts = append $parts (printf "%s=%s" $key (get $labels $key)) -}}
{{- end -}}
{{- join "," $parts -}}
{{- end -}}

{{/* Prometheus scrape annotations ("Prometheus scrapes everything"). Usage: include ... (dict "ctx" $ "port" 8000) */}}
{{- define "shoal.scrapeAnnotations" -}}
{{- if .ctx.Values.monitoring.scrapeAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end -}}
{{- end -}}

{{- define "shoal.redis.host" -}}
{{- printf "%s.%s.svc" (include "shoal.redis.fullname" .) (include "shoal.namespace" .) -}}
{{- end -}}

{{/* Whether the bundled Redis has one ACL user per role. */}}
{{- define "shoal.redis.acl" -}}
{{- if and .Values.redis.enabled .Values.redis.auth.enabled .Values.redis.acl.enabled }}true{{ end -}}
{{- end -}}

{{/* Key of a role's Redis password in the Secret. Usage: include "shoal.redis.passwordKey" (dict "ctx" $ "role" "worker") */}}
{{- define "shoal.redis.passwordKey" -}}
{{- if include "shoal.redis.acl" .ctx -}}
{{- printf "redis-%s-password" .role -}}
{{- else -}}
{{- .ctx.Values.auth.redisPasswordKey -}}
{{- end -}}
{{- end -}}

{{/* Where the scheduler and workers find the Redis CA certificate when Redis serves TLS. */}}
{{- define "shoal.redis.caFile" -}}/etc/shoal/redis-tls/ca.crt{{- end -}}

{{/*
Environment that tells a container where Redis is, as the ACL user of its role.
Usage: include "shoal.redisEnv" (dict "ctx" $ "role" "scheduler")
The bundled Redis' password comes from the Secret and is spliced into the URL by Kubernetes'
$(VAR) expansion, so it never sits in a ConfigMap.
*/}}
{{- define "shoal.redisEnv" -}}
{{- $ := .ctx -}}
{{- if $.Values.redis.enabled }}
{{- $scheme := ternary "rediss" "redis" $.Values.redis.tls.enabled -}}
{{- if $.Values.redis.auth.enabled }}
{{- $user := ternary (printf "shoal-%s" .role) "" (eq (include "shoal.redis.acl" $) "true") }}
- name: SHOAL_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "shoal.secretName" $ }}
      key: {{ include "shoal.redis.passwordKey" . }}
- name: SHOAL_REDIS_URL
  value: {{ printf "%s://%s:$(SHOAL_REDIS_PASSWORD)@%s:6379/0" $scheme $user (include "shoal.redis.host" $) | quote }}
{{- else }}
- name: SHOAL_REDIS_URL
  value: {{ printf "%s://%s:6379/0" $scheme (include "shoal.redis.host" $) | quote }}
{{- end }}
{{- if $.Values.redis.tls.enabled }}
- name: SHOAL_REDIS_TLS_CA_FILE
  value: {{ include "shoal.redis.caFile" $ | quote }}
{{- end }}
{{- else if $.Values.externalRedis.existingSecret }}
- name: SHOAL_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.externalRedis.existingSecret }}
      key: {{ $.Values.externalRedis.existingSecretKey }}
{{- else }}
- name: SHOAL_REDIS_URL
  value: {{ required "externalRedis.url or externalRedis.existingSecret is required when redis.enabled=false" $.Values.externalRedis.url | quote }}
{{- end }}
{{- if not $.Values.redis.enabled }}
{{- include "shoal.externalRedisEnv" $ }}
{{- end }}
{{- end -}}

{{/* An external Redis' credentials, sentinel credentials and TLS files (shoal.core.redis_client). */}}
{{- define "shoal.externalRedisEnv" -}}
{{- with .Values.externalRedis }}
{{- if .username }}
- name: SHOAL_REDIS_USERNAME
  value: {{ .username | quote }}
{{- end }}
{{- if .passwordSecret.name }}
- name: SHOAL_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .passwordSecret.name }}
      key: {{ .passwordSecret.key }}
{{- end }}
{{- if .sentinel.username }}
- name: SHOAL_REDIS_SENTINEL_USERNAME
  value: {{ .sentinel.username | quote }}
{{- end }}
{{- if .sentinel.passwordSecret.name }}
- name: SHOAL_REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .sentinel.passwordSecret.name }}
      key: {{ .sentinel.passwordSecret.key }}
{{- end }}
{{- if .tls.caSecret.name }}
- name: SHOAL_REDIS_TLS_CA_FILE
  value: {{ printf "/etc/shoal/redis-tls/ca/%s" .tls.caSecret.key | quote }}
{{- end }}
{{- if .tls.clientCertSecret }}
- name: SHOAL_REDIS_TLS_CERT_FILE
  value: /etc/shoal/redis-tls/client/tls.crt
- name: SHOAL_REDIS_TLS_KEY_FILE
  value: /etc/shoal/redis-tls/client/tls.key
{{- end }}
{{- if not .tls.verify }}
- name: SHOAL_REDIS_TLS_VERIFY
  value: "false"
{{- end }}
{{- end }}
{{- end -}}

{{/* Mounts (and volumes) of the external Redis' CA and client certificate, read-only. */}}
{{- define "shoal.redisTlsMounts" -}}
{{- if not .Values.redis.enabled }}
{{- if .Values.externalRedis.tls.caSecret.name }}
- name: redis-tls-ca
  mountPath: /etc/shoal/redis-tls/ca
  readOnly: true
{{- end }}
{{- if .Values.externalRedis.tls.clientCertSecret }}
- name: redis-tls-client
  mountPath: /etc/shoal/redis-tls/client
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{- define "shoal.redisTlsVolumes" -}}
{{- if not .Values.redis.enabled }}
{{- with .Values.externalRedis.tls.caSecret.name }}
- name: redis-tls-ca
  secret:
    secretName: {{ . }}
{{- end }}
{{- with .Values.externalRedis.tls.clientCertSecret }}
- name: redis-tls-client
  secret:
    secretName: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The Redis CA certificate for the scheduler and workers (only with redis.tls.enabled). */}}
{{- define "shoal.redisTlsVolume" -}}
{{- if and .Values.redis.enabled .Values.redis.tls.enabled }}
- name: redis-tls
  secret:
    secretName: {{ required "redis.tls.existingSecret is required when redis.tls.enabled" .Values.redis.tls.existingSecret }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end -}}

{{- define "shoal.redisTlsMount" -}}
{{- if and .Values.redis.enabled .Values.redis.tls.enabled }}
- name: redis-tls
  mountPath: /etc/shoal/redis-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* The /metrics bearer token (only with monitoring.metricsToken.enabled). */}}
{{- define "shoal.metricsTokenEnv" -}}
{{- if .Values.monitoring.metricsToken.enabled }}
- name: SHOAL_METRICS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "shoal.secretName" . }}
      key: {{ .Values.auth.metricsTokenKey }}
{{- end }}
{{- end -}}

{{/* redis-cli as the probe user, in the Redis container. */}}
{{- define "shoal.redis.cli" -}}
redis-cli{{ if include "shoal.redis.acl" . }} --user shoal-probe{{ end }}{{ if .Values.redis.tls.enabled }} --tls --cacert /etc/redis/tls/ca.crt{{ end }}
{{- end -}}

{{- define "shoal.apiTokenEnv" -}}
- name: SHOAL_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "shoal.secretName" . }}
      key: {{ .Values.auth.apiTokenKey }}
{{- end -}}

{{/* The Secret with the dashboard's accounts and session key and the dashboard's and read-only API tokens. */}}
{{- define "shoal.dashboard.secretName" -}}
{{- if .Values.dashboard.auth.existingSecret -}}
{{- .Values.dashboard.auth.existingSecret -}}
{{- else if .Values.auth.existingSecret -}}
{{- .Values.auth.existingSecret -}}
{{- else -}}
{{- include "shoal.fullname" . | trunc 53 | trimSuffix "-" }}-dashboard
{{- end -}}
{{- end -}}

{{/* The read-only token (`reader`) and the dashboard's token (`dashboard`, may name the person acting). */}}
{{- define "shoal.scopedTokenEnv" -}}
- name: SHOAL_API_READ_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "shoal.dashboard.secretName" . }}
      key: api-read-token
- name: SHOAL_API_DASHBOARD_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "shoal.dashboard.secretName" . }}
      key: api-dashboard-token
{{- end -}}

{{/* Downward API: the pod's own name (worker id / lease holder) and namespace. */}}
{{- define "shoal.podEnv" -}}
- name: SHOAL_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: SHOAL_K8S_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{/* Writable /tmp for a container whose root filesystem is read-only. */}}
{{- define "shoal.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end -}}

{{- define "shoal.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Checks that refuse a values combination that would deploy something broken. */}}
{{- define "shoal.validate" -}}
{{- if le (int .Values.worker.terminationGracePeriodSeconds) (int .Values.worker.graceSeconds) -}}
{{- fail (printf "worker.terminationGracePeriodSeconds (%v) must be larger than worker.graceSeconds (%v), or Kubernetes kills workers before they hand their tasks back" .Values.worker.terminationGracePeriodSeconds .Values.worker.graceSeconds) -}}
{{- end -}}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) -}}
{{- fail (printf "autoscaling.minReplicas (%v) must not exceed autoscaling.maxReplicas (%v)" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) -}}
{{- end -}}
{{- if gt (mulf 2 .Values.config.heartbeatSeconds) (float64 .Values.config.leaseSeconds) -}}
{{- fail "config.heartbeatSeconds must be at most half of config.leaseSeconds, or leases expire under load" -}}
{{- end -}}
{{- if and .Values.ingress.enabled (eq .Values.ingress.dashboardPath .Values.ingress.apiPath) -}}
{{- fail "ingress.apiPath and ingress.dashboardPath must differ" -}}
{{- end -}}
{{- if and .Values.redis.enabled .Values.redis.acl.enabled (not .Values.redis.auth.enabled) -}}
{{- fail "redis.acl.enabled needs redis.auth.enabled: ACL users are passwords per role" -}}
{{- end -}}
{{- if and .Values.redis.enabled .Values.redis.tls.enabled (not .Values.redis.tls.existingSecret) -}}
{{- fail "redis.tls.enabled needs redis.tls.existingSecret (a Secret with tls.crt, tls.key and ca.crt)" -}}
{{- end -}}
{{- end -}}
