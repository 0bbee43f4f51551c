#!/usr/bin/env bash
# Launch ARPO SFT:  bash sft_train.sh [CONFIG] [key=value ...]     (CONFIG defaults to yaml/sft_config.yaml)
# GPUs are counted for you; NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT override
# (multi-node: the same command on every node; or RDZV_ENDPOINT + RDZV_ID for c10d; README "Multi-node").
# Everything else (preflight checks, the torchrun command, training.log) is done by `arpo-sft train`;
# append --skip-preflight to launch even when a check fails (`arpo-sft preflight CONFIG` shows them).
set -euo pipefail

config="${1:-yaml/sft_config.yaml}"
(( $# )) && shift

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Paths inside the shipped configs are relative to the repo root; a CONFIG path is relative to the caller.
[[ -e "$config" ]] && config="$(realpath -- "$config")"
cd "$repo"
if command -v arpo-sft >/dev/null 2>&1; then
    arpo_sft=(arpo-sft)
elif [[ -x "$repo/.venv/bin/arpo-sft" ]]; then
    arpo_sft=("$repo/.venv/bin/arpo-sft")
else
    echo "sft_train.sh: error: arpo-sft is not on PATH; activate the environment you installed arpo-train-sft into (in a checkout: \`make install\`)" >&2
    exit 2
fi

exec "${arpo_sft[@]}" train "$config" "$@"
