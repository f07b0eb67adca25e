#!/usr/bin/env bash
# The main job on the embedded default signal (scikit-image's astronaut, 256x256 RGB):
#   ingest it into a Zarr store, train a Local-Global INR with 2 workers under accelerate launch
#   on the CPU, export the model, crop it to a quarter of the image and render a region of what is
#   left, printing PSNR and weights before and after the crop.
# Settings: STEPS (default 1000), WORKERS (default 2), RUN (default storage/runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-storage/runs/demo}
STEPS=${STEPS:-1000}
WORKERS=${WORKERS:-2}
STORE=storage/signals/astronaut-256.zarr

echo "== ingest: builtin astronaut -> $STORE"
distlg ingest builtin:astronaut@256x256 "$STORE" --no-progress  # a complete store is kept

echo "== train: $WORKERS workers (gloo, CPU), $STEPS steps"
accelerate launch --config_file launch/cpu.yaml --num_processes "$WORKERS" \
    -m distlg train --signal "$STORE" --steps "$STEPS" --out "$RUN" --overwrite --no-progress

# What a user does with the trained model: export the last checkpoint as a model directory, crop
# it to the top-left quarter (weights before and after), and render a region of what is left,
# scored against the signal.
rm -rf "$RUN/exported" "$RUN/cropped" "$RUN"/region*.png
echo "== export, and the PSNR of a region before the crop"
distlg export "$RUN" "$RUN/exported" --no-progress
distlg render "$RUN/exported" --region 32:96,32:96 --out "$RUN/region-uncropped.png" \
    --compare "$STORE" --no-progress
echo "== crop to the top-left quarter"
distlg crop "$RUN/exported" "$RUN/cropped" --keep 0:128,0:128 --no-progress
distlg info "$RUN/cropped"
echo "== render the same region from the cropped model (the same pixels), and at twice the resolution"
distlg render "$RUN/cropped" --region 32:96,32:96 --out "$RUN/region.png" \
    --compare "$STORE" --no-progress
distlg render "$RUN/cropped" --region 32:96,32:96 --scale 2 --out "$RUN/region-x2.png" --no-progress
