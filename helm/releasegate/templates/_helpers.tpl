{{- define "releasegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "releasegate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "releasegate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "releasegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "releasegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "releasegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "releasegate.image" -}}
{{ required "image.repository is required: no releasegate image is published; build the Dockerfile, push it to your registry and name it here (docs/kubernetes.md)" .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "releasegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "releasegate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "releasegate.policyConfigMap" -}}
{{- default (printf "%s-policy" (include "releasegate.fullname" .)) .Values.policy.existingConfigMap }}
{{- end }}

{{- define "releasegate.redisSecret" -}}
{{- default (printf "%s-redis" (include "releasegate.fullname" .)) .Values.redis.existingSecret }}
{{- end }}

{{- /* Environment shared by the bot and the workers: settings and secret references, never secret values. */ -}}
{{- define "releasegate.env" -}}
- name: RELEASEGATE_POLICY
  value: /etc/releasegate/policy.yaml
- name: RELEASEGATE_WORKDIR
  value: /var/cache/releasegate
- name: RELEASEGATE_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: RELEASEGATE_HTTP_PORT
  value: {{ .Values.httpPort | quote }}
{{- if or .Values.redis.enabled .Values.redis.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "releasegate.redisSecret" . }}
      key: redis-password
{{- end }}
{{- if .Values.redis.sentinel.enabled }}
- name: RELEASEGATE_REDIS_SENTINELS
  value: {{ include "releasegate.sentinels" . | quote }}
- name: RELEASEGATE_REDIS_SENTINEL_MASTER
  value: {{ .Values.redis.sentinel.masterName | quote }}
{{- if .Values.redis.enabled }}
- name: RELEASEGATE_REDIS_SENTINEL_PASSWORD
  value: "$(REDIS_PASSWORD)"
{{- end }}
{{- end }}
- name: RELEASEGATE_REDIS_URL
{{- if and .Values.redis.enabled .Values.redis.tls.existingSecret }}
  value: "rediss://:$(REDIS_PASSWORD)@{{ include "releasegate.fullname" . }}-redis:6379/0?ssl_ca_certs=/etc/releasegate/redis-tls/ca.crt"
{{- else if .Values.redis.enabled }}
  value: "redis://:$(REDIS_PASSWORD)@{{ include "releasegate.fullname" . }}-redis:6379/0"
{{- else if .Values.redis.existingSecret }}
  value: {{ .Values.redis.externalUrl | replace "redis://" "redis://:$(REDIS_PASSWORD)@" | quote }}
{{- else }}
  value: {{ .Values.redis.externalUrl | quote }}
{{- end }}
{{- if and .Values.rollout.argocd.url .Values.rollout.argocd.existingSecret }}
- name: RELEASEGATE_ARGOCD_URL
  value: {{ .Values.rollout.argocd.url | quote }}
- name: RELEASEGATE_ARGOCD_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.rollout.argocd.existingSecret }}
      key: token
{{- end }}
{{- if .Values.verify.prometheus.existingSecret }}
- name: RELEASEGATE_PROMETHEUS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.verify.prometheus.existingSecret }}
      key: token
{{- end }}
{{- if .Values.artifacts.existingSecret }}
- name: DOCKER_CONFIG
  value: /etc/releasegate/docker
{{- end }}
{{- with .Values.artifacts.insecureRegistries }}
- name: RELEASEGATE_INSECURE_REGISTRIES
  value: {{ join "," . | quote }}
{{- end }}
{{- if .Values.git.signing.existingSecret }}
- name: RELEASEGATE_GIT_SIGNING_KEY
  value: /etc/releasegate/signing/signing-key
{{- end }}
{{- if .Values.git.existingSecret }}
- name: RELEASEGATE_GIT_SSH_KEY
  value: /etc/releasegate/git/ssh-privatekey
{{- end }}
{{- if .Values.git.knownHosts }}
- name: RELEASEGATE_GIT_KNOWN_HOSTS
  value: /etc/releasegate/known_hosts/known_hosts
{{- else if or .Values.git.existingSecret .Values.git.repositoryKeys }}
{{- if not .Values.git.insecureAcceptNewHostKeys }}
{{- fail "git.knownHosts is required with a deploy key (git.existingSecret): the Git server's SSH host keys, e.g. from `ssh-keyscan github.com`; or set git.insecureAcceptNewHostKeys=true to trust a new host's key on first use" }}
{{- end }}
- name: RELEASEGATE_GIT_ACCEPT_NEW_HOST_KEYS
  value: "true"
{{- end }}
{{- end }}

{{- /* Chat credentials: the bot's alone. Workers never talk to chat (they queue outcomes in the outbox). */ -}}
{{- define "releasegate.chatEnv" -}}
{{- with .Values.slack.existingSecret }}
- name: RELEASEGATE_SLACK_API_URL
  value: {{ $.Values.slack.apiUrl | quote }}
- name: RELEASEGATE_SLACK_BOT_TOKEN
  valueFrom: {secretKeyRef: {name: {{ . }}, key: botToken}}
- name: RELEASEGATE_SLACK_SIGNING_SECRET
  valueFrom: {secretKeyRef: {name: {{ . }}, key: signingSecret}}
- name: RELEASEGATE_SLACK_APP_TOKEN
  valueFrom: {secretKeyRef: {name: {{ . }}, key: appToken, optional: true}}
{{- end }}
{{- if .Values.rocketchat.url }}
- name: RELEASEGATE_ROCKETCHAT_URL
  value: {{ .Values.rocketchat.url | quote }}
- name: RELEASEGATE_ROCKETCHAT_USER_ID
  valueFrom: {secretKeyRef: {name: {{ .Values.rocketchat.existingSecret }}, key: userId}}
- name: RELEASEGATE_ROCKETCHAT_TOKEN
  valueFrom: {secretKeyRef: {name: {{ .Values.rocketchat.existingSecret }}, key: token}}
- name: RELEASEGATE_ROCKETCHAT_WEBHOOK_TOKEN
  valueFrom: {secretKeyRef: {name: {{ .Values.rocketchat.existingSecret }}, key: webhookToken, optional: true}}
{{- end }}
{{- end }}

{{- define "releasegate.volumeMounts" -}}
- name: policy
  mountPath: /etc/releasegate/policy.yaml
  subPath: policy.yaml
  readOnly: true
- name: cache
  mountPath: /var/cache/releasegate
- name: tmp
  mountPath: /tmp
{{- if .Values.git.existingSecret }}
- name: git-key
  mountPath: /etc/releasegate/git
  readOnly: true
{{- end }}
{{- range .Values.git.repositoryKeys }}
- name: git-key-{{ .name }}
  mountPath: /etc/releasegate/git-keys/{{ .name }}
  readOnly: true
{{- end }}
{{- if .Values.artifacts.existingSecret }}
- name: docker-config
  mountPath: /etc/releasegate/docker
  readOnly: true
{{- end }}
{{- if and .Values.redis.enabled .Values.redis.tls.existingSecret }}
- name: redis-tls
  mountPath: /etc/releasegate/redis-tls
  readOnly: true
{{- end }}
{{- if .Values.git.knownHosts }}
- name: known-hosts
  mountPath: /etc/releasegate/known_hosts
  readOnly: true
{{- end }}
{{- if .Values.git.signing.existingSecret }}
- name: signing
  mountPath: /etc/releasegate/signing
  readOnly: true
{{- end }}
{{- end }}

{{- define "releasegate.volumes" -}}
- name: policy
  configMap:
    name: {{ include "releasegate.policyConfigMap" . }}
- name: tmp
  emptyDir: {}
{{- if .Values.git.existingSecret }}
- name: git-key
  secret:
    secretName: {{ .Values.git.existingSecret }}
    defaultMode: 256  # 0o400, owner read only (decimal: YAML parsers disagree on 0400)
{{- end }}
{{- if .Values.artifacts.existingSecret }}
- name: docker-config
  secret:
    secretName: {{ .Values.artifacts.existingSecret }}
    items: [{key: .dockerconfigjson, path: config.json}]
    defaultMode: 256  # 0o400, owner read only
{{- end }}
{{- if and .Values.redis.enabled .Values.redis.tls.existingSecret }}
- name: redis-tls
  secret:
    secretName: {{ .Values.redis.tls.existingSecret }}
    items: [{key: ca.crt, path: ca.crt}]
{{- end }}
{{- range .Values.git.repositoryKeys }}
- name: git-key-{{ .name }}
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 256  # 0o400, owner read only
{{- end }}
{{- if .Values.git.signing.existingSecret }}
- name: signing
  secret:
    secretName: {{ .Values.git.signing.existingSecret }}
    defaultMode: 256  # 0o400, owner read only (decimal: YAML parsers disagree on 0400)
{{- end }}
{{- if .Values.git.knownHosts }}
- name: known-hosts
  configMap:
    name: {{ include "releasegate.fullname" . }}-known-hosts
{{- end }}
{{- end }}

{{- /* The sentinels the bot and the workers ask for the master: the bundled pods' or yours. */ -}}
{{- define "releasegate.sentinels" -}}
{{- if .Values.redis.enabled -}}
{{- $name := printf "%s-redis" (include "releasegate.fullname" .) -}}
{{- $hosts := list -}}
{{- range $i := until (int .Values.redis.sentinel.replicas) -}}
{{- $hosts = append $hosts (printf "%s-%d.%s:26379" $name $i $name) -}}
{{- end -}}
{{- join "," $hosts -}}
{{- else -}}
{{- required "redis.sentinel.externalSentinels is required with redis.enabled=false" .Values.redis.sentinel.externalSentinels -}}
{{- end -}}
{{- end }}

{{- define "releasegate.podExtras" -}}
{{- $component := .component | default "" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .Values.affinity }}
affinity:
  {{- toYaml .Values.affinity | nindent 2 }}
{{- else if and .Values.spreadOverNodes .component }}
# Each component's pods on different nodes where the cluster can: a node's loss takes one.
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              app.kubernetes.io/name: {{ include "releasegate.name" . }}
              app.kubernetes.io/instance: {{ .Release.Name }}
              app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{- define "releasegate.checksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap-policy.yaml") . | sha256sum }}
{{- end }}

{{- define "releasegate.botReplicas" -}}
{{- if kindIs "invalid" .Values.bot.replicas -}}
{{- if .Values.redis.sentinel.enabled }}2{{ else }}1{{ end -}}
{{- else -}}
{{- .Values.bot.replicas -}}
{{- end -}}
{{- end }}

{{- /* Shell: $self is this pod's name; $master the master the sentinels name, else pod 0. */ -}}
{{- define "releasegate.findMaster" -}}
{{- $name := printf "%s-redis" (include "releasegate.fullname" .) -}}
self="$(hostname).{{ $name }}"
master=""
for i in $(seq 0 {{ sub (int .Values.redis.sentinel.replicas) 1 }}); do
  master=$(redis-cli {{ include "releasegate.redisCliTls" . }}-h "{{ $name }}-$i.{{ $name }}" -p 26379 -a "$REDIS_PASSWORD" \
    --no-auth-warning sentinel get-master-addr-by-name {{ .Values.redis.sentinel.masterName }} \
    2>/dev/null | head -n 1)
  [ -n "$master" ] && break
done
[ -n "$master" ] || master="{{ $name }}-0.{{ $name }}"
{{- end }}

{{- /* redis-cli's TLS options (with a trailing space), where the bundled Redis speaks TLS. */ -}}
{{- define "releasegate.redisCliTls" -}}
{{- if .Values.redis.tls.existingSecret }}--tls --cacert /tls/ca.crt {{ end -}}
{{- end }}
