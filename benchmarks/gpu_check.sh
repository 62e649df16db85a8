#!/usr/bin/env bash
# GPU check (issue 13): on a machine with an NVIDIA GPU and the CUDA build of torch, in under 5
# minutes: the tests marked `cuda` (solvers, training loop, evaluation on the GPU against the CPU),
# then one small run of each power-control scenario on device=cuda, each checked to have labelled,
# trained and evaluated on the GPU (its `device` tag) and printed with its timings.
#   bash benchmarks/gpu_check.sh            (from the repository root, after `make install`)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
case "$PY" in /*) ;; */*) PY="$(pwd)/$PY" ;; *) PY=$(command -v "$PY") ;; esac
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu rehearses the script on a machine without a GPU
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db" MIMO_L2O_CACHE_DIR="$WORK/cache"

if [ "$DEVICE" = cuda ]; then
    "$PY" - <<'PYEOF'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch (is this the CUDA build?)"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PYEOF
    "$PY" -m pytest -q -m cuda tests -p no:cacheprovider
fi

SMALL="data.num_train=20000 data.num_val=1000 data.num_test=2000 data.chunk_size=5000 eval.timing_samples=2000 learner.train.max_epochs=5 device=$DEVICE"
for run in "scenario=gaussian_ic" "scenario=imac" \
           "scenario=cellular precoder=mr objective=max_min learner=position_lstm scenario.num_antennas=16" \
           "scenario=cellfree learner=gnn data.num_train=2000 data.num_val=200 data.num_test=200 eval.timing_samples=50"; do
    echo "== $run"
    # shellcheck disable=SC2086
    ( cd "$WORK" && /usr/bin/time -f "wall %e s" "$PY" -m mimo_l2o $SMALL $run tracking.experiment=gpu_check ) 2>&1 \
        | grep -E "finished|objective ratio|time per|wall|error" || true
done

DEVICE=$DEVICE "$PY" - <<'PYEOF'
import os
import mlflow
client = mlflow.MlflowClient()
exp = client.get_experiment_by_name("gpu_check")
runs = client.search_runs([exp.experiment_id]) if exp else []
print(f"{len(runs)} runs")
for r in runs:
    m, t = r.data.metrics, r.data.tags
    print(f"{r.info.run_name:<28} {r.info.status:<9} device {t.get('device')}  ratio {m.get('test/objective_ratio', float('nan')):.4f}"
          f"  learner {m.get('test/time_learner_ms', float('nan')):.4g} ms  solver {m.get('test/time_solver_ms', float('nan')):.4g} ms"
          f"  train {m.get('train/train_time_s', float('nan')):.1f} s")
assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs), "a run did not finish"
device = os.environ["DEVICE"]
assert all(r.data.tags.get("device", "").startswith(device) for r in runs), f"a run did not use {device}"
print(f"check passed on {device}")
PYEOF
