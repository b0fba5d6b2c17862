"""The xrerank command line. Each command parses its options, makes one library call, renders.

Library modules are imported inside the commands so that `xrerank --help` stays instant.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from .defaults import API_KEY_ENV, CONNECT_FORMATS, DEFAULT_ENDPOINT, HUBS, MAX_REPLICAS
from .errors import BadInput, ExitCode, XrerankError
from .render import (
    bench_text,
    emit_json,
    findings_text,
    plan_text,
    report_text,
    results_text,
    status_text,
    tune_text,
)


class Context:
    """What the group's options give every command."""

    def __init__(self, options, debug: bool) -> None:
        self.options = options
        self.debug = debug

    def session(self, deployment: object = None):
        from .session import open_session

        return open_session(self.options, deployment, warn=progress)

    def target(self, file: Path):
        from .files import xrerank_home
        from .target import load_target

        target = load_target(file, xrerank_home())
        return target, self.session(target.deployment)


class ErrorBoundary(click.Group):
    """Turns library errors into one line on stderr and the documented exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except XrerankError as exc:
            if isinstance(ctx.obj, Context) and ctx.obj.debug:
                import traceback

                traceback.print_exc()  # and still the documented exit code: scripts read it
            click.echo(f"error: {_one_line(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: run the same command again to resume", err=True)
            ctx.exit(ExitCode.INTERRUPTED)


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(no reason given)"


def progress(message: str) -> None:
    click.echo(message, err=True)


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")


def _checked(check):
    """A click callback running one of names.py's checks (None passes: the option was not given)."""

    def callback(context: click.Context, parameter: click.Parameter, value):
        try:
            return value if value is None else check(value)
        except BadInput as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


def _uid(value: str) -> str:
    from .names import validate_model_uid

    return validate_model_uid(value)


def _name(value: str) -> str:
    from .names import validate_model_name

    return validate_model_name(value, builtin_ok=True)  # status, launch and unregister may name a built-in


def _uids(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_uid(value) for value in values)


def wait_option(default: float, what: str):
    """--wait SECONDS, a deadline; --timeout is its hidden alias for one release (it meant HTTP on the group)."""

    def decorate(function):
        function = click.option(
            "--timeout", "legacy_wait", type=click.FloatRange(min=1), hidden=True, help="Old name of --wait."
        )(function)
        return click.option(
            "--wait",
            "wait_for",
            type=click.FloatRange(min=1),
            default=default,
            show_default=True,
            help=f"Seconds to wait {what} before giving up (exit 4).",
        )(function)

    return decorate


def _deadline(wait_for: float, legacy_wait: float | None) -> float:
    import math

    if legacy_wait is not None:
        progress("note: --timeout on this command is now --wait; --timeout will be removed in the next release")
        wait_for = legacy_wait
    if not math.isfinite(wait_for):
        raise BadInput(f"--wait {wait_for}: give a number of seconds")
    return time.monotonic() + wait_for


@click.group(cls=ErrorBoundary, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xrerank")
@click.option(
    "--endpoint",
    envvar=["XRERANK_ENDPOINT", "XINFERENCE_ENDPOINT"],
    show_envvar=True,
    help=f"Xinference REST API (default {DEFAULT_ENDPOINT}, or the deployment file's).",
)
@click.option("--api-key", envvar=API_KEY_ENV, show_envvar=True, help="API key (query and rerank only).")
@click.option("--username", envvar="XRERANK_USERNAME", show_envvar=True, help="User for admin operations.")
@click.option("--password", envvar="XRERANK_PASSWORD", show_envvar=True, help="That user's password.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    envvar="XRERANK_TIMEOUT",
    show_envvar=True,
    show_default=True,
    help="Seconds to wait for each HTTP answer.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx, endpoint, api_key, username, password, timeout, debug):
    """Deploy cross-encoder rerankers on Xinference and prove they answer correctly.

    \b
    Start here (no model hub needed):
        xrerank up --demo

    Exit codes: 0 ok or already so, 1 failed, 2 bad input, 3 server unreachable or
    unauthorized, 4 timed out, 130 interrupted.
    """
    from .session import Options

    ctx.obj = Context(Options(endpoint, api_key, username, password, timeout), debug)


# --- weights and specs ------------------------------------------------------------------------


@cli.command()
@click.argument("model_id")
@click.option("--local-dir", type=click.Path(path_type=Path), required=True, help="A new or empty directory.")
@click.option("--hub", type=click.Choice(HUBS), default=HUBS[0], show_default=True)
@click.option("--revision", help="Branch, tag or commit (default: master on ModelScope, main on Hugging Face).")
@click.option("--hub-endpoint", help="Hub URL (default: MODELSCOPE_ENDPOINT or HF_ENDPOINT, then the public hub).")
@json_option
def download(model_id, local_dir, hub, revision, hub_endpoint, as_json):
    """Download weights from a model hub, check they are a reranker, write a manifest.

    A complete directory is left as it is; an interrupted download resumes.

    \b
        xrerank download AI-ModelScope/bge-reranker-v2-m3 --local-dir ./bge-reranker-v2-m3
        xrerank download BAAI/bge-reranker-v2-m3 --hub huggingface --local-dir ./bge-reranker-v2-m3
    """
    from .weights import source_for

    result = source_for(hub).download(model_id, local_dir, revision, hub_endpoint)
    manifest = result.manifest
    if as_json:
        emit_json({"directory": str(result.directory), "changed": result.changed, **manifest})
    else:
        verb = "downloaded" if result.changed else "already complete:"
        click.echo(
            f"{verb} {model_id}@{manifest['revision']} from {hub} in {result.directory} "
            f"({len(manifest['files'])} files)"
        )


@cli.command("make-demo-model")
@click.argument("directory", type=click.Path(path_type=Path))
@json_option
def make_demo_model(directory, as_json):
    """Write a tiny random-weight model with bge-reranker-v2-m3's architecture.

    For smoke-testing a deployment offline: its scores are meaningless.

    \b
        xrerank make-demo-model ./demo-reranker
    """
    from .demo import DEMO_WARNING
    from .demo import make_demo_model as make

    path = make(directory)
    progress(f"note: {DEMO_WARNING}")
    _done({"directory": str(path), "demo": True}, as_json, str(path))


def _spec_options(function):
    function = click.option("--max-tokens", type=click.IntRange(min=1), help="Default: the model's limit.")(function)
    function = click.option(
        "--language", "languages", multiple=True, default=("en", "zh", "multilingual"), show_default=True
    )(function)
    function = click.option("--model-name", help="Name to register; not a built-in name.")(function)
    return click.option(
        "--model-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), help="The weights."
    )(function)


@cli.command()
@_spec_options
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
def spec(model_dir, model_name, languages, max_tokens, output):
    """Write the custom rerank JSON that Xinference 4.1 accepts (version 2, model_specs).

    \b
        xrerank spec --model-dir ./bge-reranker-v2-m3 --model-name custom-bge-reranker-v2-m3 --max-tokens 1024
    """
    import json

    from .deploy import spec_for_directory
    from .files import write_json_atomically

    if model_dir is None:
        raise BadInput("--model-dir is required")
    document = spec_for_directory(model_dir, model_name, languages, max_tokens)
    if output:
        write_json_atomically(output, document)
        progress(f"wrote {output}")
    else:
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))


# --- the imperative steps -----------------------------------------------------------------------


@cli.command()
@click.option("--spec", "spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_spec_options
@click.option("--persist/--no-persist", default=True, show_default=True, help="Keep it across server restarts.")
@click.option("--replace", is_flag=True, help="Replace a different spec registered under the same name.")
@json_option
@click.pass_obj
def register(context, spec_file, model_dir, model_name, languages, max_tokens, persist, replace, as_json):
    """Register a custom rerank model (idempotent: the same spec again is "unchanged").

    \b
        xrerank register --spec custom-bge-reranker-v2-m3.json
    """
    from .deploy import load_spec_file, register_model, spec_for_directory

    if (spec_file is None) == (model_dir is None):
        raise BadInput("give either --spec FILE or --model-dir with --model-name")
    if spec_file:
        document = load_spec_file(spec_file, progress)
    else:
        document = spec_for_directory(model_dir, model_name, languages, max_tokens)
    outcome = register_model(context.session().server, document, persist=persist, replace=replace)
    _done({"model_name": document["model_name"], "outcome": outcome}, as_json, f"{document['model_name']}: {outcome}")


@cli.command()
@click.option("--model-name", required=True, callback=_checked(_name), help="The registered model to launch.")
@click.option("--model-uid", callback=_checked(_uid), help="Its uid on the server (default: the model name).")
@click.option("--replica", type=click.IntRange(1, MAX_REPLICAS), default=1, show_default=True)
@click.option("--gpu-idx", help="GPU indexes, e.g. 0,1 or 0,0 (two replicas on GPU 0): a multiple of --replica.")
@click.option("--n-gpu", type=click.IntRange(min=1), help="GPUs per replica, chosen by the server.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Force a device (default: the server picks).")
@click.option("--worker-ip", help="Place the replicas on this worker (address or host).")
@click.option("--use-fp16", is_flag=True, help="Half precision (GPU only; refused on CPU, ~6x slower there).")
@click.option("--threads", type=click.IntRange(min=1), help="Threads per CPU replica (default: cores / replicas).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Pairs per server micro-batch (Xinference: 32).")
@click.option("--batch-interval", type=click.FloatRange(0, 10), help="Seconds to gather one (Xinference: 0.003).")
@click.option("--env", "envs", type=(str, str), multiple=True, help="KEY VALUE for the model processes.")
@click.option("--skip-preflight", is_flag=True, help="Launch even when the capacity checks fail.")
@wait_option(600, "for every replica to be READY")
@json_option
@click.pass_obj
def launch(context, model_name, model_uid, replica, gpu_idx, n_gpu, device, worker_ip, use_fp16, threads,
           batch_size, batch_interval, envs, skip_preflight, wait_for, legacy_wait, as_json):  # fmt: skip
    """Launch a registered model and return only when EVERY replica is READY.

    \b
        xrerank launch --model-name custom-bge-reranker-v2-m3 --model-uid bge-reranker --replica 2 --device cpu
    """
    from .deploy import checked_launch
    from .records import LaunchSettings

    settings = LaunchSettings(
        model_name=model_name,
        model_uid=model_uid,
        replica=replica,
        gpu_idx=_parse_gpu_idx(gpu_idx),
        n_gpu=n_gpu,
        device=device,
        worker_ip=worker_ip,
        use_fp16=use_fp16,
        threads_per_replica=threads,
        batch_size=batch_size,
        batch_interval=batch_interval,
        envs=dict(envs),
    )
    from .names import validate_model_name, validate_model_uid

    validate_model_name(model_name)
    validate_model_uid(settings.uid)
    started = time.monotonic()
    deadline = _deadline(wait_for, legacy_wait)
    outcome = checked_launch(context.session(), settings, deadline, progress, not skip_preflight)
    seconds = time.monotonic() - started
    result = {"model_uid": settings.uid, "replica": replica, "outcome": outcome, "seconds": round(seconds, 1)}
    _done(result, as_json, f"{settings.uid}: {outcome}, {replica} replica(s) READY ({seconds:.1f}s)")


def _parse_gpu_idx(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        indexes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise BadInput(f"--gpu-idx {text!r}: expected comma-separated GPU indexes, e.g. 0,1") from None
    if any(index < 0 for index in indexes):
        raise BadInput(f"--gpu-idx {text!r}: GPU indexes cannot be negative")
    return indexes


@cli.command()
@click.option("--model-uid", required=True, callback=_checked(_uid), help="The running model.")
@click.argument("replicas", type=click.IntRange(1, MAX_REPLICAS))
@click.option("--skip-preflight", is_flag=True, help="Add replicas even when the workers lack room for them.")
@wait_option(600, "for the new replicas to be READY")
@json_option
@click.pass_obj
def scale(context, model_uid, replicas, skip_preflight, wait_for, legacy_wait, as_json):
    """Add or remove replicas of a running model in place; it keeps answering throughout.

    New replicas run with the launch settings of an existing one, once the workers are found to
    have room for them. A removed replica is drained first (up to 10 s, where its worker's
    metrics are known); xrerank's client retries the rest.

    \b
        xrerank scale --model-uid bge-reranker 3
    """
    from .deploy import checked_scale

    session = context.session()
    started = time.monotonic()
    deadline = _deadline(wait_for, legacy_wait)
    outcome = checked_scale(session, model_uid, replicas, deadline, progress, not skip_preflight)
    seconds = time.monotonic() - started
    document = {"model_uid": model_uid, "replica": replicas, "outcome": outcome, "seconds": round(seconds, 1)}
    _done(document, as_json, f"{model_uid}: {outcome}, {replicas} replica(s) ({seconds:.1f}s)")


@cli.command()
@click.option("--model-uid", required=True, callback=_checked(_uid))
@wait_option(300, "for another xrerank change of this model (a scale, a launch) to finish")
@json_option
@click.pass_obj
def terminate(context, model_uid, wait_for, legacy_wait, as_json):
    """Stop a running model, or one still loading (idempotent: an absent uid is "absent", exit 0).

    \b
        xrerank terminate --model-uid bge-reranker
    """
    from .deploy import terminate as run

    outcome = run(context.session(), model_uid, _deadline(wait_for, legacy_wait))
    _done({"model_uid": model_uid, "outcome": outcome}, as_json, f"{model_uid}: {outcome}")


@cli.command()
@click.option("--model-name", required=True, callback=_checked(_name))
@wait_option(300, "for other xrerank processes starting a model on it")
@json_option
@click.pass_obj
def unregister(context, model_name, wait_for, legacy_wait, as_json):
    """Remove a custom model's registration (idempotent). Its weights stay on disk.

    \b
        xrerank unregister --model-name custom-bge-reranker-v2-m3
    """
    from .deploy import unregister as run

    outcome = run(context.session(), model_name, _deadline(wait_for, legacy_wait))
    _done({"model_name": model_name, "outcome": outcome}, as_json, f"{model_name}: {outcome}")


@cli.command()
@click.option("--model-uid", callback=_checked(_uid), help="Only this model must be healthy.")
@click.option("--model-name", callback=_checked(_name), help="This custom model must be registered.")
@json_option
@click.pass_obj
def status(context, model_uid, model_name, as_json):
    """Server, workers, registrations, replicas; exit 0 only when all asked about is healthy.

    \b
        xrerank status --model-uid bge-reranker --json
    """
    from .status import gather_status

    session = context.session()
    report = gather_status(session.server, session.home, model_uid, model_name)
    emit_json(report) if as_json else click.echo(status_text(report))
    if not report["healthy"]:
        sys.exit(ExitCode.FAILED)


@cli.command()
@click.argument("query")
@click.argument("documents", nargs=-1)
@click.option("--docs-file", type=click.File("rb"), help="One document per line; - reads stdin.")
@click.option("--model-uid", callback=_checked(_uid), help="Default: the only rerank model running.")
@click.option("--top-n", type=click.IntRange(min=0))
@json_option
@click.pass_obj
def rerank(context, query, documents, docs_file, model_uid, top_n, as_json):
    """Rank documents by relevance to QUERY, best first.

    \b
        xrerank rerank "What is AI?" "AI is the study of intelligent machines." "Apples are rich in fibre."
    """
    from .serving import open_client, rerank_target

    documents = list(documents) + (_read_documents(docs_file) if docs_file else [])
    if not documents:
        raise BadInput("no documents to rank: give them after the query, or --docs-file FILE (- for stdin)")
    session = context.session()
    uid, demo = rerank_target(session.server, model_uid)
    if demo:
        from .demo import DEMO_WARNING

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


def _workload_options(function):
    """What bench and tune send: callers at once, documents per request, their length, a warm-up."""
    function = click.option(
        "--warmup", type=click.FloatRange(0, 600), default=3, show_default=True,
        help="Seconds of load before measuring (excluded from the figures; a fresh GPU replica is slow at first).",
    )(function)  # fmt: skip
    function = click.option(
        "--doc-tokens", type=click.IntRange(1, 8192), default=64, show_default=True,
        help="Document length in common English words (about a token each for a real reranker's vocabulary).",
    )(function)  # fmt: skip
    function = click.option(
        "--docs", type=click.IntRange(1, 10_000), default=16, show_default=True, help="Documents per request."
    )(function)
    return click.option(
        "--concurrency", type=click.IntRange(1, 256), default=4, show_default=True, help="Callers at once."
    )(function)


@cli.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model-uid", callback=_checked(_uid), help="Default: FILE's model, else the only rerank model running.")
@_workload_options
@click.option("--duration", type=click.FloatRange(0.5, 3600), default=10, show_default=True, help="Seconds.")
@click.option("--max-requests", type=click.IntRange(min=1), default=100_000, show_default=True)
@click.option("--queries", type=click.IntRange(min=0), default=0, help="Draw queries from this many (0: all new).")
@click.option("--cache-size", type=click.IntRange(min=0), default=0, help="Client score cache entries (0: off).")
@click.option("--keep-alive/--no-keep-alive", default=None, help="Reuse connections (default: over https only).")
@click.option(
    "--in-process", is_flag=True,
    help="Also score the same documents in process here (on the GPU, in the replicas' dtype, when there is one).",
)  # fmt: skip
@json_option
@click.pass_obj
def bench(context, file, model_uid, concurrency, docs, doc_tokens, warmup, duration, max_requests, queries,
          cache_size, keep_alive, in_process, as_json):  # fmt: skip
    """Load a deployed reranker for a bounded time; report latency p50/p95/p99 and throughput.

    Requests go out with the API key (never the admin login) and are not retried: every failure
    is counted, and any failure makes the exit code 1.

    \b
        xrerank bench configs/demo.yaml --concurrency 16 --duration 10
    """
    from .bench import Workload, bench_model

    if file is not None:
        target, session = context.target(file)
        model_uid = model_uid or target.settings.uid
    else:
        session = context.session()
    workload = Workload(docs, doc_tokens, concurrency, duration, max_requests, queries, warmup=warmup)
    report = bench_model(session, model_uid, workload, cache_size, keep_alive, _bench_progress(duration), in_process)
    document = report.as_dict()
    if sys.stderr.isatty():
        click.echo(err=True)
    emit_json(document) if as_json else click.echo(bench_text(document))
    if document["errors"]:
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


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show the plan, change nothing (exit 1 if a step would be refused).")
@click.option("--replace", is_flag=True, help="Apply changes the server cannot take in place (restarts the model).")
@click.option("--skip-preflight", is_flag=True, help="Deploy even when `xrerank doctor` finds a failure.")
@wait_option(900, "for the whole deploy")
@json_option
@click.pass_obj
def deploy(context, file, dry_run, replace, skip_preflight, wait_for, legacy_wait, as_json):
    """Make the server run what FILE describes: download, spec, register, launch, wait, verify.

    Each step is skipped when already so; a second run changes nothing. Interrupted, the next
    run finishes the job. Two runs of one file at once take turns.

    \b
        xrerank deploy configs/demo.yaml
    """
    from .deploy import PreflightFailed, VerificationFailed
    from .deploy import deploy as run

    target, session = context.target(file)
    deadline = _deadline(wait_for, legacy_wait)
    try:
        result = run(session, target, deadline, replace, dry_run, progress, not skip_preflight)
    except PreflightFailed as exc:
        if as_json:
            emit_json({"deployed": False, "preflight": [finding.as_dict() for finding in exc.failed]})
        raise
    except VerificationFailed as exc:
        if as_json:
            emit_json({"deployed": False, "verification": exc.report.as_dict()})
        else:
            click.echo(report_text(exc.report.as_dict()))
        raise
    if as_json:
        emit_json(result.as_dict())
    else:
        click.echo(f"plan for {result.uid} on {result.endpoint}:")
        click.echo(plan_text(result.steps))
        if result.verification:
            click.echo(report_text(result.verification.as_dict()))
        if not dry_run:
            click.echo(f"{result.uid}: deployed" + ("" if result.changed else " (unchanged)"))
    if dry_run and result.refused:
        progress("error: " + "; ".join(step.detail for step in result.refused) + "; use --replace to change it")
        sys.exit(ExitCode.FAILED)
    if dry_run and result.preflight_failed:
        progress("error: " + str(PreflightFailed(result.preflight_failed)))
        sys.exit(ExitCode.FAILED)


@cli.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model-uid", callback=_checked(_uid), help="Verify this running model instead of a deployment file's.")
@click.option("--suite", type=click.Choice(["mechanics", "quality", "all"]), help="Default: the file's, or all.")
@click.option("--cases", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Extra golden cases.")
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16", "bfloat16"]),
    help="The replicas' precision (default: the file's, or what xrerank launched them with, else float32).",
)
@json_option
@click.pass_obj
def verify(context, file, model_uid, suite, cases, dtype, as_json):
    """Check that a deployed reranker answers correctly; exit 0 only when every check passes.

    \b
        xrerank verify configs/demo.yaml --suite mechanics
    """
    from .deploy import verify_model

    if (file is None) == (model_uid is None):
        raise BadInput("give either a deployment FILE or --model-uid")
    if file is not None:
        target, session = context.target(file)
        model_uid = target.settings.uid
        suite = suite or (target.deployment.verify.suite if target.deployment.verify.suite != "none" else "all")
        dtype = dtype or target.settings.dtype
        cases = cases or target.cases_file
    else:
        session = context.session()
    report = verify_model(session, model_uid, suite or "all", cases, dtype).as_dict()
    emit_json({"model_uid": model_uid, **report}) if as_json else click.echo(report_text(report))
    if not report["passed"]:
        sys.exit(ExitCode.FAILED)


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--budget", type=click.FloatRange(min=10), default=300, show_default=True, help="Seconds in all.")
@click.option("--trial-duration", type=click.FloatRange(1, 600), default=10, show_default=True, help="Seconds each.")
@_workload_options
@click.option("--no-write", is_flag=True, help="Print the table, leave FILE as it is.")
@json_option
@click.pass_obj
def tune(context, file, budget, trial_duration, concurrency, docs, doc_tokens, warmup, no_write, as_json):
    """Try launch settings on FILE's server within a time budget; write the fastest into FILE.

    Trials run under a scratch uid (<uid>-tune), one at a time, and are terminated; the running
    deployment is not touched. Apply the result with `xrerank deploy FILE --replace`.

    \b
        xrerank tune configs/demo.yaml --budget 180
    """
    from .bench import Workload
    from .tune import tune as run
    from .tune import write_best

    target, session = context.target(file)
    workload = Workload(docs, doc_tokens, concurrency, trial_duration, warmup=warmup)
    tuning = run(session, target.settings, workload, budget, progress)
    if tuning.best is None:
        if as_json:
            emit_json({"model_uid": target.settings.uid, **tuning.as_dict()})
        raise XrerankError("no trial finished without errors; see the failures above")
    if not no_write:
        write_best(file, tuning.best.setting)
        tuning.written = True
    if as_json:
        emit_json({"model_uid": target.settings.uid, **tuning.as_dict()})
        return
    click.echo(tune_text(tuning))
    if not no_write:
        click.echo(f"wrote the best settings into {file}; apply them with: xrerank deploy {file} --replace")


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--purge-weights", is_flag=True, help="Also delete the weights xrerank downloaded or generated.")
@wait_option(120, "for another xrerank run on this deployment")
@json_option
@click.pass_obj
def destroy(context, file, purge_weights, wait_for, legacy_wait, as_json):
    """Terminate and unregister what FILE deployed; the weights stay unless --purge-weights.

    Purging deletes only the files xrerank wrote (its manifest lists them, with their hashes),
    never a `local` source's, and keeps the directory if anything else is in it.

    \b
        xrerank destroy configs/demo.yaml
    """
    from .deploy import destroy as run

    target, session = context.target(file)
    result = run(session, target, _deadline(wait_for, legacy_wait), purge_weights)
    kept = f" (kept in {target.weights}: {', '.join(result.kept[:5])})" if result.kept else ""
    text = (
        f"{result.model_uid}: terminate: {result.terminate}, unregister: {result.unregister}, weights: {result.weights}"
    )
    _done(result.as_dict(), as_json, text + kept)


@cli.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@click.pass_obj
def doctor(context, file, as_json):
    """Find the known traps and capacity problems before a deploy; exit 1 when a check fails.

    Checks this machine; the server when --endpoint (or FILE) names one, or the embedded server
    when it runs; FILE's deployment against that server's workers.

    \b
        xrerank doctor configs/bge-reranker-v2-m3-gpu.yaml --json
    """
    from .doctor import FAIL, examine, worst

    if file is not None:
        target, session = context.target(file)
    else:
        from .local import default_server_dir, inspect_server_process

        named = context.options.endpoint or inspect_server_process(default_server_dir())  # the embedded server
        target, session = None, context.session() if named else None
    findings = examine(session, target)
    verdict = worst(findings)
    if as_json:
        emit_json({"verdict": verdict, "findings": [finding.as_dict() for finding in findings]})
    else:
        click.echo(findings_text(findings))
        click.echo(f"verdict: {verdict}")
    if verdict == FAIL:
        sys.exit(ExitCode.FAILED)


# --- handing the service to apps ---------------------------------------------------------------


@cli.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--model-uid",
    callback=_checked(_uid),
    help="The deployed model (default: FILE's, else the only rerank model running).",
)
@click.option(
    "--format", "form", type=click.Choice(CONNECT_FORMATS),
    default="text", show_default=True, help="What to print: the facts, env lines, or a paste-ready recipe.",
)  # fmt: skip
@click.option("--new-key", metavar="APP", help="Create a key for this app (limited to the model) and use it.")
@click.option("--key", "key_name", metavar="APP", help="Use the key created before for this app.")
@click.option("--show-key", is_flag=True, help="Print the key itself where the format would hide it.")
@json_option
@click.pass_obj
def connect(context, file, model_uid, form, new_key, key_name, show_key, as_json):
    """Print what an app needs to call the reranker: URLs, model uid, key, per consumer.

    Code recipes read the key from $XRERANK_API_KEY; `--format env` prints that line. A key is
    printed only by the formats made to hold it (env, dify, ragflow) or with --show-key.

    \b
        eval "$(xrerank connect --new-key my-rag-app --format env)"; xrerank connect --format python
    """
    from .connect import describe, prints_key, recipe
    from .local import embedded_at
    from .serving import rerank_target

    if file is not None:
        target, session = context.target(file)
        model_uid = model_uid or target.settings.uid
    else:
        session = context.session()
    model_uid = rerank_target(session.server, model_uid)[0]
    embedded = embedded_at(session.endpoint)
    app_url = embedded.advertised_endpoint if embedded is not None else None
    connection = describe(session, model_uid, new_key, key_name, app_url)
    if as_json:
        emit_json(connection.as_dict(show_key))
        return
    if prints_key(form, connection, show_key):
        progress(f"note: this output holds {connection.key_note}; keep it out of logs")
    elif new_key is not None:
        progress(f"note: {new_key}'s key was created; `xrerank connect --key {new_key} --format env` prints it "
                 f"as {API_KEY_ENV}, which the recipes read")  # fmt: skip
    click.echo(recipe(connection, form, show_key))


@cli.group("keys")
def keys_group():
    """API keys for apps: one per app, query and rerank only, revocable at once (a user login is needed)."""


@keys_group.command("create")
@click.argument("app")
@click.option(
    "--model-uid",
    "model_uids",
    multiple=True,
    callback=_checked(_uids),
    help="Limit the key to this model (repeatable).",
)
@json_option
@click.pass_obj
def keys_create(context, app, model_uids, as_json):
    """Create a key for APP; it is printed once, here, and never again by xrerank.

    \b
        xrerank keys create my-rag-app --model-uid bge-reranker
    """
    from .keys import create_app_key

    key, secret = create_app_key(context.session().server, app, tuple(model_uids))
    progress("note: the key is shown once; store it now (or see it again with `xrerank connect --key APP`)")
    scope = ", ".join(key.models) or "every model"
    _done({"app": app, "name": key.name, "prefix": key.prefix, "models": list(key.models), "api_key": secret},
          as_json, f"{secret}\n({key.name}: query and rerank on {scope})")  # fmt: skip


@keys_group.command("list")
@json_option
@click.pass_obj
def keys_list(context, as_json):
    """The apps' keys: name, prefix, on or revoked, the models they may use (never the secrets).

    \b
        xrerank keys list --json
    """
    from .keys import APP_PREFIX, app_keys

    keys = app_keys(context.session().server)
    rows = [{"app": k.name.removeprefix(APP_PREFIX), "prefix": k.prefix, "enabled": k.enabled,
             "models": list(k.models)} for k in keys]  # fmt: skip
    if as_json:
        emit_json({"keys": rows})
        return
    for row in rows:
        state = "on" if row["enabled"] else "revoked"
        click.echo(f"{row['app']:<24} {row['prefix']}…  {state:<8} {', '.join(row['models']) or 'every model'}")
    if not rows:
        click.echo("no app keys; create one with: xrerank keys create APP")


@keys_group.command("revoke")
@click.argument("app")
@json_option
@click.pass_obj
def keys_revoke(context, app, as_json):
    """Revoke APP's key at once (it is disabled: a client still sending it is refused per key and
    does not get its address banned).

    \b
        xrerank keys revoke my-rag-app
    """
    from .keys import revoke_app_key

    outcome = revoke_app_key(context.session().server, app)
    _done({"app": app, "outcome": outcome}, as_json, f"{app}: {outcome}")


@keys_group.command("prune")
@json_option
@click.pass_obj
def keys_prune(context, as_json):
    """Retire the keys xrerank made for its own rerank traffic, but the one in use here.

    Earlier versions made one per fresh $XRERANK_HOME (a CI job: one per run). Each is disabled
    first (a client still sending it is refused, not banned) and deleted by a prune an hour or
    more later. Apps' keys and other machines' current keys are never touched.

    \b
        xrerank keys prune
    """
    from .keys import prune_data_plane_keys

    session = context.session()
    pruned = prune_data_plane_keys(session.server, session.home)
    lines = [f"disabled {len(pruned.disabled)} key(s) (a prune an hour or more from now deletes them)",
             *(f"  {name}" for name in pruned.disabled), f"deleted {len(pruned.deleted)} key(s)",
             *(f"  {name}" for name in pruned.deleted)]  # fmt: skip
    _done({"disabled": pruned.disabled, "deleted": pruned.deleted}, as_json, "\n".join(lines))


# --- the embedded local server -------------------------------------------------------------------


def _server_dir(context: click.Context, parameter: click.Parameter, home: Path | None) -> Path:
    from .local import default_server_dir

    return home or default_server_dir()


home_option = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    callback=_server_dir,
    help="Server directory (default $XRERANK_HOME/server).",
)
port_option = click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=9997,
    envvar="XRERANK_PORT",
    show_envvar=True,
    show_default=True,
    help="The embedded server's port (a CI runner shared with other jobs may need another).",
)
host_option = click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 serves apps on other hosts and in containers (auth stays on).",
)


@cli.group("server")
def server_group():
    """Run an embedded Xinference (its home, log, pid and credentials in one private directory)."""


@server_group.command("start")
@port_option
@host_option
@home_option
@click.option("--no-auth", is_flag=True, help="Turn Xinference's auth off (only on a loopback --host).")
@wait_option(180, "for the server to answer")
@json_option
def server_start(port, host, home, no_auth, wait_for, legacy_wait, as_json):
    """Start the server unless it runs; with auth on, create its admin and API key.

    \b
        xrerank server start --port 9997
    """
    from .local import start

    deadline = _deadline(wait_for, legacy_wait)
    running, started = start(home, port, not no_auth, deadline - time.monotonic(), host)
    _server_done(running, "started" if started else "already running", as_json)


@server_group.command("stop")
@home_option
@json_option
def server_stop(home, as_json):
    """Stop the server and its model processes (idempotent; a stale record is dropped, nothing signalled).

    \b
        xrerank server stop
    """
    from .local import stop

    _stopped(stop(home), as_json)


@server_group.command("status")
@home_option
@json_option
def server_status(home, as_json):
    """Is the embedded server running and answering? Exit 0 only when it is.

    \b
        xrerank server status --json
    """
    from .local import inspect_server

    found = inspect_server(home)
    if found.state == "running" and found.server is not None:
        _server_done(found.server, "running", as_json)
        return
    document = {"outcome": found.state, "running": False, "detail": found.detail or None}
    _done(document, as_json, _state_line(found))
    sys.exit(ExitCode.FAILED)


@server_group.command("unban")
@home_option
@json_option
def server_unban(home, as_json):
    """Lift the address bans Xinference's rate limiter set on the embedded server.

    \b
        xrerank server unban
    """
    from .local import unban

    lifted = unban(home)
    _done({"unbanned": lifted}, as_json, f"lifted {lifted} ban(s)")


def _server_done(running, outcome: str, as_json: bool) -> None:
    from .local import LOG_FILE

    document = {
        "outcome": outcome,
        "running": True,
        "endpoint": running.endpoint,
        "app_endpoint": running.advertised_endpoint,
        "host": running.host,
        "pid": running.pid,
        "auth": running.auth,
        "log": str(running.directory / LOG_FILE),
    }
    where = running.endpoint
    if running.advertised_endpoint != running.endpoint:
        where += f", apps elsewhere: {running.advertised_endpoint}"
    _done(document, as_json, f"{outcome}: {where} (pid {running.pid}, auth {'on' if running.auth else 'off'})")


@cli.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--demo", is_flag=True, help="Deploy the offline demo model (configs/demo.yaml).")
@port_option
@host_option
@wait_option(900, "for the server, the download and the deploy")
@json_option
@click.pass_obj
def up(context, file, demo, port, host, wait_for, legacy_wait, as_json):
    """Start the embedded server if none answers, deploy, verify, and show a sample ranking.

    Default: configs/bge-reranker-v2-m3-cpu.yaml (downloads ~2.3 GB from ModelScope);
    --demo deploys a tiny random model and needs no network.

    \b
        xrerank up --demo
    """
    from .up import SAMPLE_QUERY
    from .up import up as run

    result = run(context.options, file, demo, _deadline(wait_for, legacy_wait), port, host, progress)
    if as_json:
        emit_json(result.as_dict())
        return
    deployed = result.deployed
    click.echo(f"deployed {deployed.uid} on {deployed.endpoint}" + ("" if deployed.changed else " (unchanged)"))
    click.echo(f'sample ranking for "{SAMPLE_QUERY}":')
    click.echo(results_text(result.sample))
    if result.demo:
        from .demo import DEMO_WARNING

        click.echo(f"note: {DEMO_WARNING}")
    click.echo(
        "next:\n"
        f"  xrerank connect --model-uid {deployed.uid}          # the URL, uid and key for your app\n"
        f'  xrerank rerank --model-uid {deployed.uid} "your query" "doc one" "doc two"\n'
        f"  xrerank status --model-uid {deployed.uid}\n"
        "  xrerank down"
    )


@cli.command()
@json_option
def down(as_json):
    """Stop the embedded server that `xrerank up` started (its registrations persist).

    \b
        xrerank down
    """
    from .local import default_server_dir, stop

    _stopped(stop(default_server_dir()), as_json)


def _stopped(state, as_json: bool) -> None:
    """What `stop` did: stopped, not running, or stale with the reason (nothing was signalled)."""
    _done({"outcome": state.state, "detail": state.detail or None}, as_json, _state_line(state))


def _state_line(state) -> str:
    return state.state + (f": {state.detail}" if state.detail else "")


def _done(document: dict, as_json: bool, text: str) -> None:
    emit_json(document) if as_json else click.echo(text)


def main() -> None:
    cli(prog_name="xrerank")
