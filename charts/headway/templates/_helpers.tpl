{{/*
Object names: "<release>-headway-<component>", or just "<release>-<component>" when the release name
already says headway (the usual `helm install headway`), so Service names stay short and predictable.
*/}}
{{- define "headway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains "headway" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-headway" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "headway.name" -}}
{{- printf "%s-%s" (include "headway.fullname" .root) .component -}}
{{- end -}}

{{- define "headway.selectorLabels" -}}
app.kubernetes.io/name: headway
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "headway.labels" -}}
{{ include "headway.selectorLabels" . }}
app.kubernetes.io/part-of: headway
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* Labels for the chart's own objects that are not per component. */}}
{{- define "headway.commonLabels" -}}
{{ include "headway.labels" (dict "root" . "component" "headway") }}
{{- end -}}

{{- define "headway.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "headway.serviceHost" -}}
{{- printf "%s.%s.svc.cluster.local" (include "headway.name" .) .root.Release.Namespace -}}
{{- end -}}

{{/* Where engines publish KV events: the indexer when run apart, else the gateway that embeds it. */}}
{{- define "headway.kvEventsEndpoint" -}}
{{- $component := ternary "kvcache" "gateway" .Values.kvcache.enabled -}}
{{- printf "tcp://%s:%d" (include "headway.serviceHost" (dict "root" . "component" $component)) (int .Values.kvcache.eventsPort) -}}
{{- end -}}

{{- define "headway.redisUrl" -}}
{{- if .Values.redis.externalUrl -}}
{{- .Values.redis.externalUrl -}}
{{- else if .Values.redis.enabled -}}
{{- printf "redis://%s:%d/0" (include "headway.serviceHost" (dict "root" . "component" "redis")) (int .Values.redis.port) -}}
{{- end -}}
{{- end -}}

{{/*
Pod-level settings shared by every component. The control-plane label tells the development runner
(a kubelet stand-in on fake nodes) to run the pod as a local process; a real kubelet ignores it.
*/}}
{{- define "headway.podMeta" -}}
labels:
  {{- include "headway.selectorLabels" . | nindent 2 }}
  inference.headway.dev/control-plane: "true"
  {{- with .root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .root.Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "headway.podSpec" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/*
Downward-API variables. HTTP listeners bind 0.0.0.0 so `kubectl port-forward` reaches them; the KV-event
socket and the operator's liveness endpoint and webhook bind the pod IP, which engines, the kubelet and
the API server dial anyway.
*/}}
{{- define "headway.podEnv" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{/*
RBAC from the single source in deploy/rbac (files/rbac links there): every Role and ClusterRole of
<component>.yaml is rendered with its rules unchanged, renamed for this release ("headway-x" becomes
"<fullname>-x"; a Role lands in the release namespace) and bound to the component's ServiceAccount, so the chart can never grant more or less than the reviewed file.
*/}}
{{- define "headway.rbac" -}}
{{- $root := .root -}}
{{- $path := printf "files/rbac/%s.yaml" .component -}}
{{- $text := $root.Files.Get $path -}}
{{- if not $text -}}
{{- fail (printf "%s is missing (deploy/rbac/%s.yaml); disable the %s or restore the file" $path .component .component) -}}
{{- end -}}
{{- $sa := include "headway.name" . -}}
{{- range $doc := regexSplit "(?m)^---\\s*$" $text -1 }}
{{- $obj := fromYaml $doc -}}
{{- if and $obj (has ($obj.kind | default "") (list "ClusterRole" "Role")) }}
{{- $name := printf "%s-%s" (include "headway.fullname" $root) (trimPrefix "headway-" $obj.metadata.name) }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ $obj.kind }}
metadata:
  name: {{ $name }}
  {{- if eq $obj.kind "Role" }}
  namespace: {{ $root.Release.Namespace }}
  {{- end }}
  labels:
    {{- include "headway.labels" (dict "root" $root "component" $.component) | nindent 4 }}
rules:
  {{- toYaml $obj.rules | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ $obj.kind }}Binding
metadata:
  name: {{ $name }}
  {{- if eq $obj.kind "Role" }}
  namespace: {{ $root.Release.Namespace }}
  {{- end }}
  labels:
    {{- include "headway.labels" (dict "root" $root "component" $.component) | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: {{ $obj.kind }}
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ $sa }}
    namespace: {{ $root.Release.Namespace }}
{{- end }}
{{- end }}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $sa }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "headway.labels" (dict "root" $root "component" .component) | nindent 4 }}
{{- end -}}

{{/* Whether Prometheus Operator objects are rendered. */}}
{{- define "headway.monitoring" -}}
{{- $mode := .Values.monitoring.prometheusOperator -}}
{{- if or (eq $mode "always") (and (eq $mode "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor")) -}}
true
{{- end -}}
{{- end -}}
