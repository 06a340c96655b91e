{{/* Names, labels and the pod-level pieces every Tessera workload shares. */}}

{{- define "tessera.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped base name; component objects append "-<component>". */}}
{{- define "tessera.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "auth"). */}}
{{- define "tessera.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tessera.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tessera.labels" -}}
{{ include "tessera.selectorLabels" . }}
app.kubernetes.io/part-of: tessera
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tessera.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Pod security: non-root (the image's uid 10001), RuntimeDefault seccomp. */}}
{{- define "tessera.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 10001 }}
runAsGroup: {{ .uid | default 10001 }}
fsGroup: {{ .uid | default 10001 }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "tessera.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Secret names. */}}
{{/* The Secret holding the bundled PostgreSQL's password and DSN. */}}
{{- define "tessera.postgresqlSecretName" -}}
{{- printf "%s-postgresql" (include "tessera.fullname" .) -}}
{{- end -}}

{{/* The Secret and key holding the DSN: the bundled PostgreSQL's generated one,
or the external one from database.existingSecret. */}}
{{- define "tessera.databaseSecretName" -}}
{{- if and .Values.postgresql.enabled .Values.database.existingSecret -}}
{{- fail "database.existingSecret names an external PostgreSQL: set postgresql.enabled=false to use it, or leave it empty for the bundled one" -}}
{{- end -}}
{{- if .Values.postgresql.enabled -}}
{{- include "tessera.postgresqlSecretName" . -}}
{{- else -}}
{{- default (printf "%s-database" (include "tessera.fullname" .)) .Values.database.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "tessera.databaseSecretKey" -}}
{{- ternary "url" .Values.database.existingSecretKey .Values.postgresql.enabled -}}
{{- end -}}

{{/* TESSERA_DATABASE_URL (auth, matchmaking, the console, the backup job; zones get it from
the operator, which is told the same Secret). */}}
{{- define "tessera.databaseEnv" -}}
- name: TESSERA_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "tessera.databaseSecretName" . }}
      key: {{ include "tessera.databaseSecretKey" . }}
{{- end -}}

{{- define "tessera.redisSecretName" -}}
{{- if .Values.redis.external.enabled -}}
{{- default (printf "%s-redis" (include "tessera.fullname" .)) .Values.redis.external.existingSecret -}}
{{- else -}}
{{- default (printf "%s-redis" (include "tessera.fullname" .)) .Values.redis.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "tessera.redisSecretKey" -}}
{{- if and .Values.redis.external.enabled .Values.redis.external.existingSecret -}}
{{- .Values.redis.external.existingSecretKey -}}
{{- else -}}
password
{{- end -}}
{{- end -}}

{{/* Redis URL without credentials: the bundled Service or the external URL. */}}
{{- define "tessera.redisAddress" -}}
{{- if .Values.redis.external.enabled -}}
{{- .Values.redis.external.url -}}
{{- else -}}
{{- printf "redis://%s-redis.%s.svc:6379/0" (include "tessera.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{- define "tessera.redisCluster" -}}
{{- if hasPrefix "redis+cluster://" (include "tessera.redisAddress" .) }}true{{ end -}}
{{- end -}}

{{/* The host:port of each node of the Redis address (one, or a cluster's seeds). */}}
{{- define "tessera.redisNodes" -}}
{{- $address := include "tessera.redisAddress" . -}}
{{- regexReplaceAll "^[a-z+]+://|/[0-9]*$" $address "" -}}
{{- end -}}

{{/*
The Redis address with the password `.password` (a $(VAR) reference) after the
scheme: redis://, rediss:// or redis+cluster://.
*/}}
{{- define "tessera.redisUrl" -}}
{{- $address := include "tessera.redisAddress" .root -}}
{{- $scheme := regexFind "^[a-z+]+://" $address -}}
{{- printf "%s%s:%s@%s" $scheme (include "tessera.redisUser" .) .password (trimPrefix $scheme $address) -}}
{{- end -}}

{{/*
The bundled Redis has one ACL user per component (files/redis-users.json,
rendered from tessera.common.acl): (dict "root" $ "component" "relay") names
the user and its password's key in the Redis Secret; an external Redis has the
one password of redis.external.
*/}}
{{- define "tessera.redisUser" -}}
{{- if and .component (not .root.Values.redis.external.enabled) }}{{ .component }}{{ end -}}
{{- end -}}

{{- define "tessera.redisPasswordKey" -}}
{{- if and .component (not .root.Values.redis.external.enabled) -}}
{{- printf "%s-password" .component -}}
{{- else -}}
{{- include "tessera.redisSecretKey" .root -}}
{{- end -}}
{{- end -}}

{{/* The bundled Redis' users: name -> ACL rules. */}}
{{- define "tessera.redisUsers" -}}
{{- .Files.Get "files/redis-users.json" -}}
{{- end -}}

{{/*
(dict "root" $ "component" <name>): REDIS_PASSWORD (the component's) from the
Secret, then TESSERA_REDIS_URL with the user and password
spliced in by Kubernetes' $(VAR) expansion, so the password never sits in a spec.
*/}}
{{- define "tessera.redisEnv" -}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "tessera.redisSecretName" .root }}
      key: {{ include "tessera.redisPasswordKey" . }}
- name: TESSERA_REDIS_URL
  value: {{ include "tessera.redisUrl" (dict "root" .root "component" .component "password" "$(REDIS_PASSWORD)") | quote }}
{{- end -}}

{{- define "tessera.connectKeySecretName" -}}
{{- default (printf "%s-connect-key" (include "tessera.fullname" .)) .Values.connectKey.existingSecret -}}
{{- end -}}

{{- define "tessera.signingKeySecretName" -}}
{{- default (printf "%s-auth-signing-keys" (include "tessera.fullname" .)) .Values.auth.signingKey.existingSecret -}}
{{- end -}}

{{- define "tessera.serviceClientsSecretName" -}}
{{- default (printf "%s-auth-service-clients" (include "tessera.fullname" .)) .Values.auth.serviceClients.existingSecret -}}
{{- end -}}

{{/*
The value of a chart-generated Secret key: the one already in the cluster when
there is one (so upgrades keep it), else the freshly generated candidate.
(dict "root" $ "name" secretName "key" dataKey "candidate" plainValue)
*/}}
{{- define "tessera.keptSecretValue" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- .candidate | b64enc -}}
{{- end -}}
{{- end -}}

{{/* Labels the operator puts on every zone pod and zone Service. */}}
{{- define "tessera.zoneSelectorLabels" -}}
app.kubernetes.io/name: tessera-zone
app.kubernetes.io/managed-by: tessera-operator
{{- end -}}
