#!/usr/bin/env bash
# The benchmarks on one CUDA machine, as recorded in benchmarks/RESULTS.md ("CUDA" section).
#
#   bash benchmarks/gpu.sh small     # PyTorch-backend unit tests on the GPU, SmolLM2-135M-shaped runs, execution
#   bash benchmarks/gpu.sh 8b        # Llama-3.1-8B-shaped DPO and generation (about 40 GB of GPU memory)
#   bash benchmarks/gpu.sh vllm      # the vLLM generation engine against the PyTorch path, both shapes
#                                    # (needs vLLM: VLLM_PYTHON names its Python when it is another venv)
#   bash benchmarks/gpu.sh learning  # the learning benchmark at larger sizes: 5 seeds, 5 iterations, 32 problems,
#                                    # 100 held-out problems, Score-DPO, DPO and SFT (needs the embedded model)
#
# Without the embedded model installed, set TOKENIZER to an HF tokenizer folder (SmolLM2's): the
# models are then the real architectures with random weights (`--model random:NAME`), which is what
# throughput and memory depend on. JSON lines go to $OUT/results.jsonl, logs to $OUT/log.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
export SCOREFLOW_CACHE=${SCOREFLOW_CACHE:-/tmp/scoreflow-cache}
tok=()
if [ -n "${TOKENIZER:-}" ]; then tok=(--tokenizer "$TOKENIZER"); export SCOREFLOW_TEST_TOKENIZER=$TOKENIZER; fi
log="$out/log.txt"

bench() {  # bench SECONDS SCRIPT ARGS...: one JSON line appended to results.jsonl, stderr to the log
  local limit=$1; shift
  echo "== $(date -u +%T) $*" | tee -a "$log"
  if timeout "$limit" python3 "benchmarks/$@" 2>>"$log" | tail -n 1 | tee -a "$out/results.jsonl"; then :; fi
  echo "   $(date -u +%T) done" >>"$log"
}

case "${1:-small}" in
  small)
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
      python3 -c "import torch, transformers, peft, trl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__)"
    } 2>&1 | tee -a "$log"
    echo "== $(date -u +%T) PyTorch-backend tests on the GPU" | tee -a "$log"
    SCOREFLOW_TEST_DEVICE=cuda timeout 300 python3 -m pytest -q -p no:cacheprovider \
      tests/test_torch_train.py tests/test_torch_loss.py 2>&1 | tail -n 15 | tee -a "$log"
    bench 300 dpo_step.py --model random:smollm2-135m "${tok[@]}" --problems 8 --batch-size 8 --steps 16
    bench 300 generation.py --model random:smollm2-135m "${tok[@]}" --batch-size 8 --max-new-tokens 256
    bench 240 execution.py
    ;;
  8b)
    bench 600 dpo_step.py --model random:llama-3.1-8b "${tok[@]}" --problems 8 --batch-size 8 --steps 8 \
      --gradient-checkpointing on
    bench 300 generation.py --model random:llama-3.1-8b "${tok[@]}" --batch-size 8 --max-new-tokens 128
    ;;
  vllm)
    vpy=(--vllm-python "${VLLM_PYTHON:-$(command -v python3)}")
    bench 600 generation.py --model random:smollm2-135m "${tok[@]}" --batch-size 8 --max-new-tokens 256 \
      --engine vllm "${vpy[@]}"
    bench 900 generation.py --model random:llama-3.1-8b "${tok[@]}" --batch-size 8 --max-new-tokens 128 \
      --engine vllm "${vpy[@]}"
    ;;
  learning)  # the real model: the embedded SmolLM2 as generator and executor, on the GPU
    for loss in score-dpo dpo sft; do
      echo "== $(date -u +%T) learning.py --loss $loss" | tee -a "$log"
      timeout 7200 python3 benchmarks/learning.py --loss "$loss" --seeds 0 1 2 3 4 --iterations 5 --problems 32 \
        -k 8 --pairs 64 --test-problems 100 --set generator.device=cuda --set generator.batch_size=64 \
        --set executor.batch_size=64 --runs-dir "$out/learning-runs" --out "$out/learning-$loss.json" \
        2>>"$log" | tail -n 1 | tee -a "$out/results.jsonl"
    done
    ;;
esac
