#!/usr/bin/env bash
# Teacher training on a lent GPU (one call of at most 10 minutes): several runs side by side on one GPU, each
# continued from the shipped teacher, stopped by a wall-clock budget (its last checkpoint counts), exported (EMA)
# and evaluated on the held-out photos.
# Usage: bash scripts/gpu_teacher_runs.sh PHOTOS OUTDIR SECONDS   (RUNS="name:kappa:batch ...", CKPT, VAL in env)
set -u
PHOTOS=$1; OUT=$2; SECS=$3
RUNS=${RUNS:-"k050_b32:0.5:32 k025_b32:0.25:32 k050_b64:0.5:64"}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
mkdir -p "$OUT"
for r in $RUNS; do
  IFS=: read name kappa bs <<<"$r"
  timeout -s TERM "$SECS" python3 -c "import sys; from tadsr.cli import main; sys.exit(main(sys.argv[1:]))" \
    train-teacher --data "$PHOTOS" --init tadsr/weights/teacher.safetensors --out "/tmp/runs/$name" \
    --steps 1000000 --batch-size "$bs" --kappa "$kappa" --ckpt-every "${CKPT:-500}" --val-every "${VAL:-2000}" \
    --no-progress > "$OUT/$name.log" 2>&1 &
done
wait
for r in $RUNS; do
  IFS=: read name kappa bs <<<"$r"
  python3 - "$name" "$OUT" <<'PY'
import sys
from tadsr.teacher import export_weights
name, out = sys.argv[1], sys.argv[2]
c = export_weights(f"/tmp/runs/{name}/checkpoint.safetensors", f"{out}/{name}.safetensors", default_steps=None)
print(name, "exported at step", c["step"])
PY
  python3 scripts/eval_teacher.py "$OUT/$name.safetensors" --steps 1 4 15 >> "$OUT/$name.log" 2>&1
  tail -n 12 "$OUT/$name.log"
done
