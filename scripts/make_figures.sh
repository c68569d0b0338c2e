#!/usr/bin/env bash
# Regenerates every figure docs/ shows, with the commands its pages quote.
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

# "Will it train?" (gradient norm per block at init; then through 500 Adam steps)
GRAD_SKIPS=plain,add,layerscale,highway,dense,concat-prev,concat-half
$SKIPLAB gradients --model mlp --depth 10 --width 100 --norm none --init torch --skip $GRAD_SKIPS \
    --plot docs/figures/gradients-depth10.png
$SKIPLAB gradients --model mlp --depth 50 --width 100 --norm none --init torch --skip $GRAD_SKIPS \
    --plot docs/figures/gradients-depth50.png
$SKIPLAB gradients --model mlp --depth 50 --width 100 --norm none --init torch --skip plain,add,highway \
    --steps 500 --plot docs/figures/gradients-training-depth50.png

# "The report" (the quick study's report.html in headless Chromium; needs Playwright and Chromium)
${PYTHON:-python} scripts/report_screenshot.py --png docs/figures/report-screenshot.png
