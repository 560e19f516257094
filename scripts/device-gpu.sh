#!/usr/bin/env bash
# The GPU machine's checks (issue 8), run there from the project root through .device/on-device.sh (Node 20 and
# the `webgpu` package on Vulkan; see ../shared/device/README.md and README.md, "GPU machine"):
#
#   bash .device/on-device.sh bash scripts/device-gpu.sh PHASE...      PHASE: check | bench | cifar
#
#   check  the WebGPU conformance tests (test/webgpu.test.ts, test/webgpu-train.test.ts) on the GPU, from their
#          bundles (no tsx there): every kernel and whole ShuffleNets against the reference kernels / tape.
#   bench  bench/gpu.ts (dist/device/bench-gpu.js): ShuffleNet v1 1.0x g=3 at 224, inference batch 1 and 256,
#          a training step at batch 256, ours on WebGPU next to PyTorch (python3, CUDA fp32) in the same run:
#          $OUT/bench.md (the markdown for BENCHMARKS.md), bench.json, bench.log; then the CIFAR-10 model
#          (small-input stem, 10 classes) at 32x32, batch 256: bench-cifar.md, bench-cifar.json, and the
#          seconds an epoch takes at that speed (to choose CIFAR_EPOCHS for the `cifar` call); then per-kernel
#          profiles of a training step and an inference run at batch 256 (bench/profile-webgpu.ts):
#          $OUT/profile-train.md, profile-infer.md.
#   cifar  `shufflenet train --backend webgpu` on the packed CIFAR-10 (dist/cifar10-pack), stopped by SIGINT
#          after CIFAR_CAP_S seconds (it finishes the step and checkpoints), then `eval` of the model:
#          $OUT/cifar/: train.log, metrics.jsonl, training.svg, model.safetensors, eval.json, summary.md,
#          resume.tar (the checkpoint, to go on in another call: CIFAR_RESUME=path/to/resume.tar).
# Each phase runs under `timeout`. Settings (environment): SHUFFLENET_WEBGPU_BACKEND (default vulkan; opengles
# runs it here on llvmpipe), BENCH_ARGS and BENCH_CIFAR_ARGS (replace bench-gpu's arguments of the two runs:
# sizes, batches, iterations; BENCH_ARGS defaults to --host-io --iterations 20 --budget-ms 8000), CHECK_TIMEOUT (150 s), BENCH_TIMEOUT (240 s),
# BENCH_CIFAR_TIMEOUT (120 s), PROFILE_TIMEOUT (120 s each), PROFILE_ARGS, CIFAR_CAP_S (420 s), CIFAR_ARCH, CIFAR_EPOCHS, CIFAR_BATCH, CIFAR_LR,
# CIFAR_ARGS (more train flags), CIFAR_DATA, CIFAR_RESUME, CIFAR_THREADS (8: WASM threads, unused on WebGPU, where the evaluation after each epoch runs too). OUT defaults to
# /tmp/device-gpu-out off the device.
#
# Prepared here first (this machine has no GPU; see README.md, "GPU machine"):
#   bash ../shared/device/prepare.sh                                  # .device/: 29 MB (node.xz 24.2, webgpu 4.9)
#   npm run build:device                                              # dist/device/: 2.3 MiB of bundles
#   npx tsx tools/pack-images.ts ../shared/datasets/cifar10 dist/cifar10-pack
#                                                                     # train.imgpack 15.5 MB, test 3.1 MB (gzipped)
# The `run` tool's calls (the tracked tree travels too: ~4.2 MB; a call carries at most 64 MiB in all):
#   1. checks and benchmark (~37 MB; expected 3-4 minutes, at most 510 s of phase timeouts):
#        carry: [".device", "dist/device"]
#        command: bash .device/on-device.sh bash scripts/device-gpu.sh check bench
#        timeout_s: 560
#   2. CIFAR-10 (~56 MB: the packs travel whole, no split needed; the machine may have gone cold, so .device
#      travels again rather than being assumed there). Choose CIFAR_EPOCHS from call 1's epoch time so that
#      the cosine schedule ends inside the cap (a run cut short never anneals its learning rate):
#        carry: [".device", "dist/device", "dist/cifar10-pack"]
#        command: CIFAR_CAP_S=420 CIFAR_EPOCHS=N bash .device/on-device.sh bash scripts/device-gpu.sh cifar
#        timeout_s: 560
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

need() {
  for f in "$@"; do
    if [ ! -e "$f" ]; then
      echo "device-gpu.sh: missing $f (here: npm run build:device / tools/pack-images.ts, and carry it)" >&2
      return 1
    fi
  done
}

phase_check() {
  need "$BUNDLE/webgpu.test.js" "$BUNDLE/webgpu-train.test.js" || return 1
  echo "== check: WebGPU conformance tests on $SHUFFLENET_WEBGPU_BACKEND"
  # Fashion-MNIST and ../shared are not on the device: the tests that need them skip, and say so.
  timeout -k 10 "${CHECK_TIMEOUT:-150}" node --test --test-reporter=spec --test-concurrency=1 \
    "$BUNDLE/webgpu.test.js" "$BUNDLE/webgpu-train.test.js" 2>&1 | tee "$OUT/check.log"
}

phase_bench() {
  need "$BUNDLE/bench-gpu.js" "$BUNDLE/profile-webgpu.js" tools/torch_gpu_bench.py || return 1
  echo "== bench: ours (WebGPU) and PyTorch"
  local rc
  # shellcheck disable=SC2086 # BENCH_ARGS is a list of arguments
  timeout -k 10 "${BENCH_TIMEOUT:-240}" node "$BUNDLE/bench-gpu.js" ${BENCH_ARGS---host-io --iterations 20 --budget-ms 8000} \
    --out "$OUT/bench.md" --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
  rc=$?
  # The CIFAR-10 model's training speed (small-input stem, 10 classes, 32x32): what `cifar` can do in its cap.
  echo "== bench: the CIFAR-10 model (small-input stem), 32x32"
  # shellcheck disable=SC2086
  timeout -k 10 "${BENCH_CIFAR_TIMEOUT:-120}" node "$BUNDLE/bench-gpu.js" --small-input --classes 10 \
    ${BENCH_CIFAR_ARGS---size 32 --infer-batches 256 --train-batches 256 --iterations 20} \
    --out "$OUT/bench-cifar.md" --json "$OUT/bench-cifar.json" 2>&1 | tee -a "$OUT/bench.log"
  [ -f "$OUT/bench-cifar.json" ] && node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    for (const row of r.rows.filter((x) => x.kind === "train" && x.ours))
      console.log(`CIFAR-10 training on WebGPU, batch ${row.batch}: ${row.ours.imagesPerSecond.toFixed(0)} images/s, ` +
        `an epoch of 50,000 images in ~${(50000 / row.ours.imagesPerSecond).toFixed(0)} s (plus the evaluation)`);
  ' "$OUT/bench-cifar.json" | tee -a "$OUT/bench.log"
  # Where the time goes: each dispatch of a training step and of an inference run at batch 256, timed alone.
  echo "== bench: per-kernel profiles (1.0x g=3, 224x224, batch 256)"
  timeout -k 10 "${PROFILE_TIMEOUT:-120}" node "$BUNDLE/profile-webgpu.js" --train ${PROFILE_ARGS---runs 1} \
    2>&1 | tee "$OUT/profile-train.md"
  timeout -k 10 "${PROFILE_TIMEOUT:-120}" node "$BUNDLE/profile-webgpu.js" ${PROFILE_ARGS---runs 1} \
    2>&1 | tee "$OUT/profile-infer.md"
  [ "$rc" = 0 ]
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
  local cap=${CIFAR_CAP_S:-420}
  echo "== cifar: train --backend webgpu, stopped after ${cap} s"
  local t0=$SECONDS
  # SIGINT: the step in flight finishes and a checkpoint (with model.safetensors) is written; KILL 60 s later.
  # shellcheck disable=SC2086 # CIFAR_ARGS is a list of arguments
  timeout -s INT -k 60 "$cap" node "$BUNDLE/cli.js" train --dataset "cifar10:$data" \
    --arch "${CIFAR_ARCH:-shufflenet_v1_g3_1.0x}" --out "$run" --backend webgpu --no-cache \
    --epochs "${CIFAR_EPOCHS:-30}" --batch-size "${CIFAR_BATCH:-256}" --lr "${CIFAR_LR:-0.2}" \
    --schedule cosine --nesterov --weight-decay 5e-4 --threads "${CIFAR_THREADS:-8}" \
    ${CIFAR_ARGS:-} "${resume[@]}" 2>&1 | tee "$out/train.log"
  local rc=${PIPESTATUS[0]} wall=$((SECONDS - t0))
  echo "train exited $rc after ${wall} s"
  for f in metrics.jsonl training.svg model.safetensors; do [ -f "$run/$f" ] && cp "$run/$f" "$out/"; done
  # The checkpoint, to continue in another call (CIFAR_RESUME); model.safetensors is beside it already.
  (cd "$run" && tar -cf "$out/resume.tar" state.json weights-*.safetensors optimizer-*.safetensors metrics.jsonl) \
    2>/dev/null || rm -f "$out/resume.tar"
  if [ -f "$run/model.safetensors" ]; then
    echo "== cifar: eval of model.safetensors on the test images"
    # eval --backend is newer than some builds: without it, eval on the WASM engine.
    timeout -k 10 120 node "$BUNDLE/cli.js" eval --dataset "cifar10:$data" --weights "$run/model.safetensors" \
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
  ' "$out" "$wall" "$rc" "train --dataset cifar10:$data --arch ${CIFAR_ARCH:-shufflenet_v1_g3_1.0x} --backend webgpu --epochs ${CIFAR_EPOCHS:-30} --batch-size ${CIFAR_BATCH:-256} --lr ${CIFAR_LR:-0.2} --schedule cosine --nesterov --weight-decay 5e-4 ${CIFAR_ARGS:-} (cap ${cap} s)"
  [ "$rc" = 0 ] || [ "$rc" = 124 ] || [ "$rc" = 130 ]
}

[ $# -gt 0 ] || { echo "usage: bash scripts/device-gpu.sh check|bench|cifar ..." >&2; exit 2; }
for phase in "$@"; do
  case "$phase" in
    check) phase_check || status=1 ;;
    bench) phase_bench || status=1 ;;
    cifar) phase_cifar || status=1 ;;
    *) echo "device-gpu.sh: unknown phase '$phase' (check, bench, cifar)" >&2; exit 2 ;;
  esac
done
echo "device-gpu.sh: done (status $status); files in $OUT"
exit $status
