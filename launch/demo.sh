#!/usr/bin/env bash
# The main job on the embedded default signal (scikit-image's astronaut, 256x256):
# encode it as a Local-Global INR and report PSNR and weights; then export, crop and render.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-storage/runs/demo}
STEPS=${STEPS:-1000}

distlg train --signal builtin:astronaut@256x256 --steps "$STEPS" --out "$RUN" --no-progress

# What a user does with the trained model: export the last checkpoint as a model directory, crop
# it to the top-left quarter (weights before and after), and render a region of what is left,
# scored against the signal.
rm -rf "$RUN/exported" "$RUN/cropped" "$RUN/region.png" "$RUN/region-x2.png"
distlg export "$RUN" "$RUN/exported" --no-progress
distlg crop "$RUN/exported" "$RUN/cropped" --keep 0:128,0:128
distlg info "$RUN/cropped"
distlg render "$RUN/cropped" --region 32:96,32:96 --out "$RUN/region.png" \
    --compare builtin:astronaut@256x256 --no-progress
distlg render "$RUN/cropped" --region 32:96,32:96 --scale 2 --out "$RUN/region-x2.png" --no-progress
