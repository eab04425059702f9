#!/usr/bin/env python3
"""Generates paystream's Grafana dashboards (deploy/grafana/dashboards/*.json).

Standard library only. `python3 deploy/grafana/generate.py` rewrites the JSON files;
`--check DIR` writes them to DIR instead (deploy/check/run compares the two, so the
committed JSON is always this script's output).

Every panel's PromQL uses only metrics that paystream exports (or the recording rules
of deploy/prometheus/rules.yaml) and three template variables: `$datasource`,
`$namespace` and `$pod` (multi-value, `.*` for All). Rates use `$__rate_interval`.
deploy/check/run queries every expression against a real Prometheus scraping
`paystream demo`; an expression allowed to return nothing on a healthy demo says so
with `may_be_empty` (the reason), which the check prints instead of failing.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEL = 'namespace="$namespace", pod=~"$pod"'
NS = 'namespace="$namespace"'
RATE = "[$__rate_interval]"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def target(expr, legend="", may_be_empty=None, instant=False):
    """One query. `may_be_empty`: why a healthy deployment may have no series for it."""
    t = {"expr": expr, "legendFormat": legend or "__auto", "range": not instant, "instant": instant}
    if may_be_empty:
        t["_may_be_empty"] = may_be_empty
    return t


def panel(kind, title, targets, unit="short", description="", width=12, height=8, **extra):
    return {"type": kind, "title": title, "description": description, "targets": targets,
            "unit": unit, "width": width, "height": height, **extra}


def timeseries(title, targets, unit="short", description="", **extra):
    return panel("timeseries", title, targets, unit, description, **extra)


def stat(title, targets, unit="short", description="", **extra):
    return panel("stat", title, targets, unit, description, width=6, height=4, **extra)


def table(title, targets, description="", **extra):
    for t in targets:
        t.update({"format": "table", "instant": True, "range": False})
    return panel("table", title, targets, "short", description, **extra)


def heatmap(title, targets, description="", **extra):
    for t in targets:
        t["format"] = "heatmap"
    return panel("heatmap", title, targets, "short", description, **extra)


def rate(metric, by=None, selector=SEL):
    grouping = f"sum by ({by}) " if by else "sum "
    return f"{grouping}(rate({metric}{{{selector}}}{RATE}))"


def quantile(q, metric, by="le", selector=SEL, window=RATE):
    return f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{{{selector}}}{window})))"


def overview():
    return "paystream-overview", "paystream / Pipeline overview", [
        stat("Input records/s", [target(rate("paystream_input_records_total"))], "ops",
             "Input records read and committed per second, all selected pods."),
        stat("Decisions/s", [target(rate("paystream_decisions_total"))], "ops"),
        stat("Dead letters/s", [target(rate("paystream_dead_letters_total"))], "ops",
             "Input records sent to the dead-letter topic per second (any reason)."),
        stat("Latency error budget left (30 d)",
             [target(f"min(paystream:event_to_decision_error_budget:remaining30d{{{NS}}})")],
             "percentunit",
             "Share of the 30-day error budget of the latency SLO (99.9 % of decisions within 1 s) "
             "not yet spent. Below 0: over budget.",
             thresholds=[("red", None), ("orange", 0.25), ("green", 0.5)]),
        timeseries("Input records/s by pod", [target(rate("paystream_input_records_total", "pod"), "{{pod}}")], "ops"),
        timeseries("Decisions by outcome", [target(rate("paystream_decisions_total", "outcome"), "{{outcome}}")],
                   "ops", "approve, review and decline decisions per second.", stack=True),
        timeseries("Dead letters by reason", [target(rate("paystream_dead_letters_total", "reason"), "{{reason}}")],
                   "ops", "Dead-lettered input records per second, by reason (see the runbook's "
                   "PaystreamDeadLetterRatioHigh for what each reason points at).", stack=True),
        timeseries("Event → decision latency", [
            target(quantile(0.5, "paystream_event_to_decision_seconds"), "p50"),
            target(quantile(0.99, "paystream_event_to_decision_seconds"), "p99"),
        ], "s", "From an input record's log timestamp to the commit of its decision. The SLO: 99.9 % within 1 s."),
        timeseries("Latency SLO burn rate", [
            target(f"paystream:event_to_decision_slow:ratio_rate5m{{{NS}}} / 0.001", "5m"),
            target(f"paystream:event_to_decision_slow:ratio_rate1h{{{NS}}} / 0.001", "1h"),
            target(f"paystream:event_to_decision_slow:ratio_rate6h{{{NS}}} / 0.001", "6h"),
            target(f"paystream:event_to_decision_slow:ratio_rate3d{{{NS}}} / 0.001", "3d"),
        ], "short", "Share of decisions over 1 s divided by the budget (0.1 %). 1 spends the budget in "
           "30 days; the alerts page at 14.4 (1h and 5m) and 6 (6h and 30m), and open a ticket at 1 (3d and 6h).",
           thresholds=[("green", None), ("orange", 6), ("red", 14.4)]),
        timeseries("Records per operator", [
            target(rate("paystream_operator_records_total", "operator, kind"), "{{operator}} {{kind}}"),
        ], "ops", "Records into, out of and in error at each operator (errors are declines and dead letters)."),
        table("Builds", [target(f"max by (pod, version, profile) (paystream_build_info{{{SEL}}})")],
              "The paystream version and build profile of each pod."),
        table("Firing paystream alerts", [
            target('sum by (alertname, severity, pod) (ALERTS{alertname=~"Paystream.*", alertstate="firing", '
                   'namespace=~"$namespace|"})',
                   may_be_empty="nothing fires on a healthy deployment"),
        ], "Alerts of deploy/prometheus/rules.yaml firing now (PaystreamTargetAbsent has no namespace)."),
    ]


def lag():
    return "paystream-lag", "paystream / Lag and partitions", [
        stat("Total lag (records)", [target(f"sum(paystream_lag_records{{{SEL}}})")], "short",
             "Committed input records not yet processed, all partitions."),
        stat("Partitions owned", [
            target(f"sum(paystream_assigned_partitions{{{NS}}})", "owned"),
            target(f"max(paystream_input_partitions{{{NS}}})", "of the input topic"),
        ], "short", "Input partitions owned by all pods, and the input topic's partition count: the two "
           "should be equal."),
        stat("Rebalances (range)", [target(f"sum(increase(paystream_rebalances_total{{{SEL}}}[$__range]))")],
             "short", "Group assignments taken up by the selected pods in the dashboard's time range (Kafka mode)."),
        stat("Commits/s", [target(rate("paystream_commits_total"))], "ops"),
        timeseries("Lag per partition", [
            target(f"sum by (pod, topic, partition) (paystream_lag_records{{{SEL}}})", "{{pod}} {{topic}}/{{partition}}"),
        ], "short", "Input records committed to the log and not yet processed, per partition."),
        timeseries("Partitions owned per pod", [
            target(f"sum by (pod) (paystream_assigned_partitions{{{SEL}}})", "{{pod}}"),
            target(f"sum(paystream_assigned_partitions{{{NS}}})", "all pods"),
            target(f"max(paystream_input_partitions{{{NS}}})", "partitions of the input topic"),
        ], "short", "PaystreamPartitionsUnassigned fires when 'all pods' stays below the input topic's "
           "partition count for 5 minutes."),
        timeseries("Rebalances", [
            target(f"sum by (pod) (increase(paystream_rebalances_total{{{SEL}}}{RATE}))", "{{pod}}"),
        ], "short", "Group assignments taken up per pod (each generation of the consumer group counts once per pod)."),
        timeseries("Commits/s by pod", [target(rate("paystream_commits_total", "pod"), "{{pod}}")], "ops"),
        timeseries("Terminal index behind", [
            target(f"time() - max by (pod) (paystream_terminal_read_through_timestamp_seconds{{{SEL}}})", "{{pod}}"),
        ], "s", "Wall clock minus the event time the terminal index has read through on its slowest partition. "
           "Grows with lag, and is large on replays of old events (the demo replays 2018)."),
    ]


def saturation():
    return "paystream-saturation", "paystream / Saturation", [
        timeseries("Worker busy share", [
            target(f"sum by (pod) (rate(paystream_batch_seconds_sum{{{SEL}}}{RATE})) / "
                   f"sum by (pod) (paystream_workers{{{SEL}}})", "{{pod}}"),
        ], "percentunit", "Worker-seconds spent processing and committing batches per second, divided by "
           "the pod's worker threads (paystream_workers): the share of time its workers are busy. Near 100 % "
           "the pod is at capacity.", thresholds=[("green", None), ("orange", 0.8), ("red", 0.95)]),
        timeseries("CPU", [
            target(f"sum by (pod) (rate(process_cpu_seconds_total{{{SEL}}}{RATE}))", "{{pod}}"),
        ], "short", "CPU cores used by the paystream process."),
        timeseries("Batch time", [
            target(quantile(0.5, "paystream_batch_seconds", "pod, le"), "{{pod}} p50"),
            target(quantile(0.99, "paystream_batch_seconds", "pod, le"), "{{pod}} p99"),
        ], "s", "Wall time to process and commit one batch."),
        timeseries("Commit time", [
            target(quantile(0.5, "paystream_commit_seconds", "pod, le"), "{{pod}} p50"),
            target(quantile(0.99, "paystream_commit_seconds", "pod, le"), "{{pod}} p99"),
        ], "s", "Wall time of one atomic commit (fdatasync on the embedded log, a transaction on Kafka). "
           "PaystreamCommitSlow fires above 1 s at p99."),
        timeseries("Terminal index lock wait", [
            target(f"sum by (pod) (rate(paystream_terminal_index_lock_wait_seconds_total{{{SEL}}}{RATE}))", "{{pod}}"),
        ], "s", "Seconds per second that threads waited for the terminal index's lock (summed over threads): "
           "contention, not work."),
        timeseries("Terminal waits and deferred batches", [
            target(rate("paystream_terminal_waits_total", "pod"), "{{pod}} waits"),
            target(rate("paystream_terminal_index_deferred_batches_total", "pod"), "{{pod}} deferred"),
        ], "ops", "Batches stopped early because a payment's terminal features were not complete, and batches "
           "kept for the next turn because the index's lock was taken."),
        timeseries("Resident memory", [
            target(f"sum by (pod) (process_resident_memory_bytes{{{SEL}}})", "{{pod}}"),
        ], "bytes", "The pods' memory limit equals their request; state (dedup set, terminal index, windows) "
           "lives here."),
        timeseries("Open file descriptors", [
            target(f"max by (pod) (process_open_fds{{{SEL}}} / process_max_fds{{{SEL}}})", "{{pod}}"),
        ], "percentunit", "Share of the file-descriptor limit in use."),
    ]


def state():
    return "paystream-state", "paystream / State", [
        timeseries("Snapshot time", [
            target(quantile(0.5, "paystream_snapshot_seconds", "pod, le"), "{{pod}} p50"),
            target(quantile(0.99, "paystream_snapshot_seconds", "pod, le"), "{{pod}} p99"),
        ], "s", "Wall time to write one snapshot (a partition's or the terminal index's) to disk: on each worker's snapshotter thread "
           "(a standby copy, off the decision path) and, at shutdown, on the worker for every partition owned."),
        timeseries("Snapshots/s", [target(rate("paystream_snapshot_seconds_count", "pod"), "{{pod}}")], "ops"),
        timeseries("Snapshot size", [
            target(quantile(0.99, "paystream_snapshot_bytes", "pod, le"), "{{pod}} p99"),
        ], "bytes", "One partition's snapshot (and the terminal index's). A full snapshot is taken once the "
           "changelog since the last holds --snapshot-changelog-min-percent of this size; the pods hold each "
           "partition's state twice (worker and standby copy)."),
        timeseries("Snapshotter lag", [
            target(f"max by (pod) (paystream_snapshot_lag_records{{{SEL}}})", "{{pod}}"),
        ], "short", "Changelog records committed but not yet in the standby copy, worst partition: a restart "
           "replays at least this much more. PaystreamSnapshotterBehind opens a ticket above 5,000 for 15 m."),
        timeseries("Worker time on snapshots", [
            target(rate("paystream_snapshot_wait_seconds_total", "pod"), "{{pod}}"),
        ], "s", "Seconds per second workers spent taking snapshots themselves: zero while they decide, only "
           "the snapshot at shutdown counts."),
        timeseries("Restore time since the pod started", [
            target(f"histogram_quantile(0.99, sum by (pod, le) (paystream_restore_seconds_bucket{{{SEL}}}))",
                   "{{pod}} p99"),
            target(f"sum by (pod) (paystream_restore_seconds_sum{{{SEL}}}) / "
                   f"sum by (pod) (paystream_restore_seconds_count{{{SEL}}})", "{{pod}} mean"),
        ], "s", "Wall time to restore one partition's state, over every restore of the running process: at "
           "its start and when a partition moves to it. Not a rate: the restores at start happen before the "
           "first scrape, where increase() cannot see them."),
        timeseries("Shutdown estimate", [
            target(f"{quantile(0.99, 'paystream_batch_seconds', 'pod, le')} + on (pod) "
                   f"{quantile(0.99, 'paystream_snapshot_seconds', 'pod, le')} * on (pod) "
                   f"max by (pod) (paystream_assigned_partitions{{{SEL}}})", "{{pod}}"),
        ], "s", "p99 batch + p99 snapshot × partitions owned: what a SIGTERM needs. The StatefulSets grant "
           "120 s (terminationGracePeriodSeconds); PaystreamShutdownBudgetLow opens a ticket above 60 s.",
           thresholds=[("green", None), ("orange", 60), ("red", 120)]),
        timeseries("Remembered payment ids", [
            target(f"sum by (pod) (paystream_remembered_payment_ids{{{SEL}}})", "{{pod}}"),
        ], "short", "The deduplication set: payment ids kept --payment-id-retention-days (about 100 bytes each)."),
        timeseries("Terminal index", [
            target(f"sum by (pod) (paystream_terminal_index_payments{{{SEL}}})", "{{pod}} payments"),
            target(f"sum by (pod) (paystream_terminal_index_pending_labels{{{SEL}}})", "{{pod}} pending labels"),
        ], "short", "Payments held by the terminal index, and labels waiting for their payment (with a model)."),
    ]


# A sink that is not configured writes nothing: its write-latency histogram exists with no
# observations, and its quantiles are NaN. The live check runs without either store.
NO_POSTGRES = "the check has no PostgreSQL (--postgres-url): no writes, so the quantile is NaN"
NO_SCYLLA = "the check has no ScyllaDB (--scylla-nodes): no writes, so the quantile is NaN"


def sinks():
    return "paystream-sinks", "paystream / Sinks and stores", [
        timeseries("PostgreSQL record store: records/s", [
            target(rate("paystream_sink_records_total", "pod"), "{{pod}}"),
        ], "ops", "Decisions and ledger transactions copied into PostgreSQL (0 without --postgres-url).", width=8),
        timeseries("PostgreSQL record store: errors/s", [
            target(rate("paystream_sink_errors_total", "pod"), "{{pod}}"),
        ], "ops", "Failed writes, retried with backoff.", width=8),
        timeseries("PostgreSQL record store: write latency", [
            target(quantile(0.5, "paystream_sink_write_seconds", "pod, le"), "{{pod}} p50", NO_POSTGRES),
            target(quantile(0.99, "paystream_sink_write_seconds", "pod, le"), "{{pod}} p99", NO_POSTGRES),
        ], "s", "Time to write one slice of outputs (with its topic positions) into PostgreSQL. No data "
           "without --postgres-url.", width=8),
        timeseries("ScyllaDB history store: records/s", [
            target(rate("paystream_history_sink_records_total", "pod"), "{{pod}}"),
        ], "ops", "Decisions copied into ScyllaDB (0 without --scylla-nodes).", width=8),
        timeseries("ScyllaDB history store: errors/s", [
            target(rate("paystream_history_sink_errors_total", "pod"), "{{pod}}"),
        ], "ops", "Failed writes, retried with backoff.", width=8),
        timeseries("ScyllaDB history store: write latency", [
            target(quantile(0.5, "paystream_history_sink_write_seconds", "pod, le"), "{{pod}} p50", NO_SCYLLA),
            target(quantile(0.99, "paystream_history_sink_write_seconds", "pod, le"), "{{pod}} p99", NO_SCYLLA),
        ], "s", "Time to write one slice of decisions into ScyllaDB. No data without --scylla-nodes.", width=8),
        timeseries("Velocity store (Redis): round trips/s and errors/s", [
            target(rate("paystream_velocity_store_seconds_count", "pod"), "{{pod}} round trips"),
            target(rate("paystream_velocity_store_errors_total", "pod"), "{{pod}} errors"),
        ], "ops", "One round trip per batch to the velocity feature store (Redis, or in process with "
           "--velocity memory); failed attempts are retried."),
        timeseries("Velocity store (Redis): latency", [
            target(quantile(0.5, "paystream_velocity_store_seconds", "pod, le"), "{{pod}} p50"),
            target(quantile(0.99, "paystream_velocity_store_seconds", "pod, le"), "{{pod}} p99"),
        ], "s", "Wall time of one batch's velocity counts and windows in the feature store."),
    ]


def model():
    return "paystream-model", "paystream / Model", [
        table("Model in use", [target(f"max by (pod, version) (paystream_model_info{{{SEL}}} == 1)")],
              "The model version each pod scores with (rules-v1 without a model file)."),
        timeseries("Model reloads since start", [
            target(f"sum by (pod, result) (paystream_model_reloads_total{{{SEL}}})", "{{pod}} {{result}}"),
        ], "short", "Reloads of the watched model file, by result (ok, error), since the pod started (both "
           "0 until the first). PaystreamModelReloadFailed opens a ticket when error grows."),
        heatmap("Fraud score distribution", [
            target(f"sum by (le) (increase(paystream_fraud_score_bucket{{{SEL}}}{RATE}))", "{{le}}"),
        ], "Scores of decided payments. A shifting distribution is model or data drift."),
        timeseries("Fraud score quantiles", [
            target(quantile(0.5, "paystream_fraud_score"), "p50"),
            target(quantile(0.9, "paystream_fraud_score"), "p90"),
            target(quantile(0.99, "paystream_fraud_score"), "p99"),
        ], "percentunit"),
        timeseries("Decision outcome share", [
            target(f"{rate('paystream_decisions_total', 'outcome')} / ignoring (outcome) group_left "
                   f"{rate('paystream_decisions_total')}", "{{outcome}}"),
        ], "percentunit", "Share of decisions per outcome: review and decline move with the model's thresholds "
           "and with drift."),
        timeseries("Labels indexed", [
            target(rate("paystream_labels_total", "result"), "{{result}}"),
        ], "ops", "Fraud labels (chargebacks, reports) indexed per second, by result (with a model)."),
        timeseries("Late inputs", [
            target(rate("paystream_late_feature_payments_total", "pod"), "{{pod}} late payments"),
            target(rate("paystream_terminal_late_inputs_total", "pod"), "{{pod}} late terminal inputs"),
            target(rate("paystream_terminal_index_only_records_total", "pod"), "{{pod}} index-only records"),
        ], "ops", "Payments whose features may be inexact because they came late, and records indexed "
           "after later payments were scored."),
    ]


def ledger():
    return "paystream-ledger", "paystream / Ledger and settlement", [
        stat("Ledger declines (range)", [
            target(f"sum(increase(paystream_ledger_declines_total{{{SEL}}}[$__range]))"),
        ], "short", "Events the ledger refused (insufficient funds, expired authorization, ...)."),
        stat("Holds expired (range)", [
            target(f"sum(increase(paystream_holds_expired_total{{{SEL}}}[$__range]))"),
        ], "short"),
        stat("Settlement windows closed (range)", [
            target(f'sum(increase(paystream_operator_records_total{{{SEL}, operator="settlement", kind="out"}}[$__range]))'),
        ], "short"),
        stat("Misplaced settlement entries (range)", [
            target(f"sum(increase(paystream_misplaced_settlement_entries_total{{{SEL}}}[$__range]))"),
        ], "short", "Should be 0: entries that reached a closed window do not reconcile.",
           thresholds=[("green", None), ("red", 1)]),
        timeseries("Ledger declines by reason", [
            target(rate("paystream_ledger_declines_total", "reason"), "{{reason}}"),
        ], "ops", "Events the ledger refused per second, by reason (insufficient_funds, authorization_expired, "
           "capture_exceeds_authorization, original_not_found, ...): the reason the declined decision carries.",
           stack=True),
        timeseries("Holds expired/s", [target(rate("paystream_holds_expired_total", "pod"), "{{pod}}")], "ops",
                   "Authorizations neither captured nor voided before --authorization-timeout-hours."),
        timeseries("Transfer legs applied/s", [
            target(rate("paystream_transfer_legs_applied_total", "kind"), "{{kind}}"),
        ], "ops", "Legs of payments to other accounts: credit (into the payee's wallet) or return (refused)."),
        timeseries("Settlement", [
            target(rate("paystream_operator_records_total", "pod",
                        SEL + ', operator="settlement", kind="out"'), "{{pod}} windows closed"),
            target(rate("paystream_operator_records_total", "pod",
                        SEL + ', operator="settlement", kind="in"'), "{{pod}} entries"),
            target(rate("paystream_late_settlement_payments_total", "pod"), "{{pod}} late payments"),
        ], "ops", "Settlement entries in, merchant windows closed (each is a settlement and a payout), and "
           "payments moved to a later window because theirs had closed."),
        timeseries("Ledger operator", [
            target(rate("paystream_operator_records_total", "kind", SEL + ', operator="ledger"'), "{{kind}}"),
        ], "ops", "Events into the ledger, posted (out) and refused (error)."),
        timeseries("Client retries/s", [target(rate("paystream_duplicate_retries_total", "pod"), "{{pod}}")], "ops",
                   "Payments seen again with the same content: counted, not processed twice."),
    ]


NOT_5XX = SEL + ', status!~"5.."'


def http():
    requests = "paystream_http_requests_total"
    return "paystream-http", "paystream / HTTP services", [
        stat("Requests/s", [target(rate(requests))], "reqps"),
        stat("5xx share", [target(f"1 - {rate(requests, selector=NOT_5XX)} / {rate(requests)}")],
             "percentunit", "Share of requests answered with a 5xx (the availability SLO allows 0.1 %).",
             thresholds=[("green", None), ("orange", 0.001), ("red", 0.0144)]),
        stat("p99 answer time", [target(quantile(0.99, "paystream_http_request_duration_seconds"))], "s"),
        stat("Auth failures/s", [target(rate("paystream_http_auth_failures_total"))], "ops",
             "Credentials refused (any reason)."),
        timeseries("Requests by route", [target(rate(requests, "route, method"), "{{method}} {{route}}")], "reqps",
                   "Requests per second by route template (`unmatched`: 404s)."),
        timeseries("Requests by status", [target(rate(requests, "status"), "{{status}}")], "reqps", stack=True),
        timeseries("5xx share by route", [
            target(f'1 - {rate(requests, "route", NOT_5XX)} / {rate(requests, "route")}',
                   "{{route}}"),
        ], "percentunit"),
        timeseries("Answer time by route", [
            target(quantile(0.5, "paystream_http_request_duration_seconds", "route, le"), "{{route}} p50"),
            target(quantile(0.99, "paystream_http_request_duration_seconds", "route, le"), "{{route}} p99"),
        ], "s", "PaystreamHttpLatencyHigh opens a ticket when a route's p99 stays above 1 s."),
        timeseries("HTTP 5xx burn rate", [
            target(f"paystream:http_errors:ratio_rate5m{{{NS}}} / 0.001", "5m"),
            target(f"paystream:http_errors:ratio_rate1h{{{NS}}} / 0.001", "1h"),
            target(f"paystream:http_errors:ratio_rate6h{{{NS}}} / 0.001", "6h"),
        ], "short", "5xx share divided by the budget (0.1 %); the alerts page at 14.4 (1h and 5m) and 6 "
           "(6h and 30m).", thresholds=[("green", None), ("orange", 6), ("red", 14.4)]),
        timeseries("Auth failures by reason", [
            target(rate("paystream_http_auth_failures_total", "reason"), "{{reason}}"),
        ], "ops", "Refused credentials by reason: a rise in one reason is an attack or a broken client."),
        timeseries("Payments API by status", [
            target(rate(requests, "method, route, status", SEL + ', route=~"/v1/(payments|wallet|merchant)(/.*)?"'),
                   "{{method}} {{route}} {{status}}"),
        ], "reqps", "Payments and top-ups (POST) and their reads (GET). 201: decided (the body says approved, "
           "in_review, declined or rejected); 202: no decision within the wait, poll the Location; 409 and "
           "422: idempotency-key conflicts; 503: refused, e.g. while the rate limiter is unavailable."),
        timeseries("Rate-limited requests by policy", [
            target(rate("paystream_http_rate_limited_total", "policy"), "{{policy}}"),
        ], "reqps", "Requests refused with 429 by the gateway's rate limiter (per client address and per "
           "credential): policy auth (sign-up, login, refresh) or default. No data until the first refusal."),
        timeseries("Rate limiter unavailable", [
            target(rate("paystream_http_rate_limiter_unavailable_total", "outcome"), "{{outcome}}"),
        ], "ops", "Rate-limit checks made while Redis (--redis-url) did not answer within 100 ms. fail_closed: "
           "a payment or top-up refused with 503 (PaystreamRateLimiterUnavailable pages); local_fallback: "
           "another route limited in process, per pod. No data until the first; none without --redis-url.",
           thresholds=[("green", None), ("red", 0.001)]),
    ]


NO_STATEMENTS = "no SQL statement has run yet (the live check serves no SQL client)"
NO_VIEWS = "no continuous view runs (--views)"
NO_CLOSED_WINDOW = "no view has closed a window yet (NaN until then)"
OK_STATEMENTS = SEL + ', outcome="ok"'


def sql():
    statements = "paystream_sql_statements_total"
    return "paystream-sql", "paystream / SQL and continuous views", [
        stat("Statements/s", [target(rate(statements), may_be_empty=NO_STATEMENTS)], "ops"),
        stat("Failed statements share", [
            target(f"1 - {rate(statements, selector=OK_STATEMENTS)} / {rate(statements)}", may_be_empty=NO_STATEMENTS),
        ], "percentunit", "Statements that ended other than ok: timeout, cancelled, row cap, error.",
           thresholds=[("green", None), ("orange", 0.05), ("red", 0.25)]),
        stat("Open connections", [target(f"sum(paystream_sql_connections{{{SEL}}})")], "short",
             "Connections to the SQL endpoints (at most 64 each; more are closed at accept)."),
        stat("Scan cache", [target(f"sum(paystream_sql_scan_cache_bytes{{{SEL}}})")], "bytes",
             "Decoded columns kept between statements (--scan-cache-bytes-max per process)."),
        timeseries("Statements by outcome", [
            target(rate(statements, "outcome"), "{{outcome}}", NO_STATEMENTS),
        ], "ops", "ok; timeout (the statement timeout, 57014); cancelled (a cancel request); row_cap (54000); "
           "error (anything else: a bad statement, the memory cap).", stack=True),
        timeseries("Statement time", [
            target(quantile(0.5, "paystream_sql_statement_seconds"), "p50", NO_STATEMENTS),
            target(quantile(0.99, "paystream_sql_statement_seconds"), "p99", NO_STATEMENTS),
        ], "s", "From planning to the last row sent."),
        timeseries("Rows scanned by source", [
            target(rate("paystream_sql_scan_rows_total", "source"), "{{source}}", NO_STATEMENTS),
        ], "ops", "Rows table scans produced: from the scan cache, or decoded from the log (a first read, or "
           "records committed since)."),
        timeseries("Views: windows emitted/s", [
            target(rate("paystream_view_windows_emitted_total", "view"), "{{view}}", NO_VIEWS),
        ], "ops", "Closed windows a view emitted to its topic view.<name>, each once.", width=8),
        timeseries("Views: late rows/s", [
            target(rate("paystream_view_late_rows_total", "view"), "{{view}}", NO_VIEWS),
        ], "ops", "Rows that came after their window closed, routed to <view>_late: raise the view's "
           "lateness (under a new name) if this is steady.", width=8),
        timeseries("Views: close line behind now", [
            target(f"time() - max by (view) (paystream_view_closed_through_timestamp_seconds{{{SEL}}})",
                   "{{view}}", NO_CLOSED_WINDOW),
        ], "s", "Wall time less the event time up to which a view's windows are closed: steady when the "
           "input is live; growing when the view or its input stalls (a replay of old data shows its age).",
           width=8),
        timeseries("Views: rows in open windows", [
            target(f"sum by (view) (paystream_view_open_rows{{{SEL}}})", "{{view}}", NO_VIEWS),
        ], "short", "Rows held for windows not yet closed; a view stops past 5,000,000.", width=12),
        timeseries("Views: running", [
            target(f"max by (view) (paystream_view_running{{{SEL}}})", "{{view}}", NO_VIEWS),
        ], "short", "1 while a view runs; 0 once it stopped on an error (PaystreamViewStopped opens a ticket).",
           width=12),
    ]


DASHBOARDS = [overview, lag, saturation, state, sinks, model, ledger, http, sql]
# The pod variable lists the pods that export this metric (the API pods export only the
# HTTP metrics, not paystream_build_info).
POD_SOURCE = {"paystream-http": "paystream_http_requests_total"}


def variables(pod_source="paystream_build_info"):
    query = lambda name, q, **more: {
        "name": name, "label": name, "type": "query", "datasource": DATASOURCE,
        "query": {"query": q, "refId": f"{name}-query"}, "definition": q,
        "refresh": 2, "sort": 1, "current": {}, "options": [], **more,
    }
    return [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "options": [], "refresh": 1, "regex": ""},
        query("namespace", "label_values(paystream_build_info, namespace)"),
        query("pod", f'label_values({pod_source}{{namespace="$namespace"}}, pod)',
              multi=True, includeAll=True, allValue=".*"),
    ]


def render(spec):
    """The Grafana JSON model of one dashboard spec."""
    uid, title, panels = spec
    out, x, y, row_height, ids = [], 0, 0, 0, iter(range(1, 1000))
    for p in panels:
        if x + p["width"] > 24:
            x, y, row_height = 0, y + row_height, 0
        targets = []
        for ref, t in zip("ABCDEFGHIJ", p["targets"]):
            t = {key: value for key, value in t.items() if not key.startswith("_")}
            targets.append({"refId": ref, "datasource": DATASOURCE, "editorMode": "code", **t})
        defaults = {"unit": p["unit"]}
        if "thresholds" in p:
            defaults["thresholds"] = {"mode": "absolute", "steps": [
                {"color": color, "value": value} for color, value in p["thresholds"]]}
        if p["type"] == "timeseries":
            defaults["custom"] = {"fillOpacity": 10, "showPoints": "never",
                                  "stacking": {"mode": "normal" if p.get("stack") else "none", "group": "A"}}
        options = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
                   "tooltip": {"mode": "multi", "sort": "desc"}} if p["type"] == "timeseries" else {}
        if p["type"] == "heatmap":
            options = {"calculate": False, "yAxis": {"unit": "short"}, "color": {"scheme": "Oranges"}}
        out.append({
            "id": next(ids), "type": p["type"], "title": p["title"], "description": p["description"],
            "datasource": DATASOURCE, "gridPos": {"h": p["height"], "w": p["width"], "x": x, "y": y},
            "targets": targets, "fieldConfig": {"defaults": defaults, "overrides": []}, "options": options,
        })
        x += p["width"]
        row_height = max(row_height, p["height"])
    links = [{"title": "paystream", "type": "dashboards", "tags": ["paystream"], "asDropdown": True,
              "includeVars": True, "keepTime": True}]
    return {
        "uid": uid, "title": title, "tags": ["paystream"], "editable": False, "graphTooltip": 1,
        "schemaVersion": 39, "version": 1, "refresh": "30s", "timezone": "utc",
        "time": {"from": "now-6h", "to": "now"}, "links": links,
        "templating": {"list": variables(POD_SOURCE.get(uid, "paystream_build_info"))}, "annotations": {"list": []}, "panels": out,
    }


def expressions():
    """(dashboard uid, panel title, expr, may_be_empty reason or None) of every panel query."""
    for build in DASHBOARDS:
        uid, _, panels = build()
        for p in panels:
            for t in p["targets"]:
                yield uid, p["title"], t["expr"], t.get("_may_be_empty")


def main(argv):
    out_dir = Path(argv[argv.index("--check") + 1]) if "--check" in argv else HERE / "dashboards"
    out_dir.mkdir(parents=True, exist_ok=True)
    for build in DASHBOARDS:
        spec = build()
        path = out_dir / f"{spec[0]}.json"
        path.write_text(json.dumps(render(spec), indent=2, ensure_ascii=False) + "\n")
    if "--expressions" in argv:
        json.dump([{"dashboard": d, "panel": p, "expr": e, "may_be_empty": m} for d, p, e, m in expressions()],
                  sys.stdout, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
