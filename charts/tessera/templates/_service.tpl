{{/*
The objects one stateless gRPC service needs: Deployment, Service, HPA, PDB.
(dict "root" $ "component" "auth" "module" "tessera.auth" "cfg" .Values.auth
      "env" <yaml list> "volumes" <yaml list> "volumeMounts" <yaml list>
      "udpPort" <int or 0> "httpPort" <int or 0>)
With tls.secretName set, auth, matchmaking and the relay serve TLS with the
Secret's tls.crt and tls.key, and their clients inside the release (relay,
matchmaking, console) verify them with its ca.crt (or tls.caSecret's).
*/}}
{{- define "tessera.service" -}}
{{- $root := .root -}}
{{- $cfg := .cfg -}}
{{- $tls := and $root.Values.tls.secretName (has .component (list "auth" "matchmaking" "relay")) -}}
{{- $tlsClient := and $root.Values.tls.secretName (has .component (list "relay" "matchmaking" "console")) -}}
{{- /* The kubelet's gRPC probe speaks plaintext only: a TLS port gets TCP probes. */ -}}
{{- $probe := dict "grpc" (dict "port" $cfg.grpcPort) -}}
{{- if $tls }}{{ $probe = dict "tcpSocket" (dict "port" "grpc") }}{{ end -}}
{{- $sel := dict "root" $root "component" .component -}}
{{- $name := printf "%s-%s" (include "tessera.fullname" $root) .component -}}
{{- if and $cfg.autoscaling.enabled (lt (int $cfg.autoscaling.maxReplicas) (int $cfg.autoscaling.minReplicas)) -}}
{{- fail (printf "%s.autoscaling.maxReplicas (%v) must be >= %s.autoscaling.minReplicas (%v)" .component $cfg.autoscaling.maxReplicas .component $cfg.autoscaling.minReplicas) -}}
{{- end -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tessera.labels" $sel | nindent 4 }}
spec:
  {{- if not $cfg.autoscaling.enabled }}
  replicas: {{ $cfg.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "tessera.selectorLabels" $sel | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "tessera.labels" $sel | nindent 8 }}
      {{- with $root.Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- include "tessera.podSecurityContext" dict | nindent 8 }}
      terminationGracePeriodSeconds: {{ add (int ($cfg.shutdownGraceSeconds | default 10)) 5 }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "tessera.selectorLabels" $sel | nindent 14 }}
      containers:
        - name: {{ .component }}
          image: {{ include "tessera.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: [python, -m, {{ .module }}]
          securityContext:
            {{- include "tessera.containerSecurityContext" dict | nindent 12 }}
          ports:
            - name: grpc
              containerPort: {{ $cfg.grpcPort }}
              protocol: TCP
            - name: metrics
              containerPort: {{ $cfg.metricsPort }}
              protocol: TCP
            {{- if .udpPort }}
            - name: udp
              containerPort: {{ .udpPort }}
              protocol: UDP
            {{- end }}
            {{- if .httpPort }}
            - name: http
              containerPort: {{ .httpPort }}
              protocol: TCP
            {{- end }}
          env:
            - name: TESSERA_HOST
              value: "0.0.0.0"
            - name: TESSERA_GRPC_PORT
              value: {{ $cfg.grpcPort | quote }}
            - name: TESSERA_METRICS_PORT
              value: {{ $cfg.metricsPort | quote }}
            - name: TESSERA_LOG_LEVEL
              value: {{ $root.Values.logLevel | quote }}
            - name: TESSERA_SHUTDOWN_GRACE_S
              value: {{ $cfg.shutdownGraceSeconds | default 10 | quote }}
            {{- include "tessera.redisEnv" (dict "root" $root "component" .component) | nindent 12 }}
            {{- if $tls }}
            - name: TESSERA_TLS_CERT_FILE
              value: /var/run/tessera/tls/tls.crt
            - name: TESSERA_TLS_KEY_FILE
              value: /var/run/tessera/tls/tls.key
            {{- end }}
            {{- if $tlsClient }}
            - name: TESSERA_TLS_CA_FILE
              value: /var/run/tessera/tls-ca/ca.crt
            {{- with $root.Values.tls.serverName }}
            - name: TESSERA_TLS_SERVER_NAME
              value: {{ . | quote }}
            {{- end }}
            {{- end }}
            {{- with .env }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $cfg.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          startupProbe:
            {{- toYaml $probe | nindent 12 }}
            periodSeconds: 2
            failureThreshold: 30
          readinessProbe:
            {{- toYaml $probe | nindent 12 }}
            periodSeconds: 5
            failureThreshold: 2
          livenessProbe:
            {{- toYaml $probe | nindent 12 }}
            periodSeconds: 10
            failureThreshold: 3
          resources:
            {{- toYaml $cfg.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $tls }}
            - name: tls
              mountPath: /var/run/tessera/tls
              readOnly: true
            {{- end }}
            {{- if $tlsClient }}
            - name: tls-ca
              mountPath: /var/run/tessera/tls-ca
              readOnly: true
            {{- end }}
            {{- with .volumeMounts }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if $tls }}
        - name: tls
          secret:
            secretName: {{ $root.Values.tls.secretName }}
            defaultMode: 0440
            items:
              - {key: tls.crt, path: tls.crt}
              - {key: tls.key, path: tls.key}
        {{- end }}
        {{- if $tlsClient }}
        # Only the CA: a client holds no server key.
        - name: tls-ca
          secret:
            secretName: {{ $root.Values.tls.caSecret | default $root.Values.tls.secretName }}
            defaultMode: 0440
            items:
              - {key: ca.crt, path: ca.crt}
        {{- end }}
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
      {{- with $cfg.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $cfg.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $cfg.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tessera.labels" $sel | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "tessera.selectorLabels" $sel | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $cfg.grpcPort }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    - name: metrics
      port: {{ $cfg.metricsPort }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
    {{- if .httpPort }}
    - name: http
      port: {{ .httpPort }}
      targetPort: http
      protocol: TCP
      appProtocol: http
    {{- end }}
{{- if $cfg.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tessera.labels" $sel | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ $cfg.autoscaling.minReplicas }}
  maxReplicas: {{ $cfg.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $cfg.autoscaling.targetCPUUtilizationPercentage }}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 300
{{- end }}
{{- if $cfg.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tessera.labels" $sel | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" $cfg.podDisruptionBudget.minAvailable) }}
  minAvailable: {{ $cfg.podDisruptionBudget.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $cfg.podDisruptionBudget.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "tessera.selectorLabels" $sel | nindent 6 }}
{{- end }}
{{- end -}}
