"""The xrerank command line. Each command parses its options, makes one library call, renders.

Library modules are imported inside the commands so that `xrerank --help` stays instant.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from .errors import BadInput, Unreachable, XrerankError
from .render import bench_text, emit_json, findings_text, plan_text, report_text, results_text, status_text, tune_text

DEFAULT_ENDPOINT = "http://127.0.0.1:9997"
REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class Connection:
    """The group's connection options; flag > env var > deployment file > default."""

    endpoint: str | None
    api_key: str | None
    username: str | None
    password: str | None
    timeout: float
    debug: bool

    def server(self, deployment: object = None):
        from .server import Xinference

        endpoint = self.resolved_endpoint(deployment)
        return Xinference(endpoint, self.credentials(endpoint, deployment), self.timeout)

    def resolved_endpoint(self, deployment: object = None) -> str:
        return self.endpoint or getattr(deployment, "endpoint", None) or DEFAULT_ENDPOINT

    def credentials(self, endpoint: str, deployment: object = None):
        import os

        from .http import Credentials
        from .local import local_credentials

        if self.api_key or self.username:
            return Credentials(self.api_key, self.username, self.password)
        names = getattr(deployment, "credentials", None)
        if names is not None:
            from_env = Credentials(
                os.environ.get(names.api_key_env),
                os.environ.get(names.username_env),
                os.environ.get(names.password_env),
            )
            if from_env:
                return from_env
        return local_credentials(endpoint) or Credentials()


class ErrorBoundary(click.Group):
    """Turns library errors into one line on stderr and the documented exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except XrerankError as exc:
            if ctx.obj is not None and ctx.obj.debug:
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: run the same command again to resume", err=True)
            ctx.exit(130)


def progress(message: str) -> None:
    click.echo(message, err=True)


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")


@click.group(cls=ErrorBoundary, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xrerank")
@click.option(
    "--endpoint",
    envvar=["XRERANK_ENDPOINT", "XINFERENCE_ENDPOINT"],
    show_envvar=True,
    help=f"Xinference REST API (default {DEFAULT_ENDPOINT}, or the deployment file's).",
)
@click.option("--api-key", envvar="XRERANK_API_KEY", show_envvar=True, help="API key (query and rerank only).")
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
    unauthorized, 4 timed out.
    """
    ctx.obj = Connection(endpoint, api_key, username, password, timeout, debug)


# --- weights and specs ------------------------------------------------------------------------


@cli.command()
@click.argument("model_id")
@click.option("--local-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--revision", default="master", show_default=True)
@click.option("--hub-endpoint", envvar="MODELSCOPE_ENDPOINT", show_envvar=True, help="ModelScope hub URL.")
@json_option
def download(model_id, local_dir, revision, hub_endpoint, as_json):
    """Download weights from ModelScope, check they are a reranker, write a manifest.

    A complete directory is left as it is; an interrupted download resumes.

    \b
        xrerank download AI-ModelScope/bge-reranker-v2-m3 --local-dir ./bge-reranker-v2-m3
    """
    from .hub import download as fetch

    result = fetch(model_id, local_dir, revision, hub_endpoint)
    if as_json:
        emit_json({"directory": str(result.directory), "changed": result.changed, **result.manifest})
    else:
        verb = "downloaded" if result.changed else "already complete:"
        click.echo(f"{verb} {model_id}@{revision} in {result.directory} ({len(result.manifest['files'])} files)")


@cli.command("make-demo-model")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
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
    if as_json:
        emit_json({"directory": str(path), "demo": True})
    else:
        click.echo(str(path))


def _spec_options(function):
    function = click.option("--max-tokens", type=click.IntRange(min=1), help="Default: the model's limit.")(function)
    function = click.option(
        "--language", "languages", multiple=True, default=("en", "zh", "multilingual"), show_default=True
    )(function)
    function = click.option("--model-name", help="Name to register; not a built-in name.")(function)
    return click.option(
        "--model-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), help="The weights."
    )(function)


def _build_spec(model_dir: Path, model_name: str | None, languages, max_tokens) -> dict:
    from .modeldir import inspect_model_dir, read_complete_manifest
    from .spec import build_spec

    if not model_name:
        raise BadInput("--model-name is required with --model-dir")
    manifest = read_complete_manifest(model_dir.resolve()) or {}
    return build_spec(inspect_model_dir(model_dir), model_name, languages, max_tokens, manifest.get("model_id"))


@cli.command()
@_spec_options
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
def spec(model_dir, model_name, languages, max_tokens, output):
    """Write the custom rerank JSON that Xinference 4.1 accepts (version 2, model_specs).

    \b
        xrerank spec --model-dir ./bge-reranker-v2-m3 --model-name custom-bge-reranker-v2-m3 --max-tokens 1024
    """
    import json

    from .modeldir import write_json_atomically

    if model_dir is None:
        raise BadInput("--model-dir is required")
    document = _build_spec(model_dir, model_name, languages, max_tokens)
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
def register(connection, spec_file, model_dir, model_name, languages, max_tokens, persist, replace, as_json):
    """Register a custom rerank model (idempotent: the same spec again is "unchanged").

    \b
        xrerank register --spec custom-bge-reranker-v2-m3.json
    """
    from .deploy import register_model

    if (spec_file is None) == (model_dir is None):
        raise BadInput("give either --spec FILE or --model-dir with --model-name")
    document = _read_spec_file(spec_file) if spec_file else _build_spec(model_dir, model_name, languages, max_tokens)
    outcome = register_model(connection.server(), document, persist=persist, replace=replace)
    _done({"model_name": document["model_name"], "outcome": outcome}, as_json, f"{document['model_name']}: {outcome}")


def _read_spec_file(path: Path) -> dict:
    import json

    from .modeldir import inspect_model_dir
    from .spec import validate_model_name

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not document.get("model_specs"):
        raise BadInput(
            f"{path} has no model_specs: Xinference 4.1 rejects the flat model_id/model_uri form; "
            "generate the file with `xrerank spec`"
        )
    validate_model_name(str(document.get("model_name", "")))
    uri = str(document["model_specs"][0].get("model_uri") or "").removeprefix("file://")
    if not Path(uri).is_absolute():
        raise BadInput(f"{path}: model_uri {uri!r} must be an absolute path on the server's machine")
    if Path(uri).exists():
        inspect_model_dir(uri)
    else:
        progress(f"note: {uri} is not on this machine; the server will check it")
    return document


@cli.command()
@click.option("--model-name", required=True, help="The registered model to launch.")
@click.option("--model-uid", help="Its uid on the server (default: the model name).")
@click.option("--replica", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--gpu-idx", help="GPU indexes, e.g. 0,1: a multiple of the replica count.")
@click.option("--n-gpu", type=click.IntRange(min=1), help="GPUs per replica, chosen by the server.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Force a device (default: the server picks).")
@click.option("--worker-ip", help="Place the replicas on this worker (address or host).")
@click.option("--use-fp16", is_flag=True, help="Half precision (GPU only; refused on CPU, ~6x slower there).")
@click.option("--threads", type=click.IntRange(min=1), help="Threads per CPU replica (default: cores / replicas).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Pairs per server micro-batch (Xinference: 32).")
@click.option("--batch-interval", type=click.FloatRange(0, 10), help="Seconds to gather one (Xinference: 0.003).")
@click.option("--env", "envs", type=(str, str), multiple=True, help="KEY VALUE for the model processes.")
@click.option("--timeout", "wait_for", type=click.FloatRange(min=1), default=600, show_default=True)
@json_option
@click.pass_obj
def launch(connection, model_name, model_uid, replica, gpu_idx, n_gpu, device, worker_ip, use_fp16, threads,
           batch_size, batch_interval, envs, wait_for, as_json):  # fmt: skip
    """Launch a registered model and return only when EVERY replica is READY.

    \b
        xrerank launch --model-name custom-bge-reranker-v2-m3 --model-uid bge-reranker --replica 2 --device cpu
    """
    from .deploy import launch_model
    from .server import LaunchSettings

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
    started = time.monotonic()
    outcome = launch_model(connection.server(), settings, started + wait_for, progress)
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
    if any(index < 0 for index in indexes) or len(set(indexes)) != len(indexes):
        raise BadInput(f"--gpu-idx {text!r}: indexes must be distinct and not negative")
    return indexes


@cli.command()
@click.option("--model-uid", required=True)
@json_option
@click.pass_obj
def terminate(connection, model_uid, as_json):
    """Stop a running model (idempotent: an absent uid is "absent", exit 0).

    \b
        xrerank terminate --model-uid bge-reranker
    """
    from .deploy import terminate_model

    outcome = terminate_model(connection.server(), model_uid)
    _done({"model_uid": model_uid, "outcome": outcome}, as_json, f"{model_uid}: {outcome}")


@cli.command()
@click.option("--model-name", required=True)
@json_option
@click.pass_obj
def unregister(connection, model_name, as_json):
    """Remove a custom model's registration (idempotent). Its weights stay on disk.

    \b
        xrerank unregister --model-name custom-bge-reranker-v2-m3
    """
    from .deploy import unregister_model

    outcome = unregister_model(connection.server(), model_name)
    _done({"model_name": model_name, "outcome": outcome}, as_json, f"{model_name}: {outcome}")


@cli.command()
@click.option("--model-uid", help="Only this model must be healthy.")
@click.option("--model-name", help="This custom model must be registered.")
@json_option
@click.pass_obj
def status(connection, model_uid, model_name, as_json):
    """Server, workers, registrations, replicas; exit 0 only when all asked about is healthy.

    \b
        xrerank status --model-uid bge-reranker --json
    """
    from .errors import FAILED
    from .status import gather_status

    report = gather_status(connection.server(), model_uid, model_name)
    emit_json(report) if as_json else click.echo(status_text(report))
    if not report["healthy"]:
        sys.exit(FAILED)


@cli.command()
@click.argument("query")
@click.argument("documents", nargs=-1)
@click.option("--docs-file", type=click.File("rb"), help="One document per line; - reads stdin.")
@click.option("--model-uid", help="Default: the only rerank model running.")
@click.option("--top-n", type=click.IntRange(min=0))
@json_option
@click.pass_obj
def rerank(connection, query, documents, docs_file, model_uid, top_n, as_json):
    """Rank documents by relevance to QUERY, best first.

    \b
        xrerank rerank "What is AI?" "AI is the study of intelligent machines." "Apples are rich in fibre."
    """
    from .client import Reranker

    documents = list(documents) + (_read_documents(docs_file) if docs_file else [])
    server = connection.server()
    uid, demo = _rerank_target(server, model_uid)
    if demo:
        from .demo import DEMO_WARNING

        progress(f"note: {DEMO_WARNING}")
    with Reranker(server.endpoint, uid, timeout=connection.timeout, credentials=server.api.credentials) as client:
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


def _rerank_target(server, model_uid: str | None) -> tuple[str, bool]:
    from .demo import is_random_model

    models = [m for m in server.models() if m.get("model_type") == "rerank"]
    if model_uid is None:
        if len(models) != 1:
            running = ", ".join(m["id"] for m in models) or "none"
            raise BadInput(f"--model-uid is needed: rerank models running: {running}")
        model_uid = models[0]["id"]
    name = next((m["model_name"] for m in models if m["id"] == model_uid), None)
    registration = server.registration(name) if name else None
    model_id = ((registration or {}).get("model_specs") or [{}])[0].get("model_id")
    return model_uid, is_random_model(model_id)


def _workload_options(function):
    """What bench and tune send: callers at once, documents per request and their length."""
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
@click.option("--model-uid", help="Default: FILE's model, else the only rerank model running.")
@_workload_options
@click.option("--duration", type=click.FloatRange(0.5, 3600), default=10, show_default=True, help="Seconds.")
@click.option("--max-requests", type=click.IntRange(min=1), default=100_000, show_default=True)
@click.option("--queries", type=click.IntRange(min=0), default=0, help="Draw queries from this many (0: all new).")
@click.option("--cache-size", type=click.IntRange(min=0), default=0, help="Client score cache entries (0: off).")
@click.option("--keep-alive/--no-keep-alive", default=None, help="Reuse connections (default: over https only).")
@json_option
@click.pass_obj
def bench(connection, file, model_uid, concurrency, docs, doc_tokens, duration, max_requests, queries, cache_size,
          keep_alive, as_json):  # fmt: skip
    """Load a deployed reranker for a bounded time; report latency p50/p95/p99 and throughput.

    Requests are not retried: every failure is counted, and any failure makes the exit code 1.

    \b
        xrerank bench configs/demo.yaml --concurrency 4 --duration 10
    """
    from .bench import Workload, run_bench
    from .cache import ScoreCache
    from .client import Reranker

    if file is not None:
        target, server = _load(connection, file)
        model_uid = model_uid or target.settings.uid
    else:
        server = connection.server()
        model_uid = _rerank_target(server, model_uid)[0]
    workload = Workload(docs, doc_tokens, concurrency, duration, max_requests, queries)
    cache = ScoreCache(cache_size) if cache_size else None
    client = Reranker(
        server.endpoint, model_uid, timeout=connection.timeout, retry_for=0, credentials=server.api.credentials,
        cache=cache, connections=concurrency, keep_alive=keep_alive,
    )  # fmt: skip
    with client:
        result = run_bench(client.rerank, workload, _bench_progress(duration), cache).as_dict()
    if sys.stderr.isatty():
        click.echo(err=True)
    document = {"endpoint": server.endpoint, "model_uid": model_uid, **result}
    emit_json(document) if as_json else click.echo(bench_text(document))
    if document["errors"]:
        sys.exit(1)


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


def _load(connection: Connection, file: Path):
    from .config import load_deployment
    from .deploy import resolve
    from .local import xrerank_home

    deployment, base = load_deployment(file)
    return resolve(deployment, base, xrerank_home()), connection.server(deployment)


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show the plan, change nothing.")
@click.option("--replace", is_flag=True, help="Apply changes the server cannot take in place (restarts the model).")
@click.option("--skip-preflight", is_flag=True, help="Deploy even when `xrerank doctor` finds a failure.")
@click.option("--timeout", "wait_for", type=click.FloatRange(min=1), default=900, show_default=True)
@json_option
@click.pass_obj
def deploy(connection, file, dry_run, replace, skip_preflight, wait_for, as_json):
    """Make the server run what FILE describes: download, spec, register, launch, wait, verify.

    Each step is skipped when already so; a second run changes nothing. Interrupted, the next
    run finishes the job.

    \b
        xrerank deploy configs/demo.yaml
    """
    from .deploy import PreflightFailed, VerificationFailed
    from .deploy import deploy as run

    target, server = _load(connection, file)
    try:
        result = run(server, target, time.monotonic() + wait_for, replace, dry_run, progress, not skip_preflight)
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
        emit_json(
            {
                "endpoint": result.endpoint,
                "model_uid": result.uid,
                "dry_run": dry_run,
                "deployed": not dry_run,
                "changed": result.changed,
                "plan": [{"step": s.name, "state": s.state, "detail": s.detail} for s in result.steps],
                "carried_out": result.carried_out,
                "verification": result.verification.as_dict() if result.verification else None,
            }
        )
        return
    click.echo(f"plan for {result.uid} on {result.endpoint}:")
    click.echo(plan_text(result.steps))
    if result.verification:
        click.echo(report_text(result.verification.as_dict()))
    if not dry_run:
        click.echo(f"{result.uid}: deployed" + ("" if result.changed else " (unchanged)"))


@cli.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model-uid", help="Verify this running model instead of a deployment file's.")
@click.option("--suite", type=click.Choice(["mechanics", "quality", "all"]), help="Default: the file's, or all.")
@click.option("--cases", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Extra golden cases.")
@json_option
@click.pass_obj
def verify(connection, file, model_uid, suite, cases, as_json):
    """Check that a deployed reranker answers correctly; exit 0 only when every check passes.

    \b
        xrerank verify configs/demo.yaml --suite mechanics
    """
    from .deploy import verify_model
    from .errors import FAILED

    if (file is None) == (model_uid is None):
        raise BadInput("give either a deployment FILE or --model-uid")
    if file is not None:
        target, server = _load(connection, file)
        model_uid = target.settings.uid
        suite = suite or (target.deployment.verify.suite if target.deployment.verify.suite != "none" else "all")
    else:
        server = connection.server()
    report = verify_model(server, model_uid, suite or "all", cases, connection.timeout).as_dict()
    emit_json({"model_uid": model_uid, **report}) if as_json else click.echo(report_text(report))
    if not report["passed"]:
        sys.exit(FAILED)


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--budget", type=click.FloatRange(min=10), default=300, show_default=True, help="Seconds in all.")
@click.option("--trial-duration", type=click.FloatRange(1, 600), default=10, show_default=True, help="Seconds each.")
@_workload_options
@click.option("--no-write", is_flag=True, help="Print the table, leave FILE as it is.")
@json_option
@click.pass_obj
def tune(connection, file, budget, trial_duration, concurrency, docs, doc_tokens, no_write, as_json):
    """Try launch settings on FILE's server within a time budget; write the fastest into FILE.

    Trials run under a scratch uid (<uid>-tune), one at a time, and are terminated; the running
    deployment is not touched. Apply the result with `xrerank deploy FILE --replace`.

    \b
        xrerank tune configs/demo.yaml --budget 180
    """
    from .bench import Workload
    from .tune import tune as run
    from .tune import write_best

    target, server = _load(connection, file)
    workload = Workload(docs, doc_tokens, concurrency, trial_duration)
    tuning = run(server, target.settings, workload, budget, progress)
    if tuning.best is None:
        raise XrerankError("no trial finished without errors; see the failures above")
    if not no_write:
        write_best(file, tuning.best.setting)
    if as_json:
        emit_json(
            {
                "model_uid": target.settings.uid,
                "trials": [trial.as_dict() for trial in tuning.trials],
                "best": tuning.best.setting.__dict__,
                "not_tried": [setting.__dict__ for setting in tuning.skipped],
                "written": not no_write,
            }
        )
        return
    click.echo(tune_text(tuning))
    if not no_write:
        click.echo(f"wrote the best settings into {file}; apply them with: xrerank deploy {file} --replace")


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--purge-weights", is_flag=True, help="Also delete the downloaded weights.")
@json_option
@click.pass_obj
def destroy(connection, file, purge_weights, as_json):
    """Terminate and unregister what FILE deployed; the weights stay unless --purge-weights.

    \b
        xrerank destroy configs/demo.yaml
    """
    from .deploy import destroy as run

    target, server = _load(connection, file)
    outcome = run(server, target, purge_weights)
    text = ", ".join(f"{step}: {what}" for step, what in outcome.items())
    _done({"model_uid": target.settings.uid, **outcome}, as_json, f"{target.settings.uid}: {text}")


@cli.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@click.pass_context
def doctor(ctx, file, as_json):
    """Find the known traps and capacity problems before a deploy; exit 1 when a check fails.

    Checks this machine; the server when --endpoint (or FILE) names one; FILE's deployment
    against that server's workers.

    \b
        xrerank doctor configs/bge-reranker-v2-m3-gpu.yaml --json
    """
    from .doctor import FAIL, machine_findings, probe_machine, worst

    connection = ctx.obj
    findings = machine_findings(probe_machine())
    if file is not None:
        from .doctor import preflight

        target, server = _load(connection, file)
        findings += preflight(server, target, machine=False)
    elif connection.endpoint is not None:
        from .doctor import server_findings

        findings += server_findings(connection.server(), needs_admin=False)[0]
    verdict = worst(findings)
    if as_json:
        emit_json({"verdict": verdict, "findings": [finding.as_dict() for finding in findings]})
    else:
        click.echo(findings_text(findings))
        click.echo(f"verdict: {verdict}")
    if verdict == FAIL:
        sys.exit(1)


# --- the embedded local server -------------------------------------------------------------------


home_option = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    help="Server directory (default $XRERANK_HOME/server).",
)


@cli.group("server")
def server_group():
    """Run an embedded Xinference on 127.0.0.1 (its home, log, pid and credentials in one directory)."""


@server_group.command("start")
@click.option("--port", type=click.IntRange(1, 65535), default=9997, show_default=True)
@home_option
@click.option("--no-auth", is_flag=True, help="Turn Xinference's auth off (loopback only).")
@click.option("--timeout", "wait_for", type=click.FloatRange(min=1), default=180, show_default=True)
@json_option
def server_start(port, home, no_auth, wait_for, as_json):
    """Start the server unless it runs; with auth on, create its admin and API key.

    \b
        xrerank server start --port 9997
    """
    from .local import default_server_dir, start

    running, started = start(home or default_server_dir(), port, auth=not no_auth, timeout=wait_for)
    _server_done(running, "started" if started else "already running", as_json)


@server_group.command("stop")
@home_option
@json_option
def server_stop(home, as_json):
    """Stop the server and its model processes (idempotent).

    \b
        xrerank server stop
    """
    from .local import default_server_dir, stop

    stopped = stop(home or default_server_dir())
    outcome = "stopped" if stopped else "not running"
    _done({"outcome": outcome}, as_json, outcome)


@server_group.command("status")
@home_option
@json_option
def server_status(home, as_json):
    """Is the embedded server running? Exit 0 when it is.

    \b
        xrerank server status --json
    """
    from .errors import FAILED
    from .local import default_server_dir, read_state

    running = read_state(home or default_server_dir())
    if running is None:
        _done({"running": False}, as_json, "not running")
        sys.exit(FAILED)
    _server_done(running, "running", as_json)


def _server_done(running, outcome: str, as_json: bool) -> None:
    from .local import CREDENTIALS_FILE, LOG_FILE

    document = {
        "outcome": outcome,
        "running": True,
        "endpoint": running.endpoint,
        "pid": running.pid,
        "auth": running.auth,
        "log": str(running.directory / LOG_FILE),
        "credentials_file": str(running.directory / CREDENTIALS_FILE) if running.auth else None,
    }
    _done(
        document, as_json, f"{outcome}: {running.endpoint} (pid {running.pid}, auth {'on' if running.auth else 'off'})"
    )


@cli.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--demo", is_flag=True, help="Deploy the offline demo model (configs/demo.yaml).")
@click.option("--port", type=click.IntRange(1, 65535), default=9997, show_default=True)
@click.option("--timeout", "wait_for", type=click.FloatRange(min=1), default=900, show_default=True)
@json_option
@click.pass_obj
def up(connection, file, demo, port, wait_for, as_json):
    """Start the embedded server if none answers, deploy, verify, and show a sample ranking.

    Default: configs/bge-reranker-v2-m3-cpu.yaml (downloads ~2.3 GB from ModelScope);
    --demo deploys a tiny random model and needs no network.

    \b
        xrerank up --demo
    """
    from .client import Reranker
    from .deploy import deploy as run
    from .local import default_server_dir, start

    if file is not None and demo:
        raise BadInput("give a deployment FILE or --demo, not both")
    file = file or REPO_CONFIGS / ("demo.yaml" if demo else "bge-reranker-v2-m3-cpu.yaml")
    if not file.is_file():
        raise BadInput(f"{file} not found; pass a deployment FILE")
    embedded = f"http://127.0.0.1:{port}"
    connection.endpoint = connection.endpoint or embedded
    if not _answers(connection.endpoint):
        if connection.endpoint.rstrip("/") != embedded:
            raise Unreachable(f"nothing answers at {connection.endpoint}; drop --endpoint to use the embedded server")
        progress(f"starting Xinference on {embedded} (about 30 s)")
        start(default_server_dir(), port, auth=True, timeout=wait_for)
    target, server = _load(connection, file)
    result = run(server, target, time.monotonic() + wait_for, progress=progress)
    with Reranker(server.endpoint, result.uid, credentials=server.api.credentials) as client:
        sample = client.rerank("What is AI?", _SAMPLE_DOCUMENTS)
    if as_json:
        emit_json(
            {
                "endpoint": result.endpoint,
                "model_uid": result.uid,
                "changed": result.changed,
                "demo": target.deployment.weights.source == "demo",
                "sample": [{"index": r.index, "score": r.score, "document": r.document} for r in sample],
            }
        )
        return
    click.echo(f"deployed {result.uid} on {result.endpoint}" + ("" if result.changed else " (unchanged)"))
    click.echo('sample ranking for "What is AI?":')
    click.echo(results_text(sample))
    if target.deployment.weights.source == "demo":
        from .demo import DEMO_WARNING

        click.echo(f"note: {DEMO_WARNING}")
    click.echo(
        "next:\n"
        f'  xrerank rerank --model-uid {result.uid} "your query" "doc one" "doc two"\n'
        f"  xrerank status --model-uid {result.uid}\n"
        f"  xrerank verify {file}\n"
        "  xrerank down"
    )


_SAMPLE_DOCUMENTS = [
    "Artificial intelligence is the ability of machines to learn and reason.",
    "Apples are rich in dietary fibre.",
    "Paris is the capital of France.",
]


def _answers(endpoint: str) -> bool:
    import requests

    try:
        return requests.get(f"{endpoint}/v1/cluster/auth", timeout=2).ok
    except requests.RequestException:
        return False


@cli.command()
@json_option
def down(as_json):
    """Stop the embedded server that `xrerank up` started (its registrations persist).

    \b
        xrerank down
    """
    from .local import default_server_dir, stop

    outcome = "stopped" if stop(default_server_dir()) else "not running"
    _done({"outcome": outcome}, as_json, outcome)


def _done(document: dict, as_json: bool, text: str) -> None:
    emit_json(document) if as_json else click.echo(text)


def main() -> None:
    cli(prog_name="xrerank")
