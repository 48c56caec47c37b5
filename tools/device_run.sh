#!/usr/bin/env bash
# On a lent GPU machine, with the bundle of tools/device_bundle.py carried in BUNDLE (.gpu/):
#   bash tools/device_run.sh [lease|abenv|short|recheck|times|check|sweep|ncu|source|all]   (default: check)
# lease: a whole 15-minute lease after kernel changes, in one ~5-minute command (299 s on an H100):
#        gpu-check's steps (tests, parity, determinism, memcheck, racecheck, kernel times with
#        torch.compile for CBAM 64ch; <= 330 s), the kernel times and ncu counts of the bundles in
#        BASE (default .gpu-base, when there; several, space-separated) beside this one's, ROUNDS
#        times alternated (default 1), the CUDA-graph plan sweep of the forwards of the cases named
#        by SWEEP (default CBAM; none: no sweep), and the source counters (`source`; SOURCE=none: not).
# abenv: after a change with a switch in the environment, ~5 minutes: the kernel times (no
#        torch.compile) without and with AB_ENV (e.g. SAM_FUSED_CUDA_PDL=0), alternated twice,
#        then gpu-check's tests, parity, determinism and memcheck.
# short: what a 15-minute lease allows in one ~9-minute command: tools/gpu_check.py --steps
#        (the CUDA tests, parity, determinism, memcheck and racecheck side by side, then kernel
#        times beside eager, clone and torch.compile for CBAM 64ch; <= 390 s), then the plan
#        sweep (<= 150 s).
# recheck: after a kernel or planner change, what a lease's last ~5 minutes allow (~3 min):
#        parity and determinism, the kernel times, the plan sweep as CUDA-graph replays, the
#        host's time per call (tools/gpu_host_time.py) and BwdMaps' instruction count under ncu.
# times: the kernel times (no torch.compile) and the backward kernels' ncu time and instruction
#        count, ~1 min: to compare bundles on one lease, run it once per bundle, e.g.
#        for b in .gpu-base .gpu; do BUNDLE=$b RESULTS=$OUT/$b bash tools/device_run.sh times; done
# source: Nsight Compute's source counters per SASS instruction of FwdMain, BwdMain and BwdMaps (bank
#        conflicts, excess sectors, stalls; ~1 min), summarised by tools/ncu_source_summary.py.
# check: tools/gpu_check.py --skip-build (tests, parity, determinism, sanitizers, kernel times,
#        ncu summary, benchmarks, predictions); sweep: tools/gpu_plan_sweep.py; ncu: Nsight
#        Compute's full set (warp states, source view) of the forward and backward kernels.
# Results go to RESULTS (default $OUT/results when the device tool gives OUT, else
# gpu-results/device), packed as one .tar.gz per step beside a short summary. Each step fits
# one 10-minute device command; BUDGET (s) bounds gpu-check's steps.
set -uo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${BUNDLE:-.gpu}
RESULTS=${RESULTS:-${OUT:+$OUT/results}}
RESULTS=${RESULTS:-gpu-results/device}
BUDGET=${BUDGET:-420}
STEP=${1:-check}
mkdir -p "$RESULTS"

lib=$(ls "$BUNDLE"/_C*.so.xz 2>/dev/null | head -1)
if [ -z "$lib" ]; then
  echo "device_run: no bundle in $BUNDLE (run python tools/device_bundle.py here first)" >&2
  exit 2
fi
name=$(basename "$lib" .xz)
xz -dc "$lib" > "sam_fused/$name"
cp "$BUNDLE/_build_info.py" sam_fused/_build_info.py
echo "bundle: $(cat "$BUNDLE/COMMIT" 2>/dev/null), tree: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
python3 -c "import torch, sam_fused; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 2

pack() {  # pack STEP DIR: one archive per step, the summary beside it
  tar -czf "$RESULTS/$1.tar.gz" -C "$(dirname "$2")" "$(basename "$2")"
}

run_check() {
  python3 tools/gpu_check.py --skip-build --out /tmp/device/check --budget "$BUDGET" --sanitizer-timeout 120
  local rc=$?
  cp /tmp/device/check/summary.md "$RESULTS/check-summary.md" 2>/dev/null
  pack check /tmp/device/check
  return $rc
}

run_sweep() {
  mkdir -p /tmp/device/sweep
  timeout 540 python3 tools/gpu_plan_sweep.py --out /tmp/device/sweep/plan_sweep.json > /tmp/device/sweep/sweep.log 2>&1
  local rc=$?
  tail -60 /tmp/device/sweep/sweep.log > "$RESULTS/sweep-summary.txt"
  pack sweep /tmp/device/sweep
  return $rc
}

run_ncu() {
  mkdir -p /tmp/device/ncu
  # every spatial kernel of the profile driver (UCI-HAR and CBAM, forward and backward), full set:
  # warp states, memory charts and the source view; as gpu-check's ncu step, from cudaProfilerStart
  timeout 500 ncu --set full --import-source yes --profile-from-start off --kernel-name regex:block_program_kernel \
    --export /tmp/device/ncu/full --force-overwrite python3 tools/gpu_profile_driver.py > /tmp/device/ncu/ncu.log 2>&1
  local rc=$?
  ncu --import /tmp/device/ncu/full.ncu-rep --page details > /tmp/device/ncu/details.txt 2>&1
  grep -E "Duration|Warp Cycles Per Issued|Stall|Achieved Occupancy|Memory Throughput|block_program" \
    /tmp/device/ncu/details.txt | head -120 > "$RESULTS/ncu-summary.txt"
  pack ncu /tmp/device/ncu
  return $rc
}

# check_summary DIR: gpu_check.py's summary.md under DIR/check, else the end of its log
check_summary() { cat "$1/check/summary.md" 2>/dev/null || tail -40 "$1/check.log"; }

run_short() {
  local d=/tmp/device/short py=python3 rc=0
  mkdir -p $d
  # gpu-check's own steps (tests/test_cuda.py with its > 2^31-element test, parity, determinism,
  # memcheck and racecheck side by side, then the kernel times), within a budget that leaves the
  # plan sweep its time
  $py tools/gpu_check.py --skip-build --out $d/check --budget 390 --sanitizer-timeout 170 \
    --steps tests,check,determinism,memcheck,racecheck,times > $d/check.log 2>&1 || rc=1
  timeout 150 $py tools/gpu_plan_sweep.py --time-limit 120 --out $d/plan_sweep.json > $d/sweep.log 2>&1
  local sweep=$?
  echo "exit status $sweep" >> $d/sweep.log
  [ $sweep -eq 0 ] || rc=1
  { check_summary $d; echo "=== sweep"; tail -30 $d/sweep.log; } > "$RESULTS/short-summary.txt"
  cp $d/check/kernel_times.md "$RESULTS/" 2>/dev/null
  pack short $d
  return $rc
}

# ncu_counts KERNELS LOG: each profiled kernel's time, instruction count and registers (the
# profile driver's UCI-HAR and CBAM calls), the log's lines summarised by ncu_lines LOG
ncu_counts() {
  timeout 60 ncu --profile-from-start off --kernel-name-base demangled -k regex:"$1" \
    --metrics gpu__time_duration.sum,smsp__inst_executed.sum,launch__registers_per_thread \
    python3 tools/gpu_profile_driver.py > "$2" 2>&1
}
ncu_lines() { grep -E "block_program|duration|inst_executed|registers" "$1"; }

run_recheck() {
  local d=/tmp/device/recheck py=python3 rc=0
  mkdir -p $d
  $py tools/gpu_determinism.py > $d/determinism.log 2>&1 || rc=1
  timeout 120 $py -m sam_fused.check --device cuda > $d/check.log 2>&1 || rc=1
  timeout 90 $py tools/gpu_kernel_times.py --compile "CBAM 64ch" --out $d/kernel_times.md > $d/times.log 2>&1 || rc=1
  timeout 60 $py tools/gpu_plan_sweep.py --graph --time-limit 50 --out $d/plan_sweep_graph.json > $d/sweep.log 2>&1 || rc=1
  timeout 40 $py tools/gpu_host_time.py > $d/host_time.md 2>&1 || rc=1
  ncu_counts 'BwdMaps|BwdMain|BwdRho' $d/ncu.log || rc=1
  { tail -3 $d/determinism.log; tail -3 $d/check.log; cat $d/kernel_times.md; tail -26 $d/sweep.log
    head -14 $d/host_time.md; ncu_lines $d/ncu.log; } \
    > "$RESULTS/recheck-summary.txt"
  cp $d/kernel_times.md $d/host_time.md "$RESULTS/" 2>/dev/null
  pack recheck $d
  return $rc
}

run_source() {
  mkdir -p /tmp/device/source
  # per SASS instruction of FwdMain and BwdMain (the profile driver's UCI-HAR and CBAM calls):
  # shared wavefronts and their ideal (bank conflicts), global sectors and their ideal, stall
  # samples; the CSV is ~20 MB, so it comes back xz-compressed (~0.2 MB)
  timeout 150 ncu --profile-from-start off --kernel-name-base demangled -k regex:'FwdMain|BwdMain|BwdMaps' \
    --section SourceCounters --section WarpStateStats -o /tmp/device/source/src -f \
    python3 tools/gpu_profile_driver.py > /tmp/device/source/ncu.log 2>&1
  local rc=$?
  ncu --import /tmp/device/source/src.ncu-rep --page source --csv --print-source sass > /tmp/device/source/sass.csv
  xz -9 -T0 -c /tmp/device/source/sass.csv > "$RESULTS/source-sass.csv.xz"
  python3 tools/ncu_source_summary.py /tmp/device/source/sass.csv > "$RESULTS/source-summary.txt" 2>&1
  return $rc
}

run_lease() {
  local d=/tmp/device/lease py=python3 rc=0 base=${BASE:-.gpu-base}
  mkdir -p $d
  $py tools/gpu_check.py --skip-build --out $d/check --budget 330 --sanitizer-timeout 120 \
    --steps tests,check,determinism,memcheck,racecheck,times > $d/check.log 2>&1 || rc=1
  check_summary $d > "$RESULTS/check-summary.md"
  tar -czf "$RESULTS/check.tar.gz" -C $d check check.log
  # the base bundles first, so that this one is in place for the steps after; ROUNDS alternates them
  local round b have_base=
  for b in $base; do [ -d "$b" ] && have_base=1; done
  for round in $(seq "${ROUNDS:-1}"); do
    for b in $base "$BUNDLE"; do
      [ -n "$have_base" ] && [ -d "$b" ] || continue
      BUNDLE=$b RESULTS=$d/times-$(basename "$b")-$round bash tools/device_run.sh times >> $d/times.log 2>&1 || rc=1
      { echo "=== bundle $(cat "$b/COMMIT") ($b, round $round)"; cat $d/times-$(basename "$b")-$round/times-summary.txt; } \
        >> "$RESULTS/times-ab.txt"
    done
  done
  if [ "${SWEEP:-CBAM}" != none ]; then
    timeout 120 $py tools/gpu_plan_sweep.py --graph --cases "${SWEEP:-CBAM}" --direction fwd --time-limit 90 \
      --out "$RESULTS/plan_sweep_graph.json" > "$RESULTS/sweep.log" 2>&1 || rc=1
  fi
  [ "${SOURCE:-yes}" = none ] || run_source || rc=1
  return $rc
}

run_abenv() {
  local d=/tmp/device/abenv py=python3 rc=0 ab=${AB_ENV:?AB_ENV=NAME=value}
  mkdir -p $d
  for round in 1 2; do
    timeout 90 $py tools/gpu_kernel_times.py --out $d/default_$round.md >> $d/times.log 2>&1 || rc=1
    timeout 90 env $ab $py tools/gpu_kernel_times.py --out $d/ab_$round.md >> $d/times.log 2>&1 || rc=1
  done
  $py tools/gpu_check.py --skip-build --out $d/check --budget 240 --sanitizer-timeout 60 \
    --steps tests,check,determinism,memcheck > $d/check.log 2>&1 || rc=1
  check_summary $d > "$RESULTS/check-summary.md"
  for f in $d/default_*.md $d/ab_*.md; do { echo "=== $(basename $f .md)"; cat $f; } >> "$RESULTS/abenv-times.md"; done
  echo "AB_ENV: $AB_ENV" >> "$RESULTS/abenv-times.md"
  tar -czf "$RESULTS/abenv.tar.gz" -C /tmp/device abenv
  return $rc
}

run_times() {
  local d=/tmp/device/times py=python3 rc=0
  rm -rf $d && mkdir -p $d
  timeout 90 $py tools/gpu_kernel_times.py --out $d/kernel_times.md > $d/times.log 2>&1 || rc=1
  ncu_counts 'BwdMaps|BwdMain|BwdRho|FwdMain' $d/ncu.log || rc=1
  { cat $d/kernel_times.md; ncu_lines $d/ncu.log; } \
    > "$RESULTS/times-summary.txt"
  cp $d/kernel_times.md "$RESULTS/" 2>/dev/null
  return $rc
}

status=0
case "$STEP" in
  lease) run_lease || status=$? ;;
  abenv) run_abenv || status=$? ;;
  short) run_short || status=$? ;;
  source) run_source || status=$? ;;
  recheck) run_recheck || status=$? ;;
  times) run_times || status=$? ;;
  check) run_check || status=$? ;;
  sweep) run_sweep || status=$? ;;
  ncu) run_ncu || status=$? ;;
  all) for s in check sweep ncu; do "run_$s" || status=$?; done ;;
  *) echo "device_run: unknown step $STEP (lease|abenv|short|recheck|times|check|sweep|ncu|source|all)" >&2; exit 2 ;;
esac
ls -la "$RESULTS"
exit $status
