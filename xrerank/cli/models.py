"""Weights, specs and the imperative steps: download, make-demo-model, spec, register, launch,
scale, terminate and unregister."""

from __future__ import annotations

import time
from pathlib import Path

import click

from xrerank.cli.base import (
    checked,
    cli,
    deadline_of,
    demo_family_names,
    done,
    json_option,
    progress,
    valid_name,
    valid_uid,
    wait_option,
)
from xrerank.cli.render import (
    emit_json,
)
from xrerank.defaults import HUBS, MAX_REPLICAS
from xrerank.errors import BadInput


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
    from xrerank.weights import source_for

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
@click.option(
    "--family", type=click.Choice(demo_family_names()), default="xlm-roberta", show_default=True,
    help="The architecture (xlm-roberta: bge-reranker-v2-m3's; qwen3: Qwen3-Reranker's).",
)  # fmt: skip
@json_option
def make_demo_model(directory, family, as_json):
    """Write a tiny random-weight model of a reranker family (default: bge-reranker-v2-m3's).

    For smoke-testing a deployment offline, down the path the real model takes: its scores are
    meaningless.

    \b
        xrerank make-demo-model ./demo-reranker
        xrerank make-demo-model ./demo-qwen3 --family qwen3
    """
    from xrerank.weights.generated import DEMO_WARNING
    from xrerank.weights.generated import make_demo_model as make

    path = make(directory, family=family)
    progress(f"note: {DEMO_WARNING}")
    done({"directory": str(path), "demo": True}, as_json, str(path))


def _spec_options(function):
    function = click.option(
        "--trust-remote-code", is_flag=True, help="Accept a model whose repository's own code runs on the server."
    )(function)
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
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout (- is stdout)."
)
def spec(model_dir, model_name, languages, max_tokens, trust_remote_code, output):
    """Write the custom rerank JSON that Xinference 4.1 accepts (version 2, model_specs).

    \b
        xrerank spec --model-dir ./bge-reranker-v2-m3 --model-name custom-bge-reranker-v2-m3 --max-tokens 1024
    """
    import json

    from xrerank.deploy.engine import spec_for_directory
    from xrerank.files import write_json_atomically

    if model_dir is None:
        raise BadInput("--model-dir is required")
    document = spec_for_directory(model_dir, model_name, languages, max_tokens, trust_remote_code)
    if output and str(output) != "-":
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
def register(context, spec_file, model_dir, model_name, languages, max_tokens, trust_remote_code, persist, replace,
             as_json):  # fmt: skip
    """Register a custom rerank model (idempotent: the same spec again is "unchanged").

    \b
        xrerank register --spec custom-bge-reranker-v2-m3.json
    """
    from xrerank.deploy.engine import load_spec_file, register_model, spec_for_directory

    if (spec_file is None) == (model_dir is None):
        raise BadInput("give either --spec FILE or --model-dir with --model-name")
    if spec_file:
        document = load_spec_file(spec_file, progress, trust_remote_code)
    else:
        document = spec_for_directory(model_dir, model_name, languages, max_tokens, trust_remote_code)
    outcome = register_model(context.session().server, document, persist=persist, replace=replace)
    done({"model_name": document["model_name"], "outcome": outcome}, as_json, f"{document['model_name']}: {outcome}")


@cli.command()
@click.option("--model-name", required=True, callback=checked(valid_name), help="The registered model to launch.")
@click.option("--model-uid", callback=checked(valid_uid), help="Its uid on the server (default: the model name).")
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
    from xrerank.deploy.engine import checked_launch
    from xrerank.xinference.records import LaunchSettings

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
    from xrerank.names import validate_model_name, validate_model_uid

    validate_model_name(model_name)
    validate_model_uid(settings.uid)
    started = time.monotonic()
    deadline = deadline_of(wait_for, legacy_wait)
    outcome = checked_launch(context.session(), settings, deadline, progress, not skip_preflight)
    seconds = time.monotonic() - started
    result = {"model_uid": settings.uid, "replica": replica, "outcome": outcome, "seconds": round(seconds, 1)}
    done(result, as_json, f"{settings.uid}: {outcome}, {replica} replica(s) READY ({seconds:.1f}s)")


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
@click.option("--model-uid", required=True, callback=checked(valid_uid), help="The running model.")
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
    from xrerank.deploy.engine import checked_scale

    session = context.session()
    started = time.monotonic()
    deadline = deadline_of(wait_for, legacy_wait)
    outcome = checked_scale(session, model_uid, replicas, deadline, progress, not skip_preflight)
    seconds = time.monotonic() - started
    document = {"model_uid": model_uid, "replica": replicas, "outcome": outcome, "seconds": round(seconds, 1)}
    done(document, as_json, f"{model_uid}: {outcome}, {replicas} replica(s) ({seconds:.1f}s)")


@cli.command()
@click.option("--model-uid", required=True, callback=checked(valid_uid))
@wait_option(300, "for another xrerank change of this model (a scale, a launch) to finish")
@json_option
@click.pass_obj
def terminate(context, model_uid, wait_for, legacy_wait, as_json):
    """Stop a running model, or one still loading (idempotent: an absent uid is "absent", exit 0).

    \b
        xrerank terminate --model-uid bge-reranker
    """
    from xrerank.deploy.engine import terminate as run

    outcome = run(context.session(), model_uid, deadline_of(wait_for, legacy_wait))
    done({"model_uid": model_uid, "outcome": outcome}, as_json, f"{model_uid}: {outcome}")


@cli.command()
@click.option("--model-name", required=True, callback=checked(valid_name))
@wait_option(300, "for other xrerank processes starting a model on it")
@json_option
@click.pass_obj
def unregister(context, model_name, wait_for, legacy_wait, as_json):
    """Remove a custom model's registration (idempotent). Its weights stay on disk.

    \b
        xrerank unregister --model-name custom-bge-reranker-v2-m3
    """
    from xrerank.deploy.engine import unregister as run

    outcome = run(context.session(), model_name, deadline_of(wait_for, legacy_wait))
    done({"model_name": model_name, "outcome": outcome}, as_json, f"{model_name}: {outcome}")
