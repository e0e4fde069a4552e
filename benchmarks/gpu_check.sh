#!/usr/bin/env bash
# The vLLM engine's tests and the engines benchmark on a CUDA machine with vLLM's GPU build.
# NOT RUN YET: no GPU was lent to the session that wrote it (issue 20). Run from the repository root:
#   bash benchmarks/gpu_check.sh            # builds .venv-gpu once, then tests and benchmarks
# Writes docs/results/engines_gpu.{json,md} and prints the tests' summary.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
if [ ! -f "$VENV/.installed" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    # vLLM's GPU wheel brings the CUDA torch it was built against; trapo follows it.
    "$VENV/bin/pip" install -q -e ".[vllm,lab]" "pytest>=8" "peft>=0.17"
    touch "$VENV/.installed"
fi
"$VENV/bin/python" -c "import torch, vllm; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, 'vllm', vllm.__version__, torch.cuda.get_device_name())"
# The tests build tiny fp32 models on the CPU and move nothing: vLLM runs them on the GPU (its default device),
# HFEngine on the CPU; greedy equality and the 1e-4 log-prob check compare the two.
"$VENV/bin/python" -m pytest -p no:cacheprovider -q tests/library/rollout/test_vllm_engine.py \
    tests/library/trainer/test_vllm_training.py
"$VENV/bin/python" benchmarks/engines.py --prompts 64 --new-tokens 256 --rounds 3 --out docs/results/engines_gpu
