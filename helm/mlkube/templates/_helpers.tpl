{{/* Object names: the release name, so `mlkube submit` (release mlkube-<run id>) and `helm install NAME` agree. */}}
{{- define "mlkube.fullname" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* The run id: run folder, Ray job id and rendezvous id. */}}
{{- define "mlkube.runId" -}}
{{- .Values.runId | default .Release.Name -}}
{{- end -}}

{{- define "mlkube.serveRunId" -}}
{{- .Values.serve.runId | default (include "mlkube.runId" .) -}}
{{- end -}}

{{- define "mlkube.claimName" -}}
{{- .Values.runs.claimName | default (printf "%s-runs" (include "mlkube.fullname" .)) -}}
{{- end -}}

{{/* The image; its tag defaults to the chart's appVersion (<appVersion>-gpu for the GPU build). */}}
{{- define "mlkube.image" -}}
{{- $tag := .Values.image.tag | default (printf "%s%s" .Chart.AppVersion (ternary "-gpu" "" .Values.gpu)) -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "root" . "component" "serving"). */}}
{{- define "mlkube.selectorLabels" -}}
app.kubernetes.io/name: mlkube
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of every object; mlkube status/logs/delete find a run's objects by mlkube.dev/run-id. */}}
{{- define "mlkube.labels" -}}
{{ include "mlkube.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
mlkube.dev/run-id: {{ include "mlkube.runId" .root | quote }}
{{- end -}}

{{- define "mlkube.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.security.runAsUser }}
runAsGroup: {{ .Values.security.runAsUser }}
fsGroup: {{ .Values.security.fsGroup }}
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "mlkube.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .Values.security.readOnlyRootFilesystem }}
capabilities: {drop: [ALL]}
{{- end -}}

{{/* nodeSelector, tolerations and image pull secrets of a pod; (dict "root" . "gpu" true) adds the GPU tolerations. */}}
{{- define "mlkube.scheduling" -}}
{{- $tolerations := .root.Values.tolerations -}}
{{- if .gpu }}{{ $tolerations = concat $tolerations .root.Values.gpuTolerations }}{{ end -}}
{{- with .root.Values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Prometheus scrape annotations for mlkube's own exporter (the tuning driver, local rank 0 of a training pod). */}}
{{- define "mlkube.metricsAnnotations" -}}
{{- if .Values.metrics.port }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* Environment of every mlkube container: caches on the writable /tmp, the run id. */}}
{{- define "mlkube.env" -}}
- {name: MLKUBE_RUN_ID, value: {{ include "mlkube.runId" . | quote }}}
- {name: HOME, value: /tmp}
- {name: NUMBA_CACHE_DIR, value: /tmp/numba}
- {name: MPLCONFIGDIR, value: /tmp/matplotlib}
{{- end -}}

{{/* The model-signing key (the user's Secret signing.secretName, entry `key`), read-only in the pods that write or
check model cards. */}}
{{- define "mlkube.signingDir" -}}/etc/mlkube/signing{{- end -}}

{{- define "mlkube.signingEnv" -}}
- {name: MLKUBE_SIGNING_KEY_FILE, value: {{ include "mlkube.signingDir" . }}/key}
{{- end -}}

{{- define "mlkube.signingVolume" -}}
- name: signing
  secret:
    secretName: {{ .Values.signing.secretName }}
    items: [{key: key, path: key}]
    defaultMode: 288          # 0440: the pods' group (fsGroup) reads it, nobody writes it
{{- end -}}

{{- define "mlkube.signingMount" -}}
- {name: signing, mountPath: {{ include "mlkube.signingDir" . }}, readOnly: true}
{{- end -}}

{{/* A writable /tmp, size-limited: (dict "root" . "size" QUANTITY). */}}
{{- define "mlkube.tmpVolume" -}}
- name: tmp
  emptyDir: {sizeLimit: {{ .size }}}
{{- end -}}

{{/* Volumes of tuning and training pods: the runs claim, the spec, a writable /tmp, the signing key. */}}
{{- define "mlkube.workVolumes" -}}
- name: runs
  persistentVolumeClaim: {claimName: {{ include "mlkube.claimName" . }}}
- name: spec
  configMap: {name: {{ include "mlkube.fullname" . }}-spec}
{{ include "mlkube.tmpVolume" (dict "root" . "size" .Values.scratch.tmp) }}
{{ include "mlkube.signingVolume" . }}
{{- end -}}

{{- define "mlkube.workMounts" -}}
- {name: runs, mountPath: {{ .Values.runs.mountPath }}}
- {name: spec, mountPath: /spec, readOnly: true}
- {name: tmp, mountPath: /tmp}
{{ include "mlkube.signingMount" . }}
{{- end -}}

{{/* The exporter ports of a pod, metrics-<local rank> on metrics.port + local rank: (dict "root" . "count" N). */}}
{{- define "mlkube.metricsPorts" -}}
{{- $port := .root.Values.metrics.port -}}
{{- if $port }}
{{- range $rank := until (int .count) }}
- {name: metrics-{{ $rank }}, containerPort: {{ add $port $rank }}}
{{- end }}
{{- end }}
{{- end -}}

{{/* Worker processes per training pod: one per GPU, else elastic.nprocPerNode. */}}
{{- define "mlkube.processesPerNode" -}}
{{- ternary .Values.elastic.gpusPerNode .Values.elastic.nprocPerNode .Values.gpu -}}
{{- end -}}

{{/* torchrun's command line: (dict "root" . "backend" "c10d" "endpoint" "host:port"), "nnodes" N for a fixed
membership (default MIN:MAX). The rendezvous id is the run id. */}}
{{- define "mlkube.torchrunArgs" -}}
{{- $v := .root.Values.elastic -}}
{{- $runId := include "mlkube.runId" .root -}}
- --nnodes={{ .nnodes | default (printf "%v:%v" $v.minNodes $v.maxNodes) }}
- --nproc-per-node={{ include "mlkube.processesPerNode" .root }}
- --rdzv-backend={{ .backend }}
- --rdzv-endpoint={{ .endpoint }}
- --rdzv-id={{ $runId }}
- --max-restarts={{ $v.maxRestarts }}
- -m
- mlkube.commands.lstm_worker
- --spec
- /spec/experiment.yaml
- --run-dir
- {{ .root.Values.runs.mountPath }}/{{ $runId }}
{{- end -}}

{{/* The training container's resources: elastic.resources, plus elastic.gpusPerNode GPUs with gpu: true. */}}
{{- define "mlkube.trainingResources" -}}
{{- $v := .Values.elastic -}}
{{- $resources := deepCopy $v.resources }}
{{- if .Values.gpu }}
{{- $_ := set $resources "limits" (merge (dict "nvidia.com/gpu" $v.gpusPerNode) ($resources.limits | default dict)) }}
{{- end }}
{{- toYaml $resources }}
{{- end -}}

{{/* The Kueue queue label of a batch workload (queue set), else nothing. */}}
{{- define "mlkube.queueLabel" -}}
{{- with .Values.queue }}
kueue.x-k8s.io/queue-name: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Labels of a batch workload object: mlkube.labels and the Kueue queue label: (dict "root" . "component" C). */}}
{{- define "mlkube.workloadLabels" -}}
{{ include "mlkube.labels" . }}
{{- include "mlkube.queueLabel" .root }}
{{- end -}}

{{/* The pod template of one training worker: (dict "root" . "container" NAME "backend" B "endpoint" E), optional
"nnodes" N, "port" (the rendezvous port, default elastic.rdzvPort), "restartPolicy". */}}
{{- define "mlkube.trainingPod" -}}
{{- $root := .root -}}
{{- $v := $root.Values.elastic -}}
metadata:
  labels:
    {{- include "mlkube.labels" (dict "root" $root "component" "training") | nindent 4 }}
    mlkube.dev/role: worker
  {{- with include "mlkube.metricsAnnotations" $root }}
  annotations: {{- . | nindent 4 }}
  {{- end }}
spec:
  {{- with .restartPolicy }}
  restartPolicy: {{ . }}
  {{- end }}
  automountServiceAccountToken: false
  securityContext: {{- include "mlkube.podSecurityContext" $root | nindent 4 }}
  {{- include "mlkube.scheduling" (dict "root" $root "gpu" $root.Values.gpu) | nindent 2 }}
  containers:
    - name: {{ .container }}
      image: {{ include "mlkube.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command: [torchrun]
      args: {{- include "mlkube.torchrunArgs" . | nindent 8 }}
      env:
        {{- include "mlkube.env" $root | nindent 8 }}
        {{- include "mlkube.signingEnv" $root | nindent 8 }}
        {{- /* rank 0 hosts each formation's store: on torchrun's shared one, a node that joins later is never
        admitted (mlkube/torchrun.py, NODES_RENDEZVOUS) */}}
        - {name: TORCH_DISABLE_SHARE_RDZV_TCP_STORE, value: "1"}
      ports:
        - {name: rdzv, containerPort: {{ .port | default $v.rdzvPort }}}
        {{- include "mlkube.metricsPorts" (dict "root" $root "count" (include "mlkube.processesPerNode" $root)) | nindent 8 }}
      resources: {{- include "mlkube.trainingResources" $root | nindent 8 }}
      securityContext: {{- include "mlkube.containerSecurityContext" $root | nindent 8 }}
      volumeMounts:
        {{- include "mlkube.workMounts" $root | nindent 8 }}
        - {name: dshm, mountPath: /dev/shm}
  volumes:
    {{- include "mlkube.workVolumes" $root | nindent 4 }}
    - name: dshm
      emptyDir: {medium: Memory, sizeLimit: {{ $root.Values.scratch.shm }}}
{{- end -}}

{{/* One Ray container: (dict "root" . "name" NAME "resources" R "gpus" N "driver" BOOL). KubeRay sets its command.
The driver (`mlkube run`, on the head of a RayJob) exports the tuning metrics. */}}
{{- define "mlkube.rayContainer" -}}
- name: {{ .name }}
  image: {{ include "mlkube.image" .root }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  env:
    {{- include "mlkube.env" .root | nindent 4 }}
    {{- include "mlkube.signingEnv" .root | nindent 4 }}
  {{- with include "mlkube.metricsPorts" (dict "root" .root "count" (ternary 1 0 .driver)) }}
  ports: {{- . | nindent 4 }}
  {{- end }}
  resources:
    {{- $resources := deepCopy .resources }}
    {{- if .gpus }}
    {{- $_ := set $resources "limits" (merge (dict "nvidia.com/gpu" .gpus) ($resources.limits | default dict)) }}
    {{- end }}
    {{- toYaml $resources | nindent 4 }}
  securityContext: {{- include "mlkube.containerSecurityContext" .root | nindent 4 }}
  volumeMounts: {{- include "mlkube.workMounts" .root | nindent 4 }}
{{- end -}}

{{/* A Ray pod template: (dict "root" . "name" NAME "resources" R "gpus" N "driver" BOOL). */}}
{{- define "mlkube.rayPod" -}}
metadata:
  labels:
    {{- include "mlkube.labels" (dict "root" .root "component" "tuning") | nindent 4 }}
    mlkube.dev/role: {{ .name }}
  {{- with and .driver (include "mlkube.metricsAnnotations" .root) }}
  annotations: {{- . | nindent 4 }}
  {{- end }}
spec:
  {{- /* Only the head's autoscaler sidecar (KubeRay adds it) calls the Kubernetes API. */}}
  automountServiceAccountToken: {{ and (eq .name "ray-head") .root.Values.ray.autoscaling }}
  securityContext: {{- include "mlkube.podSecurityContext" .root | nindent 4 }}
  {{- include "mlkube.scheduling" (dict "root" .root "gpu" .gpus) | nindent 2 }}
  containers: {{- include "mlkube.rayContainer" . | nindent 4 }}
  volumes: {{- include "mlkube.workVolumes" .root | nindent 4 }}
{{- end -}}

{{/* The RayCluster spec of a RayJob or a long-lived RayCluster: one head, one autoscaled worker group. A RayJob's
driver runs on the head; a RayCluster's drivers run wherever `mlkube run` is started. */}}
{{- define "mlkube.rayClusterSpec" -}}
{{- $ray := .Values.ray -}}
{{- $gpus := ternary $ray.workers.gpusPerWorker 0 .Values.gpu -}}
rayVersion: {{ $ray.version | quote }}
{{- /* KubeRay makes a random token (Secret <cluster name>, key auth_token) and gives it to every Ray pod, the
submitter included. */}}
authOptions: {mode: {{ $ray.auth }}}
enableInTreeAutoscaling: {{ $ray.autoscaling }}
headGroupSpec:
  rayStartParams: {dashboard-host: "0.0.0.0"}
  template: {{- include "mlkube.rayPod" (dict "root" . "name" "ray-head" "resources" $ray.head.resources "gpus" 0 "driver" (eq $ray.mode "job")) | nindent 4 }}
workerGroupSpecs:
  - groupName: {{ ternary "gpu" "cpu" .Values.gpu }}
    replicas: {{ $ray.workers.replicas }}
    minReplicas: {{ $ray.workers.minReplicas }}
    maxReplicas: {{ $ray.workers.maxReplicas }}
    rayStartParams: {{ if $gpus }}{num-gpus: {{ $gpus | quote }}}{{ else }}{}{{ end }}
    template: {{- include "mlkube.rayPod" (dict "root" . "name" "ray-worker" "resources" $ray.workers.resources "gpus" $gpus "driver" false) | nindent 6 }}
{{- end -}}

{{/* The serving pod's spec (the body under a Deployment's template.spec and a KServe InferenceService's predictor):
`mlkube serve` of the run on all interfaces (the Service and the probes come from outside the pod; the NetworkPolicy
says who), its env, ports and TCP probes, the runs claim read-write (the serving folder), a private /tmp.
(dict "root" . "container" NAME). */}}
{{- define "mlkube.servePod" -}}
{{- $root := .root -}}
{{- $s := $root.Values.serve -}}
automountServiceAccountToken: false
securityContext: {{- include "mlkube.podSecurityContext" $root | nindent 2 }}
{{ include "mlkube.scheduling" (dict "root" $root "gpu" false) }}
containers:
  - name: {{ .container }}
    image: {{ include "mlkube.image" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    command: [mlkube, serve, {{ printf "%s/%s" $root.Values.runs.mountPath (include "mlkube.serveRunId" $root) }}, --host, 0.0.0.0]
    workingDir: /tmp
    env:
      {{- include "mlkube.env" $root | nindent 6 }}
      {{- include "mlkube.signingEnv" $root | nindent 6 }}
      {{- if eq $s.kind "kserve" }}
      - {name: PROTOCOL, value: v2}   # KServe: the Open Inference Protocol (POST /v2/models/<model>/infer)
      {{- end }}
    ports:
      - {name: inference, containerPort: {{ $s.ports.inference }}}
      - {name: metrics, containerPort: {{ $s.ports.metrics }}}
    {{- /* TCP: /ping needs the key (values.yaml, serve). The startup probe allows 5 min to archive and load. */}}
    startupProbe:
      tcpSocket: {port: inference}
      periodSeconds: 5
      failureThreshold: 60
    readinessProbe:
      tcpSocket: {port: inference}
      periodSeconds: 10
    livenessProbe:
      tcpSocket: {port: inference}
      periodSeconds: 20
      failureThreshold: 3
    resources: {{- toYaml $s.resources | nindent 6 }}
    securityContext: {{- include "mlkube.containerSecurityContext" $root | nindent 6 }}
    volumeMounts:
      - {name: runs, mountPath: {{ $root.Values.runs.mountPath }}}
      - {name: tmp, mountPath: /tmp}
      {{- include "mlkube.signingMount" $root | nindent 6 }}
volumes:
  - name: runs
    persistentVolumeClaim: {claimName: {{ include "mlkube.claimName" $root }}}
  {{- include "mlkube.tmpVolume" (dict "root" $root "size" $root.Values.scratch.tmp) | nindent 2 }}
  {{- include "mlkube.signingVolume" $root | nindent 2 }}
{{- end -}}

{{/* The serving workload and its Service (kubectl names): ours for serve.kind deployment, KServe's for kserve (its
standard mode names both <InferenceService>-predictor; the Service's port 80 leads to the inference port). */}}
{{- define "mlkube.serveWorkload" -}}
{{ include "mlkube.fullname" . }}-serve{{ if eq .Values.serve.kind "kserve" }}-predictor{{ end }}
{{- end -}}

{{- define "mlkube.serveUrl" -}}
{{- if eq .Values.serve.kind "kserve" -}}
http://{{ include "mlkube.serveWorkload" . }}:80
{{- else -}}
http://{{ include "mlkube.serveWorkload" . }}:{{ .Values.serve.ports.inference }}
{{- end -}}
{{- end -}}

{{/* Rules across values that a JSON schema cannot say; each fails `helm install` with the fix. */}}
{{- define "mlkube.validate" -}}
{{- $e := .Values.elastic -}}
{{- if hasKey $e "operator" -}}
{{- fail (printf "elastic.operator (%v) was replaced by training.kind: operator kubeflow is training.kind pytorchjob, torchelastic is elasticjob (the default, trainjob, is a Kubeflow Trainer v2 TrainJob)" $e.operator) -}}
{{- end -}}
{{- if and $e.enabled (eq .Values.training.kind "trainjob") (not (regexMatch "^[a-z]" (include "mlkube.fullname" .))) -}}
{{- fail (printf "training.kind trainjob: Trainer v2 names a TrainJob with a letter first (RFC 1035); release %q starts with another character: rename the release" .Release.Name) -}}
{{- end -}}
{{- if and .Values.multiKueue (not .Values.queue) -}}
{{- fail "multiKueue needs queue: set queue to the LocalQueue that points at the MultiKueue ClusterQueue" -}}
{{- end -}}
{{- if and .Values.queue $e.enabled (eq .Values.training.kind "elasticjob") -}}
{{- fail "queue: Kueue does not admit an ElasticJob; use training.kind trainjob or pytorchjob, or no queue" -}}
{{- end -}}
{{- if and .Values.queue .Values.ray.enabled .Values.ray.autoscaling -}}
{{- fail "queue: Kueue refuses an autoscaling Ray cluster (it admits a fixed size); set ray.autoscaling: false" -}}
{{- end -}}
{{- if gt (int $e.minNodes) (int $e.maxNodes) -}}
{{- fail (printf "elastic.minNodes (%v) must be <= elastic.maxNodes (%v)" $e.minNodes $e.maxNodes) -}}
{{- end -}}
{{- $w := .Values.ray.workers -}}
{{- if gt (int $w.minReplicas) (int $w.maxReplicas) -}}
{{- fail (printf "ray.workers.minReplicas (%v) must be <= ray.workers.maxReplicas (%v)" $w.minReplicas $w.maxReplicas) -}}
{{- end -}}
{{- if and .Values.metrics.podMonitor.enabled (not .Values.metrics.port) -}}
{{- fail "metrics.podMonitor.enabled needs metrics.port: the exporters are off (metrics.port: null)" -}}
{{- end -}}
{{- if and (not .Values.runs.create) (not .Values.runs.claimName) -}}
{{- fail "runs.create is false: set runs.claimName to the existing claim that holds the runs" -}}
{{- end -}}
{{- if and (eq .Values.ray.auth "token") (semverCompare "<2.52.0" .Values.ray.version) -}}
{{- fail (printf "ray.auth token needs Ray 2.52.0 or newer (ray.version is %s): raise ray.version, or set ray.auth: disabled" .Values.ray.version) -}}
{{- end -}}
{{- $exporters := or (and .Values.ray.enabled (eq .Values.ray.mode "job")) .Values.elastic.enabled -}}
{{- if and .Values.networkPolicy.enabled .Values.metrics.podMonitor.enabled $exporters (not .Values.networkPolicy.metricsFrom) -}}
{{- fail "metrics.podMonitor.enabled: the NetworkPolicies close the exporter ports; add Prometheus to networkPolicy.metricsFrom (e.g. a namespaceSelector)" -}}
{{- end -}}
{{- if and .Values.serve.enabled (eq .Values.serve.kind "kserve") .Values.serve.serviceMonitor.enabled -}}
{{- fail "serve.serviceMonitor: KServe makes the serving Service itself (without this chart's labels); with serve.kind kserve scrape the pods (their prometheus.io annotations, or metrics.podMonitor)" -}}
{{- end -}}
{{- if not (or .Values.ray.enabled .Values.elastic.enabled .Values.serve.enabled) -}}
{{- fail "nothing to deploy: enable ray, elastic or serve (e.g. --set serve.enabled=true)" -}}
{{- end -}}
{{- end -}}

{{/* A label selector of this release's pods of one component, of some roles: (dict "root" . "component" C "roles"
LIST); no roles: every role. */}}
{{- define "mlkube.podsOf" -}}
matchLabels: {{- include "mlkube.selectorLabels" . | nindent 2 }}
{{- with .roles }}
matchExpressions:
  - {key: mlkube.dev/role, operator: In, values: {{ toJson . }}}
{{- end }}
{{- end -}}

{{/* One NetworkPolicy peer: this release's pods of a component and roles (as mlkube.podsOf). */}}
{{- define "mlkube.peerOf" -}}
- podSelector: {{- include "mlkube.podsOf" . | nindent 4 }}
{{- end -}}

{{/* An egress rule for DNS (networkPolicy.dns; empty: any destination on port 53). */}}
{{- define "mlkube.dnsEgress" -}}
- to: {{- toYaml .Values.networkPolicy.dns | nindent 4 }}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}

{{/* Egress to some of this release's pods on any port (as mlkube.peerOf), and DNS. */}}
{{- define "mlkube.egressTo" -}}
- to: {{- include "mlkube.peerOf" . | nindent 4 }}
{{ include "mlkube.dnsEgress" .root }}
{{- end -}}
