{{/* Names and labels. */}}
{{- define "drift-detector.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "drift-detector.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "drift-detector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "drift-detector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "drift-detector.labels" -}}
{{ include "drift-detector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The label every detector Pod carries and the PodMonitor selects on. */}}
{{- define "drift-detector.scrapeLabel" -}}
drift-detector/scrape: {{ include "drift-detector.fullname" . | quote }}
{{- end -}}

{{- define "drift-detector.configName" -}}
{{- printf "%s-config" (include "drift-detector.fullname" .) -}}
{{- end -}}

{{/* The settings file: values.config with kafka.group_id defaulted per release and mode. */}}
{{- define "drift-detector.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $kafka := get $config "kafka" | default dict -}}
{{- if not (get $kafka "group_id") -}}
{{- $_ := set $kafka "group_id" (printf "%s-%s" (include "drift-detector.fullname" .) .Values.mode) -}}
{{- end -}}
{{- $_ := set $config "kafka" $kafka -}}
{{- toYaml $config -}}
{{- end -}}

{{- define "drift-detector.port" -}}
{{- (.Values.config.metrics | default dict).port | default 10108 -}}
{{- end -}}

{{- define "drift-detector.scheme" -}}
{{- if (.Values.config.metrics | default dict).tls_certfile -}}HTTPS{{- else -}}HTTP{{- end -}}
{{- end -}}

{{/* The detector container, the same in the standalone Deployment and the sidecar but for
the readiness probe: /readyz (consuming: connected to Kafka, polling, every topic there)
standalone; /healthz (the process serves HTTP) in a sidecar, since a Pod is Ready only while
every container is and a Kafka outage must not take the model server out of its Service
(Kafka's health is drift_kafka_connected and the KafkaDisconnected alert). */}}
{{- define "drift-detector.container" -}}
- name: drift-detector
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["run", "--config", "/etc/drift-detector/config.yaml"]
  env:
    - name: NUMBA_CACHE_DIR
      value: /tmp/numba
    {{- with .Values.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: metrics
      containerPort: {{ include "drift-detector.port" . }}
      protocol: TCP
  livenessProbe:
    httpGet: {path: /healthz, port: metrics, scheme: {{ include "drift-detector.scheme" . }}}
    periodSeconds: 10
    failureThreshold: 3
  readinessProbe:
    httpGet: {path: {{ if eq .Values.mode "sidecar" }}/healthz{{ else }}/readyz{{ end }}, port: metrics, scheme: {{ include "drift-detector.scheme" . }}}
    periodSeconds: 5
    failureThreshold: 3
  startupProbe:
    httpGet: {path: /healthz, port: metrics, scheme: {{ include "drift-detector.scheme" . }}}
    periodSeconds: 2
    failureThreshold: 30
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: drift-detector-config
      mountPath: /etc/drift-detector
      readOnly: true
    - name: numba-cache
      mountPath: /tmp/numba
{{- end -}}

{{- define "drift-detector.volumes" -}}
- name: drift-detector-config
  configMap:
    name: {{ include "drift-detector.configName" . }}
- name: numba-cache
  emptyDir:
    sizeLimit: 256Mi
{{- end -}}

{{- define "drift-detector.checkValues" -}}
{{- if not (has .Values.mode (list "standalone" "sidecar")) -}}
{{- fail (printf "mode must be standalone or sidecar, not %q" .Values.mode) -}}
{{- end -}}
{{- if not (has .Values.monitoring.kind (list "PodMonitor" "ServiceMonitor" "none")) -}}
{{- fail (printf "monitoring.kind must be PodMonitor, ServiceMonitor or none, not %q" .Values.monitoring.kind) -}}
{{- end -}}
{{- if and (eq .Values.mode "sidecar") (eq .Values.monitoring.kind "ServiceMonitor") -}}
{{- fail "monitoring.kind=ServiceMonitor needs mode=standalone: sidecars have no Service; use PodMonitor" -}}
{{- end -}}
{{- end -}}
