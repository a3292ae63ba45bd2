#!/usr/bin/env bash
# Issue 16 on a lent GPU machine (the device tool: no TensorFlow there, no registry, 64 MiB a
# call, warm for 30 s after a call): the real TV-HI chain on Keras' JAX backend.
#
# Here, in the repository's root (`.gpu/` and `.whl/` are in .git/info/exclude):
#   - the 200 clips of the four classes and readme.txt of ../shared/data/tvhi, split into
#     .gpu/a (about 62 MB) and .gpu/b (the rest, with readme.txt);
#   - the wheels the machine lacks in .whl/ (keras, zarr, numcodecs, dask, distributed, donfig,
#     google-crc32c, optree, namex, partd, locket, tblib, tornado, zict; cp312; 16 MB), as the
#     device tool's README says.
# Then three calls, each within 30 s of the last:
#   run(command="mkdir -p /tmp/tvhi && cp .gpu/a/* /tmp/tvhi/", carry=[".gpu/a"])
#   run(command="mkdir -p /tmp/tvhi && cp .gpu/b/* /tmp/tvhi/", carry=[".gpu/b"])
#   run(command="BUDGET=400 timeout 545 bash benchmarks/device/tvhi_chain.sh 2>&1 | tee $OUT/log.txt",
#       carry=[".whl"], timeout_s=590)
# Session 34 ran it (README "Results", "On a GPU"; benchmarks/README.md, "Session 34"). Locally,
# to try it: CARRIED=0 SRC=clips WORK=/tmp/w EXTRA="--size 32 --steps 4" TRAIN_EXTRA="--epochs 1"
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SRC=${SRC:-/tmp/tvhi}; WORK=${WORK:-/tmp/gpu16}; BUDGET=${BUDGET:-430}; EXTRA=${EXTRA:-}
mkdir -p "$SRC" "$WORK"
[ "${CARRIED:-1}" = 1 ] && [ -d .gpu/b ] && cp -n .gpu/b/* "$SRC"/
echo "clips: $(ls "$SRC"/*.avi | wc -l)"
if [ "${CARRIED:-1}" = 1 ] && [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 4
  export PYTHONPATH=/tmp/site:$PWD
fi
export KERAS_BACKEND=jax
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
nproc
/usr/bin/time -f "build: %e s wall, %M KB peak" python3 -m flowstore build tvhi --source "$SRC" \
    --store "$WORK/tvhi.zarr" --workers "$(nproc)" $EXTRA 2>&1 | tail -3
python3 -m flowstore inspect "$WORK/tvhi.zarr" 2>&1 | head -12
run() {  # one trainers run unless the budget is spent
  local spent=$(( $(date +%s) - start ))
  if [ "$spent" -gt "$BUDGET" ]; then echo "skipped (budget, ${spent}s): $*"; return; fi
  echo "== $* (at ${spent}s)"
  /usr/bin/time -f "%e s wall" python3 -m trainers run "$@" --store "$WORK/tvhi.zarr" \
      --runs-dir "$WORK/runs" ${TRAIN_EXTRA:-} 2>&1 | grep -v "^$" | grep -v "epoch .*: step"
}
for seed in 0 1 2; do run two_stream --recipe tuned --seed "$seed"; done
for seed in 0 1 2; do run flow --recipe tuned --subtract-mean-flow --seed "$seed"; done
for seed in 0 1 2; do run two_stream --seed "$seed"; done
python3 -m trainers report "$WORK/runs" 2>&1 | tail -40
tar czf "$OUT/runs.tgz" --exclude=model.keras -C "$WORK" runs
echo "total: $(( $(date +%s) - start ))s"
