#!/usr/bin/env bash
# --fsdp full_shard on GPUs (nccl): the 2-process run of tests/library/trainer/test_distributed.py without
# ACCELERATE_USE_CPU, so accelerate starts a nccl group and FSDP2 shards onto cuda devices.
# Needs 2 or more GPUs (nccl does not run two ranks on one GPU). Usage: bash benchmarks/gpu_check_fsdp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -lt 2 ]; then
  echo "gpu_check_fsdp: $GPUS GPU(s); the nccl check needs 2 or more - skipped"
  exit 0
fi
OUT=$(mktemp -d)
PYTHONPATH=tests/library/trainer OMP_NUM_THREADS=1 "$(dirname "$PY")/torchrun" --nproc_per_node 2 \
  tests/library/trainer/dist_worker.py "$OUT" trapo --fsdp full_shard --max_steps 3 --save_steps 1 --beta 0.01
PYTHONPATH=tests/library/trainer OMP_NUM_THREADS=1 "$(dirname "$PY")/torchrun" --nproc_per_node 2 \
  tests/library/trainer/dist_worker.py "$OUT/offload_bf16" trapo --fsdp "full_shard offload" --bf16 --max_steps 2
"$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1]) / "trapo"
assert (run / "processes.txt").read_text() == "2", "not 2 processes"
for rank in (0, 1):
    counts = json.loads((run / f"elements-{rank}.json").read_text())
    assert counts["local"] <= 0.55 * counts["total"], counts
from transformers import AutoModelForCausalLM
AutoModelForCausalLM.from_pretrained(run / "final")
print("gpu_check_fsdp: nccl, 2 processes: sharded (<= 0.55 each), 3 steps, final/ loads; offload + bf16 run finished")
PY
