"""scripts/install.sh chooses the torch build on purpose: the decision, shown by its plan mode."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "install.sh"


def _plan(
    tmp_path, nvidia_smi: str | None = None, system: str | None = None, **env: str
) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if system is not None:  # the kernel `uname -s` reports
        (bin_dir / "uname").write_text(f"#!/bin/sh\necho {system}\n")
        (bin_dir / "uname").chmod(0o755)
    if nvidia_smi is not None:
        (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\n{nvidia_smi}\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    path = f"{bin_dir}:/usr/bin:/bin"  # no nvidia-smi from this machine unless the test puts one
    variables = {"PATH": path, "HOME": str(tmp_path), "XRERANK_INSTALL_PLAN": "1", "XRERANK_VENV": str(tmp_path / "v")}
    return subprocess.run(["bash", str(SCRIPT)], env={**variables, **env}, capture_output=True, text=True)


def test_no_gpu_means_the_cpu_build_local_first_then_pytorchs_cpu_index(tmp_path):
    plan = _plan(tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[0] == "torch: cpu"
    assert "--no-index --no-deps torch==2.13.0+cpu" in plan.stdout and "download.pytorch.org/whl/cpu" in plan.stdout
    assert "torch==2.13.0+cpu -e .[server,test]" in plan.stdout


def test_macos_takes_pypis_own_wheel_which_is_the_cpu_build_there(tmp_path):
    plan = _plan(tmp_path, system="Darwin")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[0] == "torch: cpu-pypi"
    assert "+cpu" not in plan.stdout and "download.pytorch.org" not in plan.stdout
    assert "torch==2.13.0 -e .[server,test]" in plan.stdout


def test_a_gpu_the_driver_lists_means_the_cuda_build(tmp_path):
    plan = _plan(tmp_path, 'echo "GPU 0: NVIDIA H200 (UUID: GPU-0)"')
    assert plan.stdout.splitlines()[0] == "torch: cuda"
    assert "torch==2.13.0 -e" in plan.stdout and "+cpu" not in plan.stdout


def test_an_nvidia_smi_without_a_working_driver_means_cpu(tmp_path):
    plan = _plan(tmp_path, 'echo "NVIDIA-SMI has failed because it could not communicate with the driver"; exit 9')
    assert plan.stdout.splitlines()[0] == "torch: cpu"


@pytest.mark.parametrize("asked, expected", [("cpu", "cpu"), ("cuda", "cuda"), ("skip", "skip")])
def test_what_was_asked_wins(tmp_path, asked, expected):
    plan = _plan(tmp_path, 'echo "GPU 0: NVIDIA H200"' if asked == "cpu" else None, XRERANK_TORCH=asked)
    assert plan.stdout.splitlines()[0] == f"torch: {expected}"
    if asked == "skip":
        assert "torch==" not in plan.stdout  # the environment's own torch is kept


def test_an_unknown_choice_is_refused(tmp_path):
    plan = _plan(tmp_path, XRERANK_TORCH="rocm")
    assert plan.returncode == 2 and "use auto, cpu, cuda or skip" in plan.stderr


def test_the_script_is_what_ci_runs():
    assert "scripts/test.sh" in Path(SCRIPT.parent.parent / ".ci" / "run").read_text()
    assert "scripts/install.sh" in (SCRIPT.parent / "test.sh").read_text()
    assert os.access(SCRIPT, os.X_OK)
