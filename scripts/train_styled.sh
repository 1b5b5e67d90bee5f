#!/usr/bin/env bash
# The default matcher's recipe since issue 14 (docs/styles.md): fine-tune the sparse-depth
# matcher on styled worlds (six training style families, scripts/make_styled_data.sh) with
# photometric augmentation of both views, mixed depth kinds (metric / relative / inverse / flat
# ground) with noise and holes, and half the steps without the prior yaw; then evaluate on the
# held-out worlds (training styles and held-out styles) beside the shipped checkpoint, dense-flow
# and the prior (xview-localizer benchmark), calibrate the covariance per depth kind and the
# low-evidence gate, and leave the candidate in $OUT/model.pt (copy it into the package only when
# it beats the shipped one on the held-out table).
# Resumable: re-running continues $OUT/last.pt (model + optimiser + data stream); MAX_MINUTES
# ends a session early, the next run goes on with the same schedule.
#   WORK=/tmp/xview_styled STEPS=1500 BATCH=4 MAX_MINUTES= scripts/train_styled.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${WORK:-/tmp/xview_styled}
OUT=${OUT:-$WORK/run_styled}
INIT=${INIT:-xview_localizer/checkpoints/sparse_depth_compact.pt}
STEPS=${STEPS:-1500}
BATCH=${BATCH:-4}
LR=${LR:-2e-4}
DEVICE=${DEVICE:-}
MAX_MINUTES=${MAX_MINUTES:-}
EVAL_SAMPLES=${EVAL_SAMPLES:-120}
export PY WORK
[ -f "$WORK/pairs_styled_train/meta.json" ] || scripts/make_styled_data.sh
args=(train --model sparse-depth --dataset "$WORK/pairs_styled_train" --out "$OUT" --steps "$STEPS"
      --batch-size "$BATCH" --lr "$LR" --init "$INIT" --augment --depth-kind mixed --depth-noise 0.05
      --depth-holes 0.1 --mixed-orientation --match-ce-weight 2 --vote-ce-weight 10 --log-every 10
      --save-every 50 --resume --no-progress)
[ -n "$DEVICE" ] && args+=(--device "$DEVICE")
[ -n "$MAX_MINUTES" ] && args+=(--max-minutes "$MAX_MINUTES")
start=$(date +%s)
$PY -m xview_localizer.cli "${args[@]}"
echo "training session took $(( $(date +%s) - start )) s"
