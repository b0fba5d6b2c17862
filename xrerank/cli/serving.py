"""Using a deployment: status, rerank and bench."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from xrerank.cli.base import (
    caller_levels,
    checked,
    cli,
    json_option,
    progress,
    valid_name,
    valid_uid,
    workload_options,
)
from xrerank.cli.render import (
    bench_text,
    emit_json,
    results_text,
    status_text,
    sweep_text,
)
from xrerank.errors import BadInput, ExitCode


@cli.command()
@click.option("--model-uid", callback=checked(valid_uid), help="Only this model must be healthy.")
@click.option("--model-name", callback=checked(valid_name), help="This custom model must be registered.")
@json_option
@click.pass_obj
def status(context, model_uid, model_name, as_json):
    """Server, workers, registrations, replicas; exit 0 only when all asked about is healthy.

    \b
        xrerank status --model-uid bge-reranker --json
    """
    from xrerank.checks.status import gather_status

    session = context.session()
    report = gather_status(session.server, session.home, model_uid, model_name)
    emit_json(report) if as_json else click.echo(status_text(report))
    if not report["healthy"]:
        sys.exit(ExitCode.FAILED)


@cli.command()
@click.argument("query")
@click.argument("documents", nargs=-1)
@click.option("--docs-file", type=click.File("rb"), help="One document per line; - reads stdin.")
@click.option("--model-uid", callback=checked(valid_uid), help="Default: the only rerank model running.")
@click.option("--top-n", type=click.IntRange(min=0))
@json_option
@click.pass_obj
def rerank(context, query, documents, docs_file, model_uid, top_n, as_json):
    """Rank documents by relevance to QUERY, best first.

    \b
        xrerank rerank "What is AI?" "AI is the study of intelligent machines." "Apples are rich in fibre."
    """
    from xrerank.xinference.serving import open_client, rerank_target

    documents = list(documents) + (_read_documents(docs_file) if docs_file else [])
    if not documents:
        raise BadInput("no documents to rank: give them after the query, or --docs-file FILE (- for stdin)")
    session = context.session()
    uid, demo = rerank_target(session.server, model_uid)
    if demo:
        from xrerank.weights.generated import DEMO_WARNING

        progress(f"note: {DEMO_WARNING}")
    with open_client(session, uid) as client:
        results = client.rerank(query, documents, top_n=top_n)
    if as_json:
        emit_json(
            {
                "model_uid": uid,
                "query": query,
                "demo": demo,
                "results": [{"index": r.index, "score": r.score, "document": r.document} for r in results],
            }
        )
    else:
        click.echo(results_text(results))


def _read_documents(stream) -> list[str]:
    try:
        text = stream.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{stream.name} is not UTF-8 text (byte {exc.start}); convert it first") from None
    return [line for line in text.splitlines() if line.strip()]


@cli.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--model-uid", callback=checked(valid_uid), help="Default: FILE's model, else the only rerank model running."
)
@workload_options
@click.option("--duration", type=click.FloatRange(0.5, 3600), default=10, show_default=True, help="Seconds.")
@click.option("--max-requests", type=click.IntRange(min=1), default=100_000, show_default=True)
@click.option("--queries", type=click.IntRange(min=0), default=0, help="Draw queries from this many (0: all new).")
@click.option("--cache-size", type=click.IntRange(min=0), default=0, help="Client score cache entries (0: off).")
@click.option("--keep-alive/--no-keep-alive", default=None, help="Reuse connections (default: over https only).")
@click.option(
    "--in-process", is_flag=True,
    help="Also score the same documents in process here (on the GPU, in the replicas' dtype, when there is one).",
)  # fmt: skip
@click.option(
    "--sweep", metavar="N,N,...", callback=checked(caller_levels),
    help="Run once per number of callers, e.g. 1,4,16,48 (in place of --concurrency); print a table.",
)  # fmt: skip
@click.option(
    "--chart", type=click.Path(dir_okay=False, path_type=Path),
    help="Draw pairs/s and p50/p95 against callers into this .png or .svg (needs xrerank[charts]).",
)  # fmt: skip
@json_option
@click.pass_obj
def bench(context, file, model_uid, concurrency, docs, doc_tokens, warmup, duration, max_requests, queries,
          cache_size, keep_alive, in_process, sweep, chart, as_json):  # fmt: skip
    """Load a deployed reranker for a bounded time; report latency p50/p95/p99 and throughput.

    Requests go out with the API key (never the admin login) and are not retried: every failure
    is counted, and any failure makes the exit code 1.

    \b
        xrerank bench configs/demo.yaml --concurrency 16 --duration 10
        xrerank bench configs/demo.yaml --sweep 1,4,16,48 --chart bench.png
    """
    from xrerank.perf.bench import Workload, bench_model

    if chart is not None:
        from xrerank.perf.chart import check_chart_path

        chart = check_chart_path(chart)  # refused before any load is sent
    if file is not None:
        target, session = context.target(file)
        model_uid = model_uid or target.settings.uid
    else:
        session = context.session()
    workload = Workload(docs, doc_tokens, concurrency, duration, max_requests, queries, warmup=warmup)
    report = bench_model(session, model_uid, workload, cache_size, keep_alive, _bench_progress(duration), in_process,
                         sweep or ())  # fmt: skip
    document = report.as_dict()
    if sys.stderr.isatty():
        click.echo(err=True)
    if chart is not None:
        from xrerank.perf.chart import sweep_chart

        title = f"{report.model_uid}: {docs} documents of {doc_tokens} words per request"
        document["chart"] = str(sweep_chart(report.sweep or [report.result], chart, title))
    emit_json(document) if as_json else click.echo(sweep_text(document) if sweep else bench_text(document))
    if report.errors:
        sys.exit(ExitCode.FAILED)


def _bench_progress(duration: float):
    """A progress line on stderr: rewritten in place on a terminal, every 5 s otherwise."""
    on_terminal = sys.stderr.isatty()

    def show(result) -> None:
        if not on_terminal and int(result.elapsed) % 5:
            return
        line = (
            f"bench {min(result.elapsed, duration):5.1f}/{duration:g} s  {result.answered} answered  "
            f"{sum(result.errors.values())} errors  {result.requests_per_second:.1f} req/s"
        )
        click.echo(f"\r{line}" if on_terminal else line, err=True, nl=not on_terminal)

    return show


# --- the declarative commands ------------------------------------------------------------------
