#!/usr/bin/env bash
# The checks that need a CUDA machine (prepared on a CPU-only host, not run there). About 10 minutes
# on one GPU; every step has its own time limit and the script goes on after a failed step.
#
#   scripts/device_check.sh            results under $OUT (default /tmp/device_check)
#
# 1. the GPU: torch's CUDA build, the visible GPUs;
# 2. the trainer's unit tests on CUDA (the trainer picks CUDA when visible; the DDP tests pin
#    their gloo ranks to the CPU, so they run as on CI);
# 3. training with mixed precision (train.amp = true, fp16 autocast + GradScaler) in process, then
#    the DDP path under torchrun with NCCL, one rank per GPU (benchmarks/ddp.py --device cuda);
#    with one GPU that is one NCCL rank, whose weights may differ from the in-process run in the
#    last bits (CUDA's atomic scatter-adds are not deterministic): the JSON says;
# 4. MoGE vs MMoE training throughput on the GPU, sampling vs compute (benchmarks/bench_moge.py).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
OUT="${OUT:-/tmp/device_check}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
step() {  # step NAME SECONDS CMD...: run CMD with a time limit, log to $OUT/NAME.log, report its status
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc in $((SECONDS - t0))s; tail:"; tail -n 8 "$OUT/$name.log" | sed 's/^/   | /'
}

step gpu 60 bash -c "nvidia-smi -L; $PY -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.device_count(), torch.cuda.get_device_name(0))'"
NGPU=$($PY -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
if [ "${NGPU:-0}" -lt 1 ]; then echo "no CUDA device visible: nothing to check"; exit 1; fi

step unit_tests_cuda 240 "$PY" -m pytest -q -p no:cacheprovider -m "not slow" \
  tests/unit/train/test_trainer.py tests/unit/train/test_distributed.py
step amp_and_ddp_nccl 300 "$PY" benchmarks/ddp.py --device cuda --backend nccl --nproc "$NGPU" \
  --epochs 3 --users 3000 --json "$OUT/ddp_cuda_x${NGPU}.json"
step moge_vs_mmoe 300 "$PY" benchmarks/bench_moge.py --dataset synthetic --steps 60 --root "$OUT/lake"
rm -rf "$OUT/lake"  # rebuilt on the next run; the logs and the JSON stay
echo "results in $OUT"
