#!/usr/bin/env bash
# The main job on the embedded default signal (scikit-image's astronaut, 256x256):
# encode it as a Local-Global INR and report PSNR and weights.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-storage/runs/demo}
STEPS=${STEPS:-1000}

distlg train --signal builtin:astronaut@256x256 --steps "$STEPS" --out "$RUN" --no-progress
