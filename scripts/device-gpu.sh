#!/usr/bin/env bash
# The GPU machine's checks (issue 8), run there from the project root through .device/on-device.sh (Node 20 and
# the `webgpu` package on Vulkan; see ../shared/device/README.md and README.md, "GPU machine"):
#
#   bash .device/on-device.sh bash scripts/device-gpu.sh PHASE...
#   PHASE: all | tune | check | bench | bench-cifar | profile | cifar | ablations
#
#   all      check, bench, cifar and profile in one call, inside DEVICE_BUDGET_S seconds (default 540). cifar
#            leaves RESERVE_S (80 s) to the profiles after it.
#   tune     bench/tune-webgpu.ts: whole training steps (1.0x g=3, 224, batch 256) at several tiles of the 1x1
#            convs, the GEMM tile then the weight-gradient tile: $OUT/tune.md, and the fastest in
#            $OUT/tiles.txt (GEMM/WGRAD), which GPU_TILES=auto hands to the phases after it.
#   check    the WebGPU conformance tests (test/webgpu.test.ts, test/webgpu-train.test.ts) on the GPU, from their
#            bundles (no tsx there): every kernel and whole ShuffleNets against the reference kernels / tape.
#   bench    bench/gpu.ts (dist/device/bench-gpu.js): ShuffleNet v1 1.0x g=3 at 224, inference batch 1 and 256,
#            a training step at batch 256, ours on WebGPU next to PyTorch (python3, CUDA fp32) in the same run,
#            and inference at batch 256 again with f16 activations (shader-f16) against the same PyTorch fp32:
#            $OUT/bench.md (the markdown for BENCHMARKS.md), bench.json, bench.log.
#   bench-cifar  the CIFAR-10 model (small-input stem, 10 classes) at 32x32, batch 256, ours alone:
#            bench-cifar.md, bench-cifar.json.
#   profile  per-kernel profiles of a training step and an inference run at batch 256 (bench/profile-webgpu.ts):
#            $OUT/profile-train.md, profile-infer.md (PROFILE_KINDS="train infer").
#   cifar    `shufflenet train --backend webgpu --time-budget CAP` on the packed CIFAR-10 (dist/cifar10-pack),
#            then `eval` of the model: $OUT/cifar/: train.log, metrics.jsonl, training.svg, model.safetensors,
#            eval.json, summary.md, resume.tar (the checkpoint, to go on in another call:
#            CIFAR_RESUME=path/to/resume.tar). CAP: CIFAR_CAP_S, else what the budget leaves (less 30 s for the
#            eval and RESERVE_S), else 420 s. The trainer measures its second epoch and cuts the epochs (at most
#            CIFAR_EPOCHS, else CIFAR_MAX_EPOCHS, 150) to what fits in CAP, so that the cosine schedule ends
#            inside it (a run cut short never anneals); SIGINT 20 s after CAP is the backstop.
#   ablations  tools/ablations.ts (dist/device/ablations.js): the paper's Tables 2-5 trained on WebGPU on the
#            packed CIFAR-10, one `train --backend webgpu` per model, until ABL_TIMEOUT or the budget (SIGINT):
#            $OUT/ablations/results.md (the tables beside the paper's), results.json, ablations.log and each
#            run's metrics.jsonl.gz. ABL_TABLES (2,3,4,5), ABL_SCALES (1.0,0.5,0.25), ABL_ONLY (a regex of run
#            names), ABL_SEEDS (0), ABL_ARGS (the CPU runs' recipe: --epochs 10 --batch-size 256 --lr 0.2
#            --schedule cosine --nesterov --weight-decay 5e-4). The runs stay in /tmp/device-gpu-ablations, so
#            a later call on the same warm machine skips the finished ones and resumes the one stopped.
# Each phase runs under `timeout`, cut to what DEVICE_BUDGET_S leaves when it is set. Settings (environment):
# SHUFFLENET_WEBGPU_BACKEND (default vulkan; opengles runs it here on llvmpipe), BENCH_ARGS and BENCH_CIFAR_ARGS
# (replace bench-gpu's arguments of the two runs: sizes, batches, iterations; BENCH_ARGS defaults to --host-io
# --iterations 20 --budget-ms 6000), CHECK_TIMEOUT (120 s), BENCH_TIMEOUT (200 s), BENCH_CIFAR_TIMEOUT (60 s),
# PROFILE_TIMEOUT (60 s each), TUNE_TIMEOUT (150 s), TUNE_ARGS (default --rounds 1 --steps 5), GPU_TILES (the
# training plan's 1x1 tiles for bench, bench-cifar, profile and cifar: GEMM/WGRAD, e.g. 64x64x16/32x64x32, or auto:
# tune's $OUT/tiles.txt; default the kernels' own), BENCH_TILES (bench and bench-cifar: a list of tilings, a
# training row each, e.g. default,fit/fit; auto: the defaults and tune's tiles.txt; default GPU_TILES), PROFILE_ARGS, PROFILE_KINDS, CIFAR_CAP_S, CIFAR_ARCH, CIFAR_EPOCHS, CIFAR_MAX_EPOCHS, CIFAR_BATCH,
# CIFAR_LR, CIFAR_ARGS (more train flags; default --cutout 16: the first H200 run, without it, ended at
# 89.40% on the test set with ~98% on its training batches and a loss near label smoothing's floor, i.e.
# overfitting; CIFAR_ARGS= for none), CIFAR_EVAL_EVERY (4: the test set after every 4th epoch, the last and
# the fitted one; the first run evaluated after each of its ~8 s epochs, ~1 s of which was not steps), CIFAR_DATA, CIFAR_RESUME,
# CIFAR_THREADS (8: WASM threads, unused on WebGPU, where the evaluations run too). OUT defaults to /tmp/device-gpu-out off the device.
#
# Prepared here first (this machine has no GPU; see README.md, "GPU machine"):
#   bash ../shared/device/prepare.sh                                  # .device/: 29 MB (node.xz 24.2, webgpu 4.9)
#   npm run build:device                                              # dist/device/: 2.3 MiB of bundles
#   npx tsx tools/pack-images.ts ../shared/datasets/cifar10 dist/cifar10-pack
#                                                                     # train.imgpack 15.5 MB, test 3.1 MB (gzipped)
#   mkdir -p shared/weights shared/images && echo /shared/ >> .git/info/exclude
#   cp ../shared/weights/shufflenet_v1_g3_0.5x.pth.tar shared/weights/
#   cp ../shared/images/{chelsea,coffee,camera}.png ../shared/images/grace_hopper.jpg shared/images/
#        # 3.8 MB: the authors' weights and photos for `check` (a checkout's shared/ travels with every call;
#        # ../shared does not), so their tests (f32 and f16) run on the GPU too
# The `run` tool's calls (the tracked tree travels too: ~4.2 MB; a call carries at most 64 MiB in all). A
# session has 15 minutes of device time, a cold start included (~2 min), and one command runs 10 at most.
# CIFAR-10 needs the most time, so it goes first, in a whole call, tuning the tiles at its own shape (32x32)
# for ~40 s; the second call, issued as soon as the first returns (a warm machine waits ~30 s), gets the rest:
#   carry: [".device", "dist/device", "dist/cifar10-pack"]     (~56 MB, with shared/ ~60 MB)
#   A (timeout_s 600): DEVICE_BUDGET_S=575 GPU_TILES=auto TUNE_TIMEOUT=40 \
#        TUNE_ARGS="--small-input --classes 10 --size 32 --rounds 1 --steps 8" \
#        bash .device/on-device.sh bash scripts/device-gpu.sh tune cifar
#   B (timeout_s T = budget_left_s - 20): DEVICE_BUDGET_S=T-10 GPU_TILES=auto BENCH_TILES=auto TUNE_TIMEOUT=50 \
#        bash .device/on-device.sh bash scripts/device-gpu.sh tune bench check
#        (bench: the default tiles and the tuned ones, a training row each; check gets what is left)
# or one call of 600 s: bash .device/on-device.sh bash scripts/device-gpu.sh all
# That plan met issue 8's last bars (2026-11-27: 90.26%, a training step at 0.65x PyTorch). The next session:
#   A (timeout_s 180): DEVICE_BUDGET_S=170 bash .device/on-device.sh bash scripts/device-gpu.sh profile bench
#   B (timeout_s T = budget_left_s - 20): DEVICE_BUDGET_S=T-10 ABL_TABLES=2,3 ABL_SCALES=0.5,0.25 \
#        bash .device/on-device.sh bash scripts/device-gpu.sh ablations
# A later session with a GPU can give CIFAR-10 the whole call (`cifar` alone, CIFAR_CAP_S=500, CIFAR_RESUME to
# go on from a resume.tar carried back), or rerun `bench` alone after a kernel change.
# If a pack outgrew a call (another dataset, --no-gzip), cut it with `tools/pack-images.ts --part-mib N` and
# carry its parts, by file name, over two back-to-back calls (ignored paths a call carried stay on a warm
# machine, ~30 s idle): call A carries [".device", "dist/device", "dist/cifar10-pack/train.imgpack.001"]
# with `true` as its command, call B ["dist/cifar10-pack/train.imgpack.002", "dist/cifar10-pack/test.imgpack"]
# with the cifar command; the loader checks that every part is there and from the same pack.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-/tmp/device-gpu-out}
mkdir -p "$OUT"
export SHUFFLENET_WEBGPU_BACKEND=${SHUFFLENET_WEBGPU_BACKEND:-vulkan}
BUNDLE=dist/device
status=0
T0=$SECONDS
BUDGET=${DEVICE_BUDGET_S:-}

# limit DEFAULT: a phase's timeout, cut to what the budget leaves (0: no time left).
limit() {
  local t=$1
  if [ -n "$BUDGET" ]; then
    local left=$((BUDGET - (SECONDS - T0)))
    [ "$left" -lt "$t" ] && t=$left
  fi
  echo $((t > 0 ? t : 0))
}

# run_for SECONDS CMD...: CMD under timeout, or a line saying that no time was left for it.
run_for() {
  local t=$1
  shift
  if [ "$t" -lt 5 ]; then
    echo "device-gpu.sh: no time left in DEVICE_BUDGET_S=$BUDGET for: $*" >&2
    return 1
  fi
  timeout -k 10 "$t" "$@"
}

need() {
  for f in "$@"; do
    if [ ! -e "$f" ]; then
      echo "device-gpu.sh: missing $f (here: npm run build:device / tools/pack-images.ts, and carry it)" >&2
      return 1
    fi
  done
}

# GPU_TILES as given, or tune's fastest (auto); empty: the kernels' defaults.
tiles() {
  if [ "${GPU_TILES:-}" = auto ]; then
    [ -f "$OUT/tiles.txt" ] && cat "$OUT/tiles.txt"
  else
    echo "${GPU_TILES:-}"
  fi
}

# The bench's training tilings (bench-gpu --tiles takes a list: a row each): BENCH_TILES as given; auto: the
# kernels' defaults and tune's fastest (two rows, against the same PyTorch row); unset: tiles().
bench_tiles() {
  case "${BENCH_TILES-}" in
    '') tiles ;;
    auto)
      local t=""
      [ -f "$OUT/tiles.txt" ] && t=$(cat "$OUT/tiles.txt")
      echo "default${t:+,$t}"
      ;;
    *) echo "$BENCH_TILES" ;;
  esac
}

phase_tune() {
  need "$BUNDLE/tune-webgpu.js" || return 1
  echo "== tune: the 1x1 convs' tiles of a training step"
  # shellcheck disable=SC2086 # TUNE_ARGS is a list of arguments
  run_for "$(limit "${TUNE_TIMEOUT:-150}")" node "$BUNDLE/tune-webgpu.js" ${TUNE_ARGS---rounds 1 --steps 5} \
    --budget-s "$(limit "${TUNE_TIMEOUT:-150}")" --out "$OUT/tune.md" --tiles-out "$OUT/tiles.txt" 2>&1 |
    tee "$OUT/tune.log"
}

phase_check() {
  need "$BUNDLE/webgpu.test.js" "$BUNDLE/webgpu-train.test.js" || return 1
  echo "== check: WebGPU conformance tests on $SHUFFLENET_WEBGPU_BACKEND"
  # Fashion-MNIST and ../shared are not on the device: the tests that need them skip, and say so.
  run_for "$(limit "${CHECK_TIMEOUT:-120}")" node --test --test-reporter=spec --test-concurrency=1 \
    "$BUNDLE/webgpu.test.js" "$BUNDLE/webgpu-train.test.js" 2>&1 | tee "$OUT/check.log"
}

phase_bench() {
  need "$BUNDLE/bench-gpu.js" tools/torch_gpu_bench.py || return 1
  echo "== bench: ours (WebGPU) and PyTorch"
  # shellcheck disable=SC2086 # BENCH_ARGS is a list of arguments
  local t
  t=$(bench_tiles)
  run_for "$(limit "${BENCH_TIMEOUT:-200}")" node "$BUNDLE/bench-gpu.js" ${t:+--tiles "$t"} \
    ${BENCH_ARGS---host-io --iterations 20 --budget-ms 6000} \
    --out "$OUT/bench.md" --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
}

# The CIFAR-10 model's training speed (small-input stem, 10 classes, 32x32), ours alone.
phase_bench-cifar() {
  need "$BUNDLE/bench-gpu.js" || return 1
  echo "== bench-cifar: the CIFAR-10 model (small-input stem), 32x32"
  # shellcheck disable=SC2086
  local t
  t=$(bench_tiles)
  run_for "$(limit "${BENCH_CIFAR_TIMEOUT:-60}")" node "$BUNDLE/bench-gpu.js" --small-input --classes 10 ${t:+--tiles "$t"} \
    ${BENCH_CIFAR_ARGS---size 32 --infer-batches 256 --f16-batches= --train-batches 256 --iterations 20 --budget-ms 3000 --no-torch} \
    --out "$OUT/bench-cifar.md" --json "$OUT/bench-cifar.json" 2>&1 | tee "$OUT/bench-cifar.log"
}

# Where the time goes: each dispatch of a training step and of an inference run at batch 256, timed alone.
phase_profile() {
  need "$BUNDLE/profile-webgpu.js" || return 1
  echo "== profile: per-kernel times (1.0x g=3, 224x224, batch 256)"
  local rc=0 kind t
  t=$(tiles)
  for kind in ${PROFILE_KINDS:-train infer}; do
    # shellcheck disable=SC2046,SC2086 # PROFILE_ARGS is a list of arguments
    run_for "$(limit "${PROFILE_TIMEOUT:-60}")" node "$BUNDLE/profile-webgpu.js" \
      $([ "$kind" = train ] && echo --train ${t:+--tiles "$t"}) ${PROFILE_ARGS---runs 3} 2>&1 |
      tee "$OUT/profile-$kind.md" || rc=1
  done
  return $rc
}

phase_cifar() {
  local data=${CIFAR_DATA:-dist/cifar10-pack} run=/tmp/device-gpu-cifar out="$OUT/cifar"
  need "$BUNDLE/cli.js" || return 1
  for split in train test; do
    compgen -G "$data/$split.imgpack*" > /dev/null || { need "$data/$split.imgpack"; return 1; }
  done
  mkdir -p "$out"
  rm -rf "$run"
  local resume=()
  if [ -n "${CIFAR_RESUME:-}" ]; then
    mkdir -p "$run" && tar -xf "$CIFAR_RESUME" -C "$run" && resume=(--resume)
  fi
  local cap=${CIFAR_CAP_S:-} tiles
  tiles=$(tiles)
  if [ -z "$cap" ]; then
    # The rest of the budget, less the eval (30 s) and what the phases after this one keep (RESERVE_S).
    if [ -n "$BUDGET" ]; then cap=$(($(limit 100000) - 30 - ${RESERVE_S:-0})); else cap=420; fi
  fi
  if [ "$cap" -lt 30 ]; then
    echo "device-gpu.sh: ${cap} s left for cifar: too little" >&2
    return 1
  fi
  # The trainer fits the epochs (at most these) to the cap at the pace of its second epoch: the schedule ends
  # inside it (a run cut short never anneals).
  local epochs=${CIFAR_EPOCHS:-${CIFAR_MAX_EPOCHS:-150}}
  echo "== cifar: train --backend webgpu, at most ${epochs} epochs, fitted to ${cap} s"
  local t0=$SECONDS
  # The backstop: SIGINT 20 s after the budget (the step in flight finishes and a checkpoint is written),
  # KILL 40 s later.
  # shellcheck disable=SC2086 # CIFAR_ARGS is a list of arguments
  timeout -s INT -k 40 "$((cap + 20))" node "$BUNDLE/cli.js" train --dataset "cifar10:$data" \
    --arch "${CIFAR_ARCH:-shufflenet_v1_g3_1.0x}" --out "$run" --backend webgpu --no-cache \
    --epochs "$epochs" --time-budget "$cap" --batch-size "${CIFAR_BATCH:-256}" --lr "${CIFAR_LR:-0.2}" \
    --schedule cosine --nesterov --weight-decay 5e-4 --threads "${CIFAR_THREADS:-8}" \
    --eval-every "${CIFAR_EVAL_EVERY:-4}" ${tiles:+--gpu-tiles "$tiles"} ${CIFAR_ARGS---cutout 16} "${resume[@]}" 2>&1 | tee "$out/train.log"
  local rc=${PIPESTATUS[0]} wall=$((SECONDS - t0))
  echo "train exited $rc after ${wall} s"
  for f in metrics.jsonl training.svg model.safetensors; do [ -f "$run/$f" ] && cp "$run/$f" "$out/"; done
  # The checkpoint, to continue in another call (CIFAR_RESUME); model.safetensors is beside it already.
  (cd "$run" && tar -cf "$out/resume.tar" state.json weights-*.safetensors optimizer-*.safetensors metrics.jsonl) \
    2>/dev/null || rm -f "$out/resume.tar"
  if [ -f "$run/model.safetensors" ]; then
    echo "== cifar: eval of model.safetensors on the test images"
    # eval --backend is newer than some builds: without it, eval on the WASM engine.
    timeout -k 10 60 node "$BUNDLE/cli.js" eval --dataset "cifar10:$data" --weights "$run/model.safetensors" \
      --no-cache --json --backend auto > "$out/eval.json" 2> "$out/eval.err" ||
      timeout -k 10 120 node "$BUNDLE/cli.js" eval --dataset "cifar10:$data" --weights "$run/model.safetensors" \
        --no-cache --json > "$out/eval.json" 2> "$out/eval.err"
    cat "$out/eval.err" >&2; rm -f "$out/eval.err"
  fi
  node -e '
    const fs = require("fs");
    const [dir, wall, rc, cmd] = process.argv.slice(1);
    const lines = fs.existsSync(dir + "/metrics.jsonl") ? fs.readFileSync(dir + "/metrics.jsonl", "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l)) : [];
    const steps = lines.filter((l) => l.type === "step"), evals = lines.filter((l) => l.type === "eval");
    const trainS = steps.reduce((s, l) => s + (l.seconds ?? 0), 0);
    let ev; try { ev = JSON.parse(fs.readFileSync(dir + "/eval.json", "utf8")); } catch {}
    const pct = (v) => (v * 100).toFixed(2) + "%";
    const md = [
      "# CIFAR-10 on WebGPU (scripts/device-gpu.sh cifar)", "",
      "- Command: `" + cmd + "`",
      "- Wall time of the train command: " + wall + " s (exit " + rc + "; 130 or 124: stopped by the cap)",
      "- Steps: " + (steps.at(-1)?.step ?? 0) + " of " + (steps.at(-1)?.totalSteps ?? "?") + (trainS ? ", " + trainS.toFixed(0) + " s in steps" : ""),
      ...evals.map((e) => "- epoch " + (e.epoch + 1) + " (step " + e.step + "): test top-1 " + pct(e.top1) + ", top-5 " + pct(e.top5)),
      ev ? "- eval of model.safetensors: top-1 " + pct(ev.top1) + ", top-5 " + pct(ev.top5) + " on " + ev.count + " images" : "- no eval of model.safetensors",
    ].join("\n");
    fs.writeFileSync(dir + "/summary.md", md + "\n");
    console.log(md);
  ' "$out" "$wall" "$rc" "train --dataset cifar10:$data --arch ${CIFAR_ARCH:-shufflenet_v1_g3_1.0x} --backend webgpu --epochs $epochs --time-budget $cap --batch-size ${CIFAR_BATCH:-256} --lr ${CIFAR_LR:-0.2} --schedule cosine --nesterov --weight-decay 5e-4 --eval-every ${CIFAR_EVAL_EVERY:-4}${tiles:+ --gpu-tiles $tiles} ${CIFAR_ARGS---cutout 16} (cap ${cap} s)"
  [ "$rc" = 0 ] || [ "$rc" = 124 ] || [ "$rc" = 130 ]
}

# The paper's ablations (tools/ablations.ts: Tables 2-5) trained on WebGPU, into /tmp/device-gpu-ablations
# (a finished run is skipped and a stopped one resumes when a later call on the same warm machine runs the
# phase again), stopped with SIGINT when the budget runs out (the run in flight checkpoints). $OUT/ablations/:
# results.md, results.json, the log, and each run's metrics.jsonl.gz.
phase_ablations() {
  need "$BUNDLE/ablations.js" "$BUNDLE/cli.js" || return 1
  local data=${CIFAR_DATA:-dist/cifar10-pack} runs=/tmp/device-gpu-ablations out="$OUT/ablations" t
  mkdir -p "$out"
  t=$(limit "${ABL_TIMEOUT:-3600}")
  if [ "$t" -lt 30 ]; then
    echo "device-gpu.sh: ${t} s left for ablations: too little" >&2
    return 1
  fi
  echo "== ablations: tables ${ABL_TABLES:-2,3,4,5} on webgpu, for at most ${t} s"
  # shellcheck disable=SC2086 # ABL_ARGS is a list of arguments
  timeout -s INT -k 30 "$t" node "$BUNDLE/ablations.js" --dataset "cifar10:$data" --out "$runs" \
    --tables "${ABL_TABLES:-2,3,4,5}" --scales "${ABL_SCALES:-1.0,0.5,0.25}" --seeds "${ABL_SEEDS:-0}" \
    ${ABL_ONLY:+--only "$ABL_ONLY"} -- ${ABL_ARGS:---epochs 10 --batch-size 256 --lr 0.2 --schedule cosine --nesterov --weight-decay 5e-4} \
    --backend webgpu --cache-dir /tmp/device-gpu-cache 2>&1 | tee "$out/ablations.log"
  local rc=${PIPESTATUS[0]}
  for f in results.md results.json; do [ -f "$runs/$f" ] && cp "$runs/$f" "$out/"; done
  for d in "$runs"/*/; do
    [ -f "$d/metrics.jsonl" ] && gzip -c "$d/metrics.jsonl" > "$out/$(basename "$d").metrics.jsonl.gz"
  done
  [ "$rc" = 0 ] || [ "$rc" = 124 ] || [ "$rc" = 130 ]
}

[ $# -gt 0 ] || { echo "usage: bash scripts/device-gpu.sh all|tune|check|bench|bench-cifar|profile|cifar|ablations ..." >&2; exit 2; }
phases=()
for phase in "$@"; do
  case "$phase" in
    all)
      BUDGET=${BUDGET:-540}
      # The acceptance runs first; the profiles (diagnostics) last, in the 80 s that cifar leaves them.
      phases+=(check bench cifar profile)
      RESERVE_S=${RESERVE_S:-80}
      ;;
    tune | check | bench | bench-cifar | profile | cifar | ablations) phases+=("$phase") ;;
    *)
      echo "device-gpu.sh: unknown phase '$phase' (all, tune, check, bench, bench-cifar, profile, cifar, ablations)" >&2
      exit 2
      ;;
  esac
done
for phase in "${phases[@]}"; do
  "phase_$phase" || status=1
  echo "device-gpu.sh: $phase done after $((SECONDS - T0)) s (status $status)"
done
# The last lines of output come back even when files do not: the results again, at the end.
echo "== summary"
for f in "$OUT/tune.md" "$OUT/bench.md" "$OUT/cifar/summary.md" "$OUT/ablations/results.md"; do [ -f "$f" ] && cat "$f"; done
grep -h '^time budget' "$OUT/cifar/train.log" 2> /dev/null
# The run tool brings back at most 8 files: past that, the small ones go into one archive, and the model and
# checkpoint stay beside it.
n=$(find "$OUT" -type f | wc -l)
if [ "$n" -gt 8 ]; then
  tgz=$(mktemp /tmp/device-gpu-XXXXXX.tgz)
  (cd "$OUT" && tar -czf "$tgz" --exclude='*.safetensors' --exclude=resume.tar .) &&
    find "$OUT" -type f ! -name '*.safetensors' ! -name resume.tar -delete && mv "$tgz" "$OUT/results.tgz" &&
    echo "device-gpu.sh: $n files; all but the model and checkpoint are in $OUT/results.tgz"
fi
echo "device-gpu.sh: done after $((SECONDS - T0)) s (status $status); files in $OUT"
exit $status
