#!/usr/bin/env bash
# Regenerates every figure the README shows, with the commands the README quotes.
# Usage: scripts/make_figures.sh  (from the repository root, with skiplab installed)
set -euo pipefail
cd "$(dirname "$0")/.."
SKIPLAB=${SKIPLAB:-skiplab}
mkdir -p docs/figures

# "What does concatenation cost?"
$SKIPLAB cost --model cnn1d --width 64 --depth 8 --norm none --kernel-size 3 --skip plain,add,dense,concat-prev,concat-double,concat-half \
    --depths 1..64 --plot docs/figures/cost-growth.png
$SKIPLAB cost --model cnn1d --width 64 --depth 8 --norm none --kernel-size 3 --skip plain,add,dense,concat-prev,concat-half \
    --depths 1..64 --plot docs/figures/cost-growth-polynomial.png
