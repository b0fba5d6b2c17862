"""Output: JSON for machines, short aligned text for people. Everything here goes to stdout."""

from __future__ import annotations

import json
from collections.abc import Iterable

import click


def emit_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def plan_text(steps: Iterable) -> str:
    return "\n".join(f"  {step.name:<9} {step.state:<11} {step.detail}" for step in steps)


def family_text(family: dict) -> str:
    lines = [f"family: {family['title']}, scored by {family['route']}"]
    if family["runs_code"]:
        lines.append(f"runs the repository's own code on the server: {', '.join(family['runs_code'])}")
    return "\n".join(lines)


def results_text(results: Iterable) -> str:
    lines = [f"{'rank':>4}  {'score':>8}  {'index':>5}  document"]
    for rank, result in enumerate(results, 1):
        document = result.document.replace("\n", " ")
        lines.append(f"{rank:>4}  {result.score:8.4f}  {result.index:>5}  {_clip(document, 80)}")
    return "\n".join(lines)


def report_text(report: dict) -> str:
    lines = [f"{report['suite']} suite: {'PASSED' if report['passed'] else 'FAILED'}"]
    for check in report["checks"]:
        lines.append(f"  {'ok  ' if check['passed'] else 'FAIL'}  {check['name']:<38} {check['detail']}")
    return "\n".join(lines)


def findings_text(findings: Iterable) -> str:
    lines = []
    for finding in findings:
        lines.append(f"  {finding.level:<4}  {finding.area:<10} {finding.check:<24} {finding.evidence}")
        if finding.fix:
            lines.append(f"  {'':<4}  {'':<10} {'':<24} fix: {finding.fix}")
    return "\n".join(lines)


def status_text(status: dict) -> str:
    auth = "on" if status["auth"] else "off"
    version = status["version"] or "(version and workers need a user login)"
    lines = [f"server    {status['endpoint']}  Xinference {version}  auth {auth}"]
    for worker in status["workers"]:
        memory = f"{(worker['mem_available'] or 0) / 2**30:.1f}/{(worker['mem_total'] or 0) / 2**30:.1f} GiB free"
        replicas = ", ".join(worker["replicas"]) or "no replicas"
        per_gpu = ", ".join(f"GPU {gpu}: {count}" for gpu, count in sorted(worker["replicas_per_gpu"].items()))
        lines.append(
            f"worker    {worker['address']}  {worker['cpu_count']} cores  {memory}  "
            f"{worker['gpu_count']} GPUs  {replicas}" + (f"  (replicas per GPU: {per_gpu})" if per_gpu else "")
        )
    totals = status["totals"]
    if totals["workers"] > 1:
        lines.append(
            f"cluster   {totals['workers']} workers  {totals['cpu_count']} cores  "
            f"{totals['mem_available'] / 2**30:.1f} GiB free  {totals['gpu_count']} GPUs  "
            f"{totals['ready']}/{totals['replicas']} replicas READY"
        )
    registered = status["registrations"]
    lines.append(f"registered  {', '.join(registered or []) or '(no custom rerank models)'}")
    for model in status["models"]:
        lines.append(
            f"model     {model['model_uid']} ({model['model_name']})  {model['status']}  "
            f"{model['ready']}/{model['replica']} replicas READY"
        )
        for replica in model["replicas"]:
            error = f"  {replica['error']}" if replica["error"] else ""
            gpus = f" GPU {','.join(map(str, replica['gpu_idx']))}" if replica["gpu_idx"] else ""
            settings = replica.get("settings")
            launched = f"  launched with {_settings(settings)}" if settings else ""
            lines.append(
                f"            #{replica['id']} {replica['status']:<10} on {replica['worker']}{gpus}{error}{launched}"
            )
    lines.append("healthy" if status["healthy"] else "UNHEALTHY: " + "; ".join(status["problems"]))
    return "\n".join(lines)


def _settings(tuning: dict) -> str:
    shown = {key: value for key, value in tuning.items() if value not in (None, {}, False)}
    return ", ".join(f"{key} {value}" for key, value in shown.items()) or "the defaults"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def bench_text(document: dict) -> str:
    workload, latency = document["workload"], document["latency_ms"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    lines = [
        f"{document['model_uid']} on {document['endpoint']}: {workload['concurrency']} callers, "
        f"{workload['docs']} documents of {workload['doc_tokens']} words, {document['elapsed_s']:.1f} s "
        f"after {workload['warmup']:g} s of warm-up",
        f"  answered    {document['answered']} of {document['requests']} ({document['errors']} errors)",
        f"  latency     p50 {ms(latency['p50'])}   p95 {ms(latency['p95'])}   p99 {ms(latency['p99'])}",
        f"  throughput  {document['requests_per_s']:.1f} requests/s, {document['pairs_per_s']:.0f} pairs/s",
    ]
    if "cache" in document:
        cache = document["cache"]
        lines.append(
            f"  cache       {cache['hit_rate']:.1%} of pairs hit, {cache['answered_from_cache']} requests answered "
            f"from it (p50 {ms(cache['hit_p50_ms'])}), {cache['entries']}/{cache['max_entries']} entries"
        )
    if "in_process" in document:
        limit = document["in_process"]
        rates = ", ".join(f"batch {k}: {v:.0f}" for k, v in limit["pairs_per_s"].items())
        lines.append(
            f"  in process  {limit['device']}, {limit['dtype']}: {rates} pairs/s; "
            f"served = {limit['served_vs_best']:.2f}x the best"
        )
    lines += [f"  error       {count} x {reason}" for reason, count in document["error_reasons"].items()]
    return "\n".join(lines)


def sweep_text(document: dict) -> str:
    """bench --sweep: one row per number of callers."""
    workload = document["workload"]
    lines = [
        f"{document['model_uid']} on {document['endpoint']}: {workload['docs']} documents of "
        f"{workload['doc_tokens']} words, {workload['duration']:g} s per level after {workload['warmup']:g} s "
        "of warm-up",
        f"  {'callers':>7}{'req/s':>9}{'pairs/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}",
    ]
    for level in document["sweep"]:
        latency = level["latency_ms"]
        cells = "".join(f"{'-' if latency[q] is None else format(latency[q], '.1f'):>9}" for q in ("p50", "p95", "p99"))
        rates = f"{level['requests_per_s']:>9.1f}{level['pairs_per_s']:>9.0f}"
        lines.append(f"  {level['workload']['concurrency']:>7}{rates}{cells}{level['errors']:>8}")
        lines += [f"          error {count} x {reason}" for reason, count in level["error_reasons"].items()]
    if document.get("chart"):
        lines.append(f"  chart: {document['chart']}")
    return "\n".join(lines)


def tune_text(tuning) -> str:
    header = ("replicas", "threads", "batch", "interval", "per GPU", "docs/req", "pairs/s", "req/s", "p50 ms",
              "p95 ms", "errors")  # fmt: skip
    compare = tuning.in_process is not None
    lines = ["  " + "".join(f"{name:>9}" for name in header) + ("  vs in-process" if compare else "")]
    for trial in tuning.trials:
        mark = "*" if trial is tuning.best else " "
        setting = "".join(f"{column:>9}" for column in trial.setting.columns())
        if trial.result is None:
            lines.append(f"{mark} {setting}   failed: {_clip(trial.failure or '', 60)}")
            continue
        result = trial.result.as_dict()
        latency = result["latency_ms"]
        ratio = f"{trial.vs_in_process:15.2f}x" if trial.vs_in_process is not None else ""
        lines.append(
            f"{mark} {setting}{result['pairs_per_s']:>9.0f}{result['requests_per_s']:>9.1f}"
            f"{latency['p50'] or 0:>9.1f}{latency['p95'] or 0:>9.1f}{result['errors']:>9}{ratio}"
        )
    workload = tuning.workload
    best = "the lowest p50" if tuning.objective == "latency" else "the most pairs/s"
    lines.append(
        f"  ({workload.concurrency} callers, {workload.docs} documents of {workload.doc_tokens} words, "
        f"{workload.warmup:g} s warm-up then {workload.duration:g} s each; - : the default; * : {best})"
    )
    if compare:
        limit = tuning.in_process
        lines.append(f"  in process on {limit.device}, {limit.dtype}: {limit.rates()} pairs/s")
    if tuning.best is not None and tuning.best.setting.chunk_size:
        lines.append(f"  clients: send at most {tuning.best.setting.chunk_size} documents per request "
                     f"(xrerank.client.Reranker(chunk_size={tuning.best.setting.chunk_size}))")  # fmt: skip
    if tuning.skipped:
        lines.append(f"  not tried within the budget: {'; '.join(s.label() for s in tuning.skipped)}")
    return "\n".join(lines)
