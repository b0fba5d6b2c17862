#!/usr/bin/env bash
# Install xrerank and the server side (Xinference 4.1.0 on CPU torch) into a virtualenv.
#   scripts/install.sh            -> ./.venv
#   XRERANK_VENV=/opt/xr scripts/install.sh
# Order matters: torch 2.13.0 (CPU) first, or pip resolves xinference's unpinned torch to a
# multi-GB CUDA build; then the known-good set; then drop torchvision, whose CUDA-linked wheel
# (pulled in by timm) breaks `import transformers` with "operator torchvision::nms does not exist".
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${XRERANK_VENV:-.venv}"
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" torch==2.13.0
"${pip[@]}" torch==2.13.0 -e '.[server,test]'
"$venv/bin/python" -m pip uninstall --quiet --yes torchvision 2>/dev/null || true
"$venv/bin/python" -c "import transformers, sentence_transformers, xinference, modelscope" \
  || { echo "install.sh: the installed set does not import; see above" >&2; exit 1; }
echo "xrerank installed in $venv ($("$venv/bin/xrerank" --version))" >&2
