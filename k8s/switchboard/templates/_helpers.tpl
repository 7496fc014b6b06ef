{{/* Names, labels and shared values of the Switchboard chart. */}}

{{- define "switchboard.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "switchboard.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "switchboard.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "switchboard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "switchboard.secretName" -}}
{{- default (printf "%s-credentials" (include "switchboard.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "switchboard.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "%s://%s-nats:4222" (ternary "tls" "nats" .Values.nats.tls.enabled) (include "switchboard.fullname" .) -}}
{{- else -}}
{{- required "nats.externalUrl is required when nats.enabled=false" .Values.nats.externalUrl -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by edges and routers. */}}
{{- define "switchboard.env" -}}
- name: SWITCHBOARD_NATS__URL
  value: {{ include "switchboard.natsUrl" . | quote }}
- name: SWITCHBOARD_NATS__REPLICAS
  value: {{ .Values.nats.kvReplicas | quote }}
- name: SWITCHBOARD_EVENTS__REPLICAS
  value: {{ .Values.nats.kvReplicas | quote }}
- name: SWITCHBOARD_HISTORY__REPLICAS
  value: {{ .Values.nats.kvReplicas | quote }}
- name: SWITCHBOARD_AUTH__SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.secretName" . }}
      key: jwt-secret
      optional: true
{{- end -}}

{{/* NATS login and TLS of one role: (dict "root" . "role" "edge"|"router"). */}}
{{- define "switchboard.natsEnv" -}}
{{- $v := .root.Values -}}
{{- if $v.nats.auth.enabled }}
- name: SWITCHBOARD_NATS__USER
  value: {{ index $v.nats.auth (printf "%sUser" .role) | quote }}
- name: SWITCHBOARD_NATS__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.secretName" .root }}
      key: nats-{{ .role }}-password
{{- end }}
{{- if $v.nats.tls.enabled }}
- name: SWITCHBOARD_NATS__TLS__REQUIRED
  value: "true"
- name: SWITCHBOARD_NATS__TLS__CA_FILE
  value: /etc/switchboard/nats-tls/ca.crt
{{- end }}
{{- end -}}

{{- define "switchboard.natsTlsName" -}}
{{- required "nats.tls.secretName is required when nats.tls.enabled" .Values.nats.tls.secretName -}}
{{- end -}}

{{/* The NATS CA for edges and routers (nats.tls): volume, then mount. */}}
{{- define "switchboard.natsTlsVolume" -}}
{{- if .Values.nats.tls.enabled }}
- name: nats-tls
  secret:
    secretName: {{ include "switchboard.natsTlsName" . }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end -}}

{{- define "switchboard.natsTlsMount" -}}
{{- if .Values.nats.tls.enabled }}
- name: nats-tls
  mountPath: /etc/switchboard/nats-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* The NATS route URLs with the route password, as a NATS config array. */}}
{{- define "switchboard.natsRoutes" -}}
{{- $urls := list -}}
{{- range $i := until .replicas -}}
{{- $urls = append $urls (printf "\"nats://sb-route:$(SB_ROUTE_PASSWORD)@%s-nats-%d.%s-nats-headless:6222\"" $.fullname $i $.fullname) -}}
{{- end -}}
[{{ join ", " $urls }}]
{{- end -}}

{{/* NetworkPolicy egress rule: DNS to any resolver (kube-dns, node-local caches). */}}
{{/* DNS, to the cluster's DNS pods only (networkPolicy.dnsTo): an egress
     rule for port 53 without peers would reach any address, a tunnel out. */}}
{{- define "switchboard.dnsEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
  {{- with .Values.networkPolicy.dnsTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{- define "switchboard.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The `config` values as TOML. Helm reads YAML numbers as floats, which
     toToml writes as `65536.0`: integers are written as integers here. */}}
{{- define "switchboard.toml" -}}
{{- range $section, $kv := . }}
[{{ $section }}]
{{- range $k, $v := $kv }}
{{- if kindIs "float64" $v }}
{{ $k }} = {{ if eq (float64 (int64 $v)) $v }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "bool" $v) }}
{{ $k }} = {{ $v }}
{{- else if kindIs "string" $v }}
{{ $k }} = {{ $v | toJson }}
{{- else if kindIs "slice" $v }}
{{ $k }} = {{ $v | toJson }}
{{- else if not (kindIs "invalid" $v) }}
{{- fail (printf "config.%s.%s: unsupported value %v" $section $k $v) }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
