"""The declarative commands: deploy, verify, tune, destroy and doctor, each on a deployment file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from xrerank.cli.base import (
    checked,
    cli,
    deadline_of,
    done,
    json_option,
    progress,
    valid_uid,
    wait_option,
    workload_options,
)
from xrerank.cli.render import (
    emit_json,
    family_text,
    findings_text,
    plan_text,
    report_text,
    tune_text,
)
from xrerank.errors import BadInput, ExitCode, XrerankError


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
    from xrerank.deploy.engine import PreflightFailed, VerificationFailed
    from xrerank.deploy.engine import deploy as run

    target, session = context.target(file)
    deadline = deadline_of(wait_for, legacy_wait)
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
        if result.family:
            click.echo(family_text(result.family))
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
@click.option(
    "--model-uid", callback=checked(valid_uid), help="Verify this running model instead of a deployment file's."
)
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
    from xrerank.deploy.engine import verify_model

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
@workload_options
@click.option(
    "--objective", type=click.Choice(["throughput", "latency"]), default="throughput", show_default=True,
    help="The most pairs/s, or the lowest p50 at --concurrency callers (tries spreading a request over replicas).",
)  # fmt: skip
@click.option("--no-write", is_flag=True, help="Print the table, leave FILE as it is.")
@click.option(
    "--chart", type=click.Path(dir_okay=False, path_type=Path),
    help="Draw the trials into this .png or .svg (needs xrerank[charts]).",
)  # fmt: skip
@json_option
@click.pass_obj
def tune(context, file, budget, trial_duration, concurrency, docs, doc_tokens, warmup, objective, no_write, chart,
         as_json):  # fmt: skip
    """Try launch settings on FILE's server within a time budget; write the best into FILE.

    Trials run under a scratch uid (<uid>-tune), one at a time, and are terminated; the running
    deployment is not touched. Apply the result with `xrerank deploy FILE --replace`.

    \b
        xrerank tune configs/demo.yaml --budget 180
        xrerank tune configs/demo.yaml --objective latency --concurrency 1 --chart trials.png
    """
    from xrerank.perf.bench import Workload
    from xrerank.perf.tune import tune as run
    from xrerank.perf.tune import write_best

    if chart is not None:
        from xrerank.perf.chart import check_chart_path

        chart = check_chart_path(chart)
    target, session = context.target(file)
    workload = Workload(docs, doc_tokens, concurrency, trial_duration, warmup=warmup)
    tuning = run(session, target.settings, workload, budget, progress, objective=objective)
    if chart is not None and tuning.trials:
        from xrerank.perf.chart import tune_chart

        title = (
            f"tune {target.settings.uid} for {objective}: {concurrency} callers, {docs} documents of {doc_tokens} words"
        )
        tune_chart(tuning, chart, title)
        progress(f"chart: {chart}")
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
    from xrerank.deploy.engine import destroy as run

    target, session = context.target(file)
    result = run(session, target, deadline_of(wait_for, legacy_wait), purge_weights)
    kept = f" (kept in {target.weights}: {', '.join(result.kept[:5])})" if result.kept else ""
    text = (
        f"{result.model_uid}: terminate: {result.terminate}, unregister: {result.unregister}, weights: {result.weights}"
    )
    done(result.as_dict(), as_json, text + kept)


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
    from xrerank.checks.doctor import FAIL, worst
    from xrerank.deploy.preflight import examine

    if file is not None:
        target, session = context.target(file)
    else:
        from xrerank.xinference.local import default_server_dir, inspect_server_process

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
