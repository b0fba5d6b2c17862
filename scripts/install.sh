#!/usr/bin/env bash
# Install xrerank and the server side (Xinference 4.1.0) into a virtualenv, choosing the torch build on purpose.
#   scripts/install.sh                  -> ./.venv
#   XRERANK_VENV=/opt/xr scripts/install.sh
#   XRERANK_TORCH=auto|cpu|cuda|skip    (default auto: cuda where `nvidia-smi -L` lists a GPU, else cpu)
#   XRERANK_INSTALL_PLAN=1              print the torch decision and the commands, install nothing
#
# Order matters: torch 2.13.0 first, or pip resolves xinference's unpinned torch to a multi-GB
# CUDA build on any Linux machine; then the known-good set; then drop torchvision, whose wheel
# (pulled in by timm) breaks `import transformers` with "operator torchvision::nms does not exist".
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${XRERANK_VENV:-.venv}"
python="${PYTHON:-python3}"
TORCH_VERSION=2.13.0
CPU_INDEX="${XRERANK_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"

# The build: what was asked, else cuda on a machine whose driver lists a GPU, else cpu.
torch_choice() {
  local asked="${XRERANK_TORCH:-auto}"
  case "$asked" in
    cpu|cuda|skip) echo "$asked" ;;
    auto)
      if [ "$(uname -s)" = "Linux" ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
        echo cuda
      else
        echo cpu
      fi ;;
    *) echo "install.sh: XRERANK_TORCH=$asked; use auto, cpu, cuda or skip" >&2; return 2 ;;
  esac
}

run() {  # a command, or its line in the plan
  if [ -n "${XRERANK_INSTALL_PLAN:-}" ]; then echo "+ $*"; else "$@"; fi
}

choice="$(torch_choice)"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if [ "$choice" = cpu ] && [ "$(uname -s)" != "Linux" ]; then
  choice=cpu-pypi  # macOS and Windows: PyPI's own wheel is the CPU build (the CPU index has no +cpu one there)
fi
if [ -n "${XRERANK_INSTALL_PLAN:-}" ]; then
  echo "torch: $choice"
else
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
fi
case "$choice" in
  cpu-pypi)
    run "${pip[@]}" "torch==$TORCH_VERSION"
    torch_pin="torch==$TORCH_VERSION" ;;
  cpu)
    # The CPU build: the wheel alone from a local wheelhouse or pip's cache if one is there (no
    # network; its dependencies come with the next step), else from PyTorch's CPU index. Plain
    # `pip install torch` on Linux takes the CUDA build from PyPI (~3 GB more).
    if [ -n "${XRERANK_INSTALL_PLAN:-}" ]; then
      echo "+ ${pip[*]} --no-index --no-deps torch==$TORCH_VERSION+cpu   || ${pip[*]} torch==$TORCH_VERSION+cpu --index-url $CPU_INDEX --extra-index-url https://pypi.org/simple"
    elif ! "${pip[@]}" --no-index --no-deps "torch==$TORCH_VERSION+cpu" 2>/dev/null; then
      "${pip[@]}" "torch==$TORCH_VERSION+cpu" --index-url "$CPU_INDEX" --extra-index-url https://pypi.org/simple
    fi
    torch_pin="torch==$TORCH_VERSION+cpu" ;;
  cuda)
    run "${pip[@]}" "torch==$TORCH_VERSION"  # PyPI's Linux wheel is the CUDA build
    torch_pin="torch==$TORCH_VERSION" ;;
  skip)
    torch_pin="" ;;  # keep the torch already in the environment (a CUDA image, say)
esac
run "${pip[@]}" ${torch_pin:+"$torch_pin"} -e '.[server,test]'
run "$venv/bin/python" -m pip uninstall --quiet --yes torchvision || true
if [ -n "${XRERANK_INSTALL_PLAN:-}" ]; then exit 0; fi
"$venv/bin/python" -c "import transformers, sentence_transformers, xinference, modelscope" \
  || { echo "install.sh: the installed set does not import; see above" >&2; exit 1; }
echo "xrerank installed in $venv ($("$venv/bin/xrerank" --version)), torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')" >&2
