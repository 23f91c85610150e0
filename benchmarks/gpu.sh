#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one script for a machine lent for minutes: what runs and what it measured.
#
#     benchmarks/gpu.sh [OUT]        # OUT: where the logs and results go (default benchmarks/results/gpu-<date>)
#     STEPS="1 2" benchmarks/gpu.sh  # only these steps (default: all five)
#
# In order, each step with its own time limit, so that a slow step leaves the rest their turn and what was done comes
# back: (1) the GPU tests (tests/test_distributed.py: CUDA training in fp32, bf16 and fp16, --device auto with
# --compile; NCCL where there are two GPUs); (2) the seconds per epoch of the papers' full-length settings that the
# recipes name (IWAE paper: batch 20, K = 50; the VampPrior paper: batch 100), 2 epochs each, the second timed;
# (3) training speed of one GPU in fp32, bf16, fp16 and with --compile (benchmarks/scaling.py --setups gpu); (4) the
# families stage at 10 epochs with K = 5000 on the GPU (benchmarks/families.py --device cuda), to set beside the
# CPU's table at the same epochs; (5) the whole test suite with --device auto finding the GPU, for any test a GPU
# breaks. Needs MNIST where vaekit finds it ($VAEKIT_DATA or `vaekit data get mnist`) and vaekit importable
# (installed, or PYTHONPATH=src).
set -u
out=${1:-benchmarks/results/gpu-$(date +%F)}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
start=$SECONDS
steps=" ${STEPS:-1 2 3 4 5} "
step() { echo "== $1 ($((SECONDS - start)) s)"; }
want() { [[ $steps == *" $1 "* ]]; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c 'import torch, vaekit; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu",
torch.cuda.get_device_name(), "vaekit", vaekit.__file__)' || exit 1

if want 1; then
step "1. GPU tests"
timeout 240 $py -m pytest -q -p no:cacheprovider -rs tests/test_distributed.py -k "cuda or gpus" 2>&1 |
    tee "$out/tests-gpu.log" | tail -8
fi

# NAME EPOCHS FLAGS...: 2 epochs of full MNIST with a paper's settings (as the recipes give them); the second epoch's
# seconds, and those times the paper's EPOCHS in hours
paper() {
    local name=$1 epochs=$2; shift 2
    timeout 150 $py -m vaekit train "$@" --data mnist --epochs 2 --device cuda --no-progress --overwrite \
        --out "/tmp/gpu-paper-$name" >/dev/null 2>>"$out/errors.log" ||
        { echo "$name failed:"; tail -3 "$out/errors.log"; return; }
    $py - "$name" "$epochs" "/tmp/gpu-paper-$name/metrics.jsonl" <<'EOF' | tee -a "$out/paper-epochs.jsonl"
import json, sys
name, epochs, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [json.loads(line) for line in open(path)]
s = rows[-1]["seconds"]
print(json.dumps({"setting": name, "epoch_s": round(s, 2), "images_per_s": round(rows[-1]["images_per_s"]),
                  "paper_epochs": epochs, "hours_for_paper_epochs": round(s * epochs / 3600, 1),
                  "val_loss": rows[-1]["val_loss"]}))
EOF
}
if want 2; then
step "2. the papers' full-length settings: seconds per epoch"
iwae_lr="--lr 1e-3 --schedule iwae-steps --warmup-steps 0 --kl-warmup-epochs 0"
paper iwae-1-layer-k50 3280 --recipe iwae --hidden-dims 200,200 --latent-dim 50 --iwae-k 50 --batch-size 20 $iwae_lr
paper hvae-iwae-2-layer-k50 3280 --recipe hvae --hidden-dims 200,200 --latent-dim 100 --hvae-top-dim 50 \
    --hvae-top-hidden 100,100 --hvae-k 50 --batch-size 20 $iwae_lr
paper vamp-batch-100 2000 --recipe vamp --batch-size 100 --lr 5e-4 --schedule constant --warmup-steps 0 \
    --kl-warmup-epochs 100 --early-stopping 50 --validation 10000
fi

if want 3; then
step "3. training speed on one GPU"
timeout 200 $py benchmarks/scaling.py --setups gpu --epochs 3 --out "$out/scaling-gpu.json" 2>>"$out/errors.log" ||
    tail -3 "$out/errors.log"
fi

if want 4; then
step "4. the families at 10 epochs, K = 5000, on the GPU"
timeout 300 $py benchmarks/families.py --families vae,iwae,vamp,hvae --epochs 10 --k 5000 --device cuda \
    --out "$out/families-gpu-10-epochs.json" 2>>"$out/errors.log" || tail -3 "$out/errors.log"
fi

if want 5; then
step "5. the whole test suite, the GPU found by --device auto"
timeout "${SUITE_SECONDS:-240}" $py -m pytest -v -p no:cacheprovider -n "${SUITE_PROCESSES:-8}" --dist loadfile \
    2>&1 | tee "$out/tests-suite.log" | grep -E "FAILED|ERROR|passed|failed" | tail -30
fi
step "done"
