{{/*
Shoal's alert rules in Prometheus rule-file form (`groups:`), so `promtool check rules` and
`promtool test rules` run on exactly what the PrometheusRule carries (tests/test_alerts.py).
Metric names: docs/contracts.md "Metric names". Gauges exported by every scheduler replica are
reduced with max() first, so two replicas never double-count.
*/}}
{{- define "shoal.alertRules" -}}
{{- $rule := .Values.monitoring.prometheusRule -}}
{{- $sel := tpl $rule.metricSelector . -}}
{{- $depth := printf "sum by (namespace, queue) (max by (namespace, queue, priority) (shoal_queue_depth{%s}))" $sel -}}
{{- /* Tasks that ended in the last 10 minutes, from Redis (every replica reports the same): a
     task that failed for good counts once, however many attempts it took; retried attempts that
     later succeeded never count as failures. */ -}}
{{- $failed := printf "max by (namespace) (shoal_tasks_finished_10m{%s,state=\"failed\"})" $sel -}}
{{- $succeeded := printf "max by (namespace) (shoal_tasks_finished_10m{%s,state=\"succeeded\"})" $sel -}}
groups:
  - name: shoal
    rules:
      - alert: ShoalQueueBacklogGrowing
        expr: |-
          ({{ $depth }} > {{ $rule.backlogThreshold }})
          and
          (sum by (namespace, queue) (max by (namespace, queue, priority) (deriv(shoal_queue_depth{{ printf "{%s}" $sel }}[15m]))) > 0)
        for: 15m
        labels:
          severity: warning
          {{- with $rule.additionalLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: Shoal queue {{`{{ $labels.queue }}`}} keeps growing
          description: >-
            Queue {{`{{ $labels.queue }}`}} in {{`{{ $labels.namespace }}`}} holds {{`{{ $value }}`}} ready
            tasks and has grown for 15 minutes: workers are at autoscaling.maxReplicas, failing to start,
            or too slow for the arrival rate.
      - alert: ShoalNoWorkers
        expr: |-
          (max by (namespace) (shoal_workers{{ printf "{%s}" $sel }}) == 0)
          and on (namespace)
          (sum by (namespace) (max by (namespace, queue, priority) (shoal_queue_depth{{ printf "{%s}" $sel }})) > 0)
        for: 10m
        labels:
          severity: critical
          {{- with $rule.additionalLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: Shoal has work queued but no live worker
          description: >-
            No worker has sent a heartbeat in {{`{{ $labels.namespace }}`}} for 10 minutes while tasks
            are queued. Check the worker Deployment (image, Redis reachability) and the scheduler's
            scaling decisions (GET /api/v1/scaling).
      - alert: ShoalTaskFailureRateHigh
        expr: |-
          (
            {{ $failed }}
            /
            (
              {{ $succeeded }}
              +
              {{ $failed }}
            )
            > {{ $rule.failureRatio }}
          )
          and on (namespace)
          ({{ $failed }} >= 5)
        for: 5m
        labels:
          severity: warning
          {{- with $rule.additionalLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: Many Shoal tasks fail for good
          description: >-
            {{`{{ $value | humanizePercentage }}`}} of the tasks that finished in
            {{`{{ $labels.namespace }}`}} over the last 10 minutes failed for good (their retries
            spent). See them with `shoal tasks --state failed` or the dashboard's Tasks page.
      - alert: ShoalLeaderMissing
        expr: |-
          (sum by (namespace) (shoal_leader{{ printf "{%s}" $sel }}) < 1)
          or
          absent(shoal_leader{{ printf "{%s}" $sel }})
        for: 5m
        labels:
          severity: critical
          {{- with $rule.additionalLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: No Shoal scheduler is leader
          description: >-
            No scheduler replica in {{`{{ $labels.namespace }}`}} has held the leader lease for 5 minutes
            (or none is scraped): expired leases are not reaped, delayed tasks are not promoted and the
            worker pool is not scaled. Check the scheduler pods and their Lease RBAC.
      - alert: ShoalSchedulerLoopFailing
        expr: |-
          max by (namespace, loop) (increase(shoal_scheduler_loop_failures_total{{ printf "{%s}" $sel }}[15m])) >= 3
        labels:
          severity: warning
          {{- with $rule.additionalLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: Shoal scheduler loop {{`{{ $labels.loop }}`}} keeps failing
          description: >-
            The {{`{{ $labels.loop }}`}} loop of a scheduler in {{`{{ $labels.namespace }}`}} failed
            {{`{{ $value }}`}} times in 15 minutes; it is restarted with backoff each time, and a leader
            whose loop fails 5 times in a row resigns. The scheduler's log has the tracebacks and
            /readyz the last error of each loop.
      - alert: ShoalWorkerReplicasNotReached
        expr: |-
          max by (namespace) (shoal_worker_replicas_desired{{ printf "{%s}" $sel }})
          >
          max by (namespace) (shoal_worker_replicas_actual{{ printf "{%s}" $sel }})
        for: 15m
        labels:
          severity: warning
          {{- with $rule.additionalLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: Shoal wants more workers than are running
          description: >-
            The autoscaler in {{`{{ $labels.namespace }}`}} has asked for more worker pods than run for
            15 minutes: pods are Pending (cluster capacity, quota) or crash on start.
{{- end -}}
