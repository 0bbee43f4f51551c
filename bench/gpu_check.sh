#!/usr/bin/env bash
# GPU check for one CUDA machine without network, about 3 minutes:   bash bench/gpu_check.sh   (from the repo root)
# Installs the wheels carried in .whl/ into /tmp/site, where they shadow the machine's own transformers,
# accelerate, tokenizers..., then:
#   1. trains the demo (tiny model, ZeRO-3) on the GPU through `arpo-sft train`, with bf16 and Liger;
#      only if that fails: 1b the same without Liger, 1c with Liger and ZeRO-3 keeping every parameter whole,
#      which tells a Liger + ZeRO-3 problem from a general one;
#   2. bench/gpu_logits_memory.py: peak memory of the 152k-vocabulary logits, plain loss vs Liger.
# A failed step does not stop the next; the exit code is 1 if any failed. Everything printed, each step's log
# and the measurements go to $OUT (the folder the device runner brings back; /tmp/gpu-check-out when unset).
set -euo pipefail

SITE=/tmp/site
WORK=/tmp/gpu-check
OUT_DIR=/tmp/gpu-check-out  # $OUT where the device runner sets it
FAILED=()

header() {
    printf '\n===== %s  [%s, %ss in]\n' "$*" "$(date +%T)" "$SECONDS"
}

record() {  # record STEP EXIT_CODE
    if [[ $2 -eq 0 ]]; then
        echo "[gpu_check] $1: ok"
    else
        echo "[gpu_check] $1: FAILED (exit $2)"
        FAILED+=("$1")
    fi
}

print_versions() {
    nvidia-smi --query-gpu=name,memory.total --format=csv || echo "nvidia-smi: not available"
    python3 - <<'PY'
import importlib.metadata as md
import sys

import torch
import transformers

print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "visible GPUs", torch.cuda.device_count())
for name in ("transformers", "tokenizers", "accelerate", "peft", "trl", "datasets", "llamafactory", "deepspeed",
             "liger-kernel", "triton", "pydantic", "huggingface-hub", "numpy", "pandas", "pyarrow"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "MISSING")
print("transformers imported from", transformers.__file__)
PY
}

check_demo() {  # check_demo OUTPUT_DIR LOG STEPS LIGER(true|false): what the run logged, and whether it held
    local dir=$1 log=$2 steps=$3 liger=$4 status=0
    echo "--- last lines of $log"
    tail -n 20 "$log"
    echo "--- first error lines"
    grep -m 5 -E "Error|error:" "$log" || echo "(none)"
    echo "--- launcher line"
    grep -m1 "torch.distributed.run" "$log" || echo "(no torchrun line)"
    echo "--- last lines of $dir/trainer_log.jsonl"
    tail -n 4 "$dir/trainer_log.jsonl" 2>/dev/null || echo "(missing)"
    if grep -q "Detected DeepSpeed ZeRO-3" "$log"; then echo "ZeRO-3 in log: yes"; else echo "ZeRO-3 in log: NO"; status=1; fi
    if grep -q "Liger kernel has been applied" "$log"; then
        echo "Liger in log: yes"
        [[ $liger == true ]] || status=1
    else
        echo "Liger in log: no"
        [[ $liger == false ]] || status=1
    fi
    python3 - "$dir/trainer_log.jsonl" "$steps" <<'PY' || status=1
import json, math, sys
from pathlib import Path

path, steps = Path(sys.argv[1]), int(sys.argv[2])
rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
losses = [row["loss"] for row in rows if "loss" in row]
done = max((row["current_steps"] for row in rows), default=0)
print(f"steps {done}/{steps}; " + (f"loss {losses[0]:.4f} -> {losses[-1]:.4f}" if losses else "no loss logged"))
sys.exit(0 if losses and all(math.isfinite(x) for x in losses) and done == steps else 1)
PY
    return "$status"
}

demo_step() {  # demo_step NAME SECONDS STEPS LIGER(true|false) TAG key=value...: train the demo, check it
    local name=$1 limit=$2 steps=$3 liger=$4 dir="$WORK/$5" log="$OUT_DIR/$5.log" status
    shift 5
    # The launcher counts the visible GPUs itself (NPROC_PER_NODE unset); its output goes to the log only.
    timeout -k 15 "$limit" python3 -m arpo_train_sft.cli train yaml/demo_cpu.yaml bf16=true \
        enable_liger_kernel="$liger" max_steps="$steps" save_steps="$steps" logging_steps=5 output_dir="$dir" \
        "$@" >"$log" 2>&1 && status=0 || status=$?
    echo "launcher exit code: $status"
    check_demo "$dir" "$log" "$steps" "$liger" || status=1
    record "$name" "$status"
    return "$status"
}

main() {
    local status
    export PYTHONUNBUFFERED=1
    # Nothing outside the machine is reachable: fail at once rather than wait on the hub.
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    mkdir -p "$WORK"

    header "0. install .whl/ into $SITE"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    export PYTHONPATH="$SITE:$PWD"

    header "versions"
    print_versions && status=0 || status=$?
    record versions "$status"

    header "1. demo on the GPU: bf16, Liger, ZeRO-3, 30 steps"
    if ! demo_step "1 demo bf16+liger" 150 30 true demo; then
        header "1b. demo again without Liger, 10 steps"
        demo_step "1b demo bf16 without liger" 100 10 false demo_noliger || true

        header "1c. demo with Liger, ZeRO-3 persisting every parameter, 10 steps"
        python3 - "$WORK/ds_z3_persist.json" <<'PY' || echo "could not write $WORK/ds_z3_persist.json"
import json, sys

config = json.load(open("examples/deepspeed/ds_z3_config.json"))
# Parameters under this many elements are never partitioned; 1e10 keeps the whole model gathered, so
# lm_head.weight is whole when Liger reads it outside the module's own forward.
config["zero_optimization"]["stage3_param_persistence_threshold"] = 10_000_000_000
json.dump(config, open(sys.argv[1], "w"), indent=2)
PY
        demo_step "1c demo bf16+liger, zero3 params persistent" 100 10 true demo_z3persist \
            deepspeed="$WORK/ds_z3_persist.json" || true
    fi
    cp "$WORK/demo/trainer_log.jsonl" "$OUT_DIR/demo_trainer_log.jsonl" 2>/dev/null || true

    header "2. logits memory: plain loss vs Liger at 4096, 8192, 15000 tokens"
    timeout -k 15 150 python3 bench/gpu_logits_memory.py --json "$OUT_DIR/logits_memory.json" && status=0 || status=$?
    record "2 logits memory" "$status"

    header "summary"
    if ((${#FAILED[@]})); then
        printf 'FAILED: %s\n' "${FAILED[@]}"
        return 1
    fi
    echo "all steps passed"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    OUT_DIR="${OUT:-/tmp/gpu-check-out}"
    mkdir -p "$OUT_DIR"
    main 2>&1 | tee "$OUT_DIR/gpu_check.log"
fi
