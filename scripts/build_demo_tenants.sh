#!/usr/bin/env bash
# Train the three demo tenants (classification, retrieval, segmentation) with R-Adapter on the
# embedded backbone, evaluate each, and copy the adapters into service/demo_tenants/<tenant>/v1.
# Usage: scripts/build_demo_tenants.sh [DATA_DIR] [RUN_DIR]
# DATA_DIR defaults to the `radapter data build` output; RUN_DIR (default runs/demo-tenants) keeps
# checkpoints and evaluation results out of git.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-${RADAPTER_CACHE:-$HOME/.cache/radapter}/emoji-renditions}
runs=${2:-runs/demo-tenants}
weights=training/embedded/radapter-emoji-vit.safetensors
# Short runs of one to two hundred steps: an EMA momentum of 0.999 would keep the average close to the
# zero-initialised adapters, so 0.99 averages over roughly the last 100 steps instead.
common=(--method r-adapter --arch radapter-emoji-vit --pretrained "$weights" --data "$data"
        --seed 0 --ema-momentum 0.99 --warmup-steps 20 --batch-size 64)

radapter train --task classification "${common[@]}" --epochs 10 --output "$runs/classify"
radapter train --task retrieval "${common[@]}" --epochs 8 --output "$runs/retrieve"
radapter train --task segmentation "${common[@]}" --epochs 1 --output "$runs/segment"

for pair in classify:classification retrieve:retrieval segment:segmentation; do
    name=${pair%%:*}
    task=${pair##*:}
    radapter evaluate --data "$data" --run "$runs/$name" --zero-shot --task "$task" \
        --output "$runs/$name/evaluation"
    target=service/demo_tenants/demo-$name/v1
    rm -rf "$target"
    mkdir -p "$target"
    cp "$runs/$name/adapter/adapter.safetensors" "$runs/$name/adapter/adapter.json" "$target/"
done
du -sh service/demo_tenants
