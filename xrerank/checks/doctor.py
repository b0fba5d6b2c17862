"""Preflight: the known traps and capacity problems, found before a deploy costs minutes or a GPU.

Each finding is ok / warn / fail with one line of evidence and, unless ok, one line of fix.

Memory per replica (documented in the README, checked against measured replicas):

    weights      = parameters x bytes per value (4 fp32, 2 fp16)
    activations  = batch x max_tokens x (intermediate + 6 x hidden) x bytes       hidden states, FFN
                 + batch x heads x max_tokens^2 x bytes                          attention scores
    runtime      = 0.6 GB of RAM per replica process (torch + transformers + sentence-transformers,
                   measured on Xinference 4.1.0), or 0.5 GB of VRAM for the CUDA context on a GPU

`batch` is the pairs one forward pass takes on the server, per family (the CrossEncoder's 32, the
Qwen3 path's micro-batch of 4); a forward pass holds one layer's activations.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from xrerank.errors import XrerankError
from xrerank.families import Family, recognise
from xrerank.weights import read_config_file
from xrerank.xinference.records import LaunchSettings, Worker
from xrerank.xinference.server import Xinference, threads_per_replica

OK, WARN, FAIL = "ok", "warn", "fail"
KNOWN_GOOD = {
    "torch": "2.13.0",
    "transformers": "5.17.0",
    "sentence-transformers": "6.2.0",
    "xinference": "4.1.0",
    "xinference-client": "4.1.0",
}
GIB = 2**30
CPU_RUNTIME_BYTES = int(0.6 * GIB)
CUDA_CONTEXT_BYTES = int(0.5 * GIB)
HEADROOM = 0.8  # plan to use at most 80% of what a worker reports free


@dataclass(frozen=True)
class Finding:
    area: str
    check: str
    level: str
    evidence: str
    fix: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


# --- this machine -----------------------------------------------------------------------------

_PROBE = r"""
import json, importlib.metadata as metadata
report = {"versions": {}, "imports": {}}
for dist in ("torch", "transformers", "sentence-transformers", "modelscope", "xinference",
             "xinference-client", "torchvision", "keras", "tf-keras"):
    try:
        report["versions"][dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:
        report["versions"][dist] = None
def attempt(name, code):
    scope = {}
    try:
        exec(code, scope)
        report["imports"][name] = ["ok", scope.get("result")]
    except BaseException as exc:
        report["imports"][name] = ["error", (type(exc).__name__ + ": " + str(exc)).splitlines()[0][:300]]
if report["versions"]["torchvision"]:
    attempt("torchvision", "import torchvision")
if report["versions"]["torch"]:
    attempt("torch", "import torch; result = torch.cuda.device_count()")
if report["versions"]["transformers"]:
    attempt("transformers", "from transformers import XLMRobertaForSequenceClassification")
if report["versions"]["sentence-transformers"]:
    attempt("cross_encoder", "from sentence_transformers import CrossEncoder")
print(json.dumps(report))
"""


def probe_machine(python: str = sys.executable, env: dict | None = None, timeout: float = 120.0) -> dict:
    """Import the rerank stack in a fresh interpreter, so a broken package cannot break us."""
    try:
        done = subprocess.run(
            [python, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise XrerankError(f"importing the rerank stack took over {timeout:g}s") from None
    if done.returncode != 0:
        raise XrerankError(f"the environment probe failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine_findings(report: dict) -> list[Finding]:
    versions, imports = report["versions"], report["imports"]
    findings = [_python_finding()]
    for dist, good in KNOWN_GOOD.items():
        findings.append(_version_finding(dist, versions.get(dist), good))
    traps = [_torchvision_finding(versions.get("torchvision"), imports.get("torchvision")), _keras_finding(versions)]
    findings += traps
    cause = next((trap for trap in traps if trap.level == FAIL), None)
    for name, what in (("transformers", "transformers' XLM-RoBERTa classifier"), ("cross_encoder", "CrossEncoder")):
        if name in imports:
            findings.append(_import_finding(f"import {name}", what, imports[name], cause))
    if "torch" in imports and imports["torch"][0] == "ok":
        gpus = imports["torch"][1]
        findings.append(Finding("machine", "gpu", OK, f"torch sees {gpus} GPU(s)" + ("" if gpus else ": CPU only")))
    return findings


def _python_finding() -> Finding:
    return Finding("machine", "python", OK, f"Python {'.'.join(map(str, sys.version_info[:3]))} at {sys.executable}")


def _version_finding(dist: str, version: str | None, good: str) -> Finding:
    if version is None:
        return Finding(
            "machine",
            dist,
            WARN,
            f"{dist} is not installed here",
            "needed only where the server runs: scripts/install.sh installs the known-good set",
        )
    if version.split("+")[0] != good:
        return Finding("machine", dist, WARN, f"{dist} {version}; tested with {good}", f"pip install {dist}=={good}")
    return Finding("machine", dist, OK, f"{dist} {version}")


def _torchvision_finding(version: str | None, imported: list | None) -> Finding:
    if version is None:
        return Finding("machine", "torchvision", OK, "torchvision not installed (the rerank path does not need it)")
    if imported and imported[0] == "error":
        return Finding(
            "machine",
            "torchvision",
            FAIL,
            f"torchvision {version} fails to import ({imported[1]}): a build that does not match torch, "
            "and transformers breaks with it",
            "pip uninstall -y torchvision (timm pulls it in; nothing in the rerank path uses it)",
        )
    return Finding("machine", "torchvision", OK, f"torchvision {version} imports")


def _keras_finding(versions: dict) -> Finding:
    keras, transformers = versions.get("keras"), versions.get("transformers")
    if keras is None:
        return Finding("machine", "keras", OK, "keras not installed")
    if transformers and int(transformers.split(".")[0]) >= 5:
        return Finding("machine", "keras", OK, f"keras {keras} present; transformers {transformers} does not use it")
    if int(keras.split(".")[0]) >= 3 and versions.get("tf-keras") is None:
        return Finding(
            "machine",
            "keras",
            FAIL,
            f"standalone keras {keras} with transformers {transformers}: "
            "'cannot import name Model from keras' when transformers loads",
            "pip install tf-keras",
        )
    return Finding("machine", "keras", OK, f"keras {keras} with tf-keras or Keras 2")


def _import_finding(name: str, what: str, imported: list, cause: Finding | None) -> Finding:
    if imported[0] == "ok":
        return Finding("machine", name, OK, f"{what} imports")
    error = imported[1]
    if cause is not None:
        fix = f"{cause.fix} (the {cause.check} failure above is the likely cause)"
    else:
        fix = "reinstall the known-good set with scripts/install.sh"
    return Finding("machine", name, FAIL, f"{what} fails to import: {error}", fix)


# --- the server -----------------------------------------------------------------------------

ADMIN_SCOPES = {"models:write", "models:register"}  # launch, terminate, scale; register, unregister


def may_administer(server: Xinference) -> tuple[bool, str]:
    """May these credentials register and launch? Asked of the login's own permissions (read-only);
    an API key is refused that question, as it is refused every admin operation."""
    from xrerank.errors import Unreachable

    if not server.credentials.username:
        return False, "these credentials are an API key, and API keys may only query and rerank"
    try:
        granted = server.permissions()
    except Unreachable as exc:
        return False, str(exc)
    if "admin" in granted or granted >= ADMIN_SCOPES:
        return True, ""
    missing = ", ".join(sorted(ADMIN_SCOPES - granted))
    return False, f"{server.credentials.username!r} lacks the permission(s) {missing}"


def server_findings(server: Xinference, needs_admin: bool) -> tuple[list[Finding], list[Worker]]:
    """Reachability, version, auth, what the credentials may do, and the workers."""
    from xrerank.client.http import Banned, Refused
    from xrerank.errors import Unreachable

    try:
        auth = server.auth_enabled()  # the one endpoint that answers without credentials
    except Unreachable as exc:
        return [Finding("server", "reachable", FAIL, str(exc), "check --endpoint")], []
    findings = [Finding("server", "reachable", OK, f"{server.endpoint} answers as an Xinference REST API")]
    try:
        version = server.version()
    except Refused:
        version = None
    except Banned as exc:
        evidence, _, fix = str(exc).partition("; the ban ends")
        return findings + [Finding("server", "ban", FAIL, evidence, "the ban ends" + fix)], []
    if version is None:
        findings.append(Finding("server", "version", WARN, "not visible to these credentials", "give a user login"))
    elif version != KNOWN_GOOD["xinference"]:
        findings.append(Finding("server", "version", WARN, f"Xinference {version}; tested with 4.1.0", ""))
    else:
        findings.append(Finding("server", "version", OK, f"Xinference {version}"))
    credentials = server.api.credentials
    if not auth:
        findings.append(Finding("server", "auth", OK, "auth is off: no credentials needed"))
    else:
        if not credentials:
            findings.append(
                Finding(
                    "server",
                    "auth",
                    FAIL,
                    "auth is on and no credentials were given: every call is refused",
                    "give --api-key (query and rerank) or --username/--password (admin)",
                )  # fmt: skip
            )
            return findings, []
        kind = "user login" if credentials.username else "API key"
        findings.append(Finding("server", "auth", OK, f"auth is on; credentials given: {kind}"))
        admin, refusal = may_administer(server)
        if admin:
            expiry = "; its token lasts 30 min and xrerank logs in again" if credentials.username else ""
            findings.append(Finding("server", "credentials", OK, f"may register and launch{expiry}"))
        else:
            level = FAIL if needs_admin else WARN
            findings.append(
                Finding(
                    "server",
                    "credentials",
                    level,
                    f"may not register or launch: {refusal}",
                    "give --username/--password of a user (API keys may only query and rerank)",
                )
            )
    try:
        workers = server.workers()
    except Refused:
        findings.append(Finding("server", "workers", WARN, "not visible to these credentials", "give a user login"))
        return findings, []
    for worker in workers:
        findings.append(
            Finding(
                "server",
                f"worker {worker.address}",
                OK,
                f"{worker.cpu_count} cores, {(worker.mem_available or 0) / GIB:.1f} GiB RAM free, "
                f"{worker.gpu_count} GPU(s), {(worker.gpu_vram_available or 0) / GIB:.1f} GiB VRAM free",
            )
        )
    if not workers:
        findings.append(Finding("server", "workers", FAIL, "the server has no workers", "start a worker"))
    return findings, workers


# --- the deployment -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    weights: int
    activations: int
    runtime: int

    @property
    def total(self) -> int:
        return self.weights + self.activations + self.runtime


def count_parameters(model_dir: Path) -> int | None:
    """Exact, from the safetensors headers (no weights are loaded); None without safetensors."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with file.open("rb") as stream:
            (length,) = struct.unpack("<Q", stream.read(8))
            header = json.loads(stream.read(length))
        total += sum(math.prod(entry["shape"]) for key, entry in header.items() if key != "__metadata__")
    return total


def parameters_from_config(config: dict) -> int:
    """The parameters from config.json, counted as the model's family is built (an encoder's layers
    are not a decoder's); a family xrerank does not know is counted as an encoder."""
    return family_of(config).parameters(config)


def family_of(config: dict) -> Family:
    return recognise(config) or Family()


def estimate_memory(config: dict, parameters: int, max_tokens: int, fp16: bool, on_gpu: bool) -> MemoryEstimate:
    width = 2 if fp16 else 4
    hidden = config["hidden_size"]
    intermediate = config.get("intermediate_size", 4 * hidden)
    heads = config.get("num_attention_heads", 1)
    batch = family_of(config).batch_pairs  # the pairs one forward pass takes on the server
    activations = batch * max_tokens * (intermediate + 6 * hidden) * width
    activations += batch * heads * max_tokens * max_tokens * width
    runtime = CUDA_CONTEXT_BYTES if on_gpu else CPU_RUNTIME_BYTES
    return MemoryEstimate(parameters, parameters * width, activations, runtime)


def deployment_findings(
    settings: LaunchSettings, max_tokens: int | None, workers: list[Worker], config: dict | None, parameters: int | None
) -> list[Finding]:
    """Max tokens, fp16, GPUs, threads and memory of a launch against the server's workers."""
    findings: list[Finding] = []
    workers = settings.target_workers(workers)
    if not workers:
        return [Finding("deployment", "placement", FAIL, f"no worker at {settings.worker_ip}", "check worker_ip")]
    gpus_on_workers = max((w.gpu_count for w in workers), default=0)
    on_gpu = settings.wants_gpu or (settings.device != "cpu" and gpus_on_workers > 0)
    if settings.use_fp16 and not on_gpu:
        findings.append(
            Finding("deployment", "fp16", FAIL, "fp16 on CPU runs about 6x slower than fp32", "set use_fp16: false")
        )
    if settings.gpu_idx:
        missing = sorted({i for i in settings.gpu_idx if i >= gpus_on_workers})
        level, evidence = (
            (FAIL, f"GPU indexes {missing} do not exist: the workers have {gpus_on_workers} GPU(s)")
            if missing
            else (OK, f"GPU indexes {sorted(set(settings.gpu_idx))} exist")
        )
        findings.append(
            Finding("deployment", "gpu_idx", level, evidence, "use indexes the worker sees" if missing else "")
        )
    if settings.n_gpu and settings.n_gpu > gpus_on_workers:
        findings.append(
            Finding(
                "deployment",
                "n_gpu",
                FAIL,
                f"{settings.n_gpu} GPU(s) per replica, workers have {gpus_on_workers}",
                "lower n_gpu",
            )
        )
    if not on_gpu:
        cores = min(int(w.cpu_count or 1) for w in workers)
        per_worker = settings.replicas_per_worker(len(workers))
        threads = settings.threads_per_replica or threads_per_replica(cores, per_worker)
        level = WARN if threads * per_worker > cores else OK
        findings.append(
            Finding(
                "deployment",
                "threads",
                level,
                f"{per_worker} replica(s) x {threads} thread(s) on {cores} cores",
                "lower threads_per_replica to cores / replicas" if level == WARN else "",
            )
        )
    if config is None:
        findings.append(
            Finding("deployment", "memory", WARN, "the model's config.json is not readable here", "download first")
        )
        return findings
    limit = family_of(config).token_limit(config) or 0
    max_tokens = max_tokens or limit
    if max_tokens > limit:
        findings.append(
            Finding(
                "deployment",
                "max_tokens",
                FAIL,
                f"max_tokens {max_tokens} exceeds the model's {limit}",
                f"max_tokens: {limit}",
            )
        )
        max_tokens = limit
    try:
        estimate = estimate_memory(
            config, parameters or parameters_from_config(config), max_tokens, settings.use_fp16, on_gpu
        )
    except (KeyError, TypeError, ValueError) as exc:
        reason = f"lacks {exc}" if isinstance(exc, KeyError) else f"holds a value of the wrong type ({exc})"
        findings.append(Finding("deployment", "memory", WARN, f"config.json {reason}: memory not estimated", ""))
        return findings
    findings.append(_capacity_finding(estimate, settings, workers, on_gpu, max_tokens))
    return findings


def replicas_per_gpu_on(settings: LaunchSettings, worker: Worker, replicas: int) -> dict[int, int]:
    """How many of `replicas` replicas each GPU of `worker` holds: gpu_idx says; else Xinference
    fills the GPUs in turn, and the freest first is the kindest guess."""
    per_gpu = settings.replicas_per_gpu()
    if per_gpu:
        return per_gpu
    indexes = sorted(range(worker.gpu_count), key=worker.free_on_gpu, reverse=True) or [0]
    counts: dict[int, int] = {}
    for slot in range(replicas * (settings.n_gpu or 1)):
        index = indexes[slot % len(indexes)]
        counts[index] = counts.get(index, 0) + 1
    return counts


def tightest_gpu(settings: LaunchSettings, workers: list[Worker], need: int) -> tuple[int, int, int]:
    """(GPU index, replicas on it, its free bytes) for the GPU the launch fills closest to its free
    memory, GPU by GPU: a full GPU 0 beside an empty GPU 1 is not half free."""
    per_worker = settings.replicas_per_worker(len(workers))
    placements = [
        (index, count, worker.free_on_gpu(index))
        for worker in workers
        for index, count in replicas_per_gpu_on(settings, worker, per_worker).items()
    ]
    return max(placements, key=lambda p: (p[1] * need - p[2] * HEADROOM, p[1]))


def _capacity_finding(
    estimate: MemoryEstimate, settings: LaunchSettings, workers: list[Worker], on_gpu: bool, max_tokens: int
) -> Finding:
    need = estimate.total
    shape = (
        f"{estimate.parameters / 1e6:.0f}M parameters: {estimate.weights / GIB:.2f} GiB weights + "
        f"{estimate.activations / GIB:.2f} GiB activations at {max_tokens} tokens + "
        f"{estimate.runtime / GIB:.1f} GiB runtime"
    )
    if on_gpu:
        index, sharing, available = tightest_gpu(settings, workers, need)
        need *= sharing
        where = f"{available / GIB:.1f} GiB free on GPU {index} for the {sharing} replica(s) it holds"
    else:
        per_worker = settings.replicas_per_worker(len(workers))
        available = min((w.mem_available or 0 for w in workers), default=0)
        need *= per_worker
        where = f"{available / GIB:.1f} GiB RAM free for {per_worker} replica(s)"
    fits = need <= available * HEADROOM
    evidence = f"needs {need / GIB:.2f} GiB ({shape}, per replica); {where}"
    if fits:
        return Finding("deployment", "memory", OK, evidence)
    return Finding(
        "deployment",
        "memory",
        FAIL,
        evidence,
        "lower max_tokens (512-1024 is usual), use fp16 on GPU, fewer replicas, or a larger worker",
    )


def family_findings(config: dict, server_here: bool, trusting: bool | None = None) -> list[Finding]:
    """The model's family and the path Xinference 4.1 scores it by; the packages that path needs in the
    server's Python (checked when the server runs on this machine); the code a repository runs, and
    whether the server runs it (`trusting`: known for xrerank's embedded server, else None)."""
    import importlib.util

    family = recognise(config)
    if family is None:
        found = f"architectures {config.get('architectures')}, model_type {config.get('model_type')!r}"
        return [Finding("deployment", "family", FAIL, f"{found} is no reranker family xrerank knows",
                        "see docs/families.md for the supported families")]  # fmt: skip
    findings = [Finding("deployment", "family", OK, f"{family.title}, scored by {family.route}")]
    for package in family.server_packages:
        if not server_here:
            findings.append(Finding("deployment", f"package {package}", WARN,
                                    "the server's Python needs it; not checkable from this machine",
                                    f"pip install {package} beside xinference on the server"))  # fmt: skip
        elif importlib.util.find_spec(package) is None:
            findings.append(Finding("deployment", f"package {package}", FAIL,
                                    f"{family.title} needs {package}, which the server's Python lacks",
                                    f"pip install 'xrerank[{family.server_extra}]'" if family.server_extra
                                    else f"pip install {package}"))  # fmt: skip
    if family.runs_repository_code and trusting is False:
        evidence = "the model ships its own code; the embedded server runs without XINFERENCE_TRUST_REMOTE_CODE=1"
        fix = "xrerank down, then xrerank up FILE (it restarts trusting; its models stop)"
        findings.append(Finding("deployment", "repository code", FAIL, evidence, fix))
    elif family.runs_repository_code:
        findings.append(Finding("deployment", "repository code", WARN,
                                "the model's repository ships code that the server will run (auto_map)",
                                "read it first; the server must run with XINFERENCE_TRUST_REMOTE_CODE=1"))  # fmt: skip
    return findings


def worst(findings: list[Finding]) -> str:
    levels = {finding.level for finding in findings}
    return FAIL if FAIL in levels else WARN if WARN in levels else OK


def launch_preflight(server: Xinference, settings: LaunchSettings, machine: bool) -> list[Finding]:
    """`xrerank launch`'s checks: the registered model's weights, if readable here, against the workers."""
    findings = machine_findings(probe_machine()) if machine else []
    server_part, workers = server_findings(server, needs_admin=True)
    findings += server_part
    if not workers:
        return findings
    return findings + _registered_model_findings(server, settings, workers)


def scale_preflight(server: Xinference, model_uid: str, count: int, use_fp16: bool = False) -> list[Finding]:
    """`xrerank scale`'s checks: the replicas it would add, placed as the running ones are, against what
    the workers have free now (the running replicas hold their memory already)."""
    findings, workers = server_findings(server, needs_admin=True)
    instance = server.instance(model_uid) if workers else None
    if instance is None:
        return findings  # scale itself says the model is not running
    running = [r for r in server.replicas(model_uid) if not r.lost]
    adding = count - len(running)
    if adding <= 0:
        return findings
    gpus = running[0].gpu_idx if running else ()
    settings = LaunchSettings(
        instance.model_name, model_uid, replica=adding, n_gpu=len(gpus) or None,
        device="cuda" if gpus else "cpu", use_fp16=use_fp16 and bool(gpus),
    )  # fmt: skip
    # Threads are the running replicas' (a new replica copies them): only room and the model are checked.
    checked = [f for f in _registered_model_findings(server, settings, workers) if f.check != "threads"]
    return findings + checked


def _registered_model_findings(server: Xinference, settings: LaunchSettings, workers: list[Worker]) -> list[Finding]:
    """The launch against the workers, sized by the registered model's weights where readable here."""
    registration = server.registration(settings.model_name)
    if registration is None:
        return [
            Finding(
                "deployment", "registration", FAIL,
                f"{settings.model_name} is not registered: no replica of it can load",
                "register it again (xrerank register, or xrerank deploy FILE)",
            )
        ]  # fmt: skip
    directory = Path(registration.model_uri) if registration.model_uri else None
    config = read_config_file(directory) if directory else None
    parameters = count_parameters(directory) if config is not None and directory else None
    return deployment_findings(settings, registration.max_tokens, workers, config, parameters)
