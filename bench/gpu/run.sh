#!/usr/bin/env bash
# Every GPU check of the open issues, on a bare device machine, in a few calls (see stage.sh):
#   bash bench/gpu/run.sh setup      # wheels, start the CUDA build in the background
#   bash bench/gpu/run.sh chunk N    # one model chunk (.dev/gpu/model/chunk.0N) into /root/model
#   bash bench/gpu/run.sh checks     # wait for the build, then every check; results in $OUT
#   NOBUILD=1 bash bench/gpu/run.sh setup; bash bench/gpu/run.sh nobuild [readcost uicostsyn]
#                                    # the checks that need no llama.cpp: one call, no model
# Shorter runs for a small device budget: GATE_RUNS, GATE_S, ATTACH_ROUNDS, ATTACH_S, UI_S, UI_REPEATS.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /root/model
case "${1:-}" in
setup)
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .dev/gpu/wheels/*.whl
  if [ -z "${NOBUILD:-}" ]; then  # NOBUILD=1: only the checks that need no llama.cpp (below)
    mkdir -p /root/llama && tar xJf .dev/gpu/llama-src.tar.xz -C /root/llama
    bash "$0" build
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv
  lscpu | grep -E "Model name|^CPU\(s\)"; grep -o -w 'amx[a-z_0-9]*' /proc/cpuinfo | sort -u
  echo "build started"
  ;;
build)  # in the background: later calls bring the model meanwhile
  rm -f /root/build.rc
  args="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_BUILD_TESTS=OFF"
  args="$args -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAVA_BUILD=OFF -DGGML_CUDA_NCCL=OFF"
  cmd="cd /root/llama && CMAKE_BUILD_PARALLEL_LEVEL=16 CMAKE_ARGS='$args' python3 -m pip wheel"
  cmd="$cmd --no-deps --no-build-isolation -w /root/wheel . > /root/build.log 2>&1"
  setsid nohup bash -c "$cmd; echo \$? > /root/build.rc" > /dev/null 2>&1 < /dev/null &
  ;;
chunk)
  mv ".dev/gpu/model/chunk.0$2" /root/model/ && ls -la /root/model
  if ls .dev/gpu/plot-wheels/*.whl > /dev/null 2>&1; then  # carried with one chunk (stage.sh)
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .dev/gpu/plot-wheels/*.whl
    PYTHONPATH=/tmp/site python3 -c "import matplotlib; print('matplotlib', matplotlib.__version__)"
  fi
  ;;
nobuild)  # after NOBUILD=1 setup: the checks that need neither llama.cpp nor the model
  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/root/cache
  export ANUBIS_CONFIG=/nonexistent PATH=/tmp/site/bin:$PATH
  shift
  for what in ${@:-readcost uicostsyn}; do
    echo "=== $what"
    case $what in
    readcost)  # issue 21: what one read of each sampler group costs (NVML's energy read most)
      python3 bench/gpu/read_cost.py 2>&1 | tee "$OUT/read_cost.txt"
      ;;
    uicostsyn)  # issue 21: the synthetic 1,000 and 100 tok/s streams, app against headless (no model:
                # ui_cost gives anubis a GGUF of metadata only)
      python3 bench/ui_cost.py --token-rate 1000,100 --seconds ${UI_S:-20} --repeats ${UI_REPEATS:-2} --goals 2>&1 \
        | tee "$OUT/uicost_synthetic.txt"
      ;;
    esac
  done
  ;;
checks)
  while [ ! -f /root/build.rc ]; do sleep 5; done
  tail -3 /root/build.log; [ "$(cat /root/build.rc)" = 0 ] || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /root/wheel/*.whl

  sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  # the default model
  [ -f /root/model/gemma.gguf ] || cat /root/model/chunk.0* > /root/model/gemma.gguf
  echo "$sha  /root/model/gemma.gguf" | sha256sum -c || exit 1
  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/root/cache
  export ANUBIS_MODEL=/root/model/gemma.gguf ANUBIS_CONFIG=/nonexistent PATH=/tmp/site/bin:$PATH
  M=$ANUBIS_MODEL
  shift
  for what in ${@:-ratio probe plan}; do
    case $what in
    ratio)  # issue 11: worker and minimal loops against llama.cpp's eval timer, FA off and on
      python3 bench/worker_vs_llamacpp.py --model "$M" --gpu-layers -1 --seconds 15 2>&1 | tee "$OUT/ratio_fa0.txt"
      python3 bench/worker_vs_llamacpp.py --model "$M" --gpu-layers -1 --flash-attn --seconds 15 2>&1 \
        | tee "$OUT/ratio_fa1.txt"
      python3 -m anubis_tui bench --gpu-layers -1 --duration 15 --json > "$OUT/bench_gpu.json"
      python3 -c "from anubis_tui.profilers.static import estimate; import os, json
b=json.load(open('$OUT/bench_gpu.json')); e=estimate(os.path.getsize('$M'), gpu_layers=-1)
print(e.line(b['decode_tps']))" | tee "$OUT/static.txt"
      ;;
    probe)  # issue 9 and 11: what crashes llama.cpp here, with and without scalene; AMX
      sc=(python3 -m scalene run --off --cpu-only --cpu-sampling-rate 0.01 -o /tmp/p.json)
      export SCALENE_ALLOCATION_SAMPLING_WINDOW=1048576
      {
      for v in "plain gpu -1:python3 bench/gpu/probe.py $M --gpu-layers -1" \
               "plain cpu extra on:python3 bench/gpu/probe.py $M --extra-bufts on --threads 16" \
               "plain cpu extra on +amx perm:python3 bench/gpu/probe.py $M --extra-bufts on --threads 16 --amx-perm" \
               "plain cpu extra off:python3 bench/gpu/probe.py $M --extra-bufts off --threads 16" \
               "scalene gpu -1:${sc[*]} bench/gpu/probe.py --- $M --gpu-layers -1" \
               "scalene gpu 0:${sc[*]} bench/gpu/probe.py --- $M --gpu-layers 0 --threads 16" \
               "scalene gpu -1 amx perm:${sc[*]} bench/gpu/probe.py --- $M --gpu-layers -1 --amx-perm"; do
        name=${v%%:*}; cmd=${v#*:}
        timeout 120 $cmd > /tmp/probe.log 2>&1; rc=$?
        echo "== $name: rc=$rc"
        grep -E "^ok|xcomp|extra_bufts|AMX|REPACK|model buffer|Fatal|Segmentation|File \"|Error" /tmp/probe.log | tail -14
      done
      } 2>&1 | tee "$OUT/probe.txt"
      ;;
    why)  # why scalene crashes the model load: what it loads first, and a load-order fix
      export SCALENE_ALLOCATION_SAMPLING_WINDOW=1048576
      sc=(python3 -m scalene run --off --cpu-only --cpu-sampling-rate 0.01 -o /tmp/p.json)
      libs=$(python3 -c "import llama_cpp, glob, os; d=os.path.join(os.path.dirname(llama_cpp.__file__), 'lib'); print(':'.join(sorted(glob.glob(d + '/lib*.so'))))")
      {
      python3 bench/gpu/probe.py "$M" --gpu-layers -1 --maps 2>&1 | grep -E "^maps|^numpy" > /tmp/plain.maps
      timeout 120 "${sc[@]}" bench/gpu/probe.py --- "$M" --gpu-layers -1 --maps 2>&1 | grep -E "^maps|^numpy" > /tmp/scalene.maps
      echo "== loaded under scalene, not plain:"; diff /tmp/plain.maps /tmp/scalene.maps | grep "^[<>]"
      echo "== numpy first, plain:"
      timeout 120 python3 -c "import numpy, runpy, sys; sys.argv=['p', '$M', '--gpu-layers', '-1']; runpy.run_path('bench/gpu/probe.py', run_name='__main__')" 2>&1 | grep -E "^ok|Fatal|File \"" | head -4; echo "rc=$?"
      echo "== scalene with llama.cpp's libraries preloaded:"
      LD_PRELOAD=${libs//:/ } timeout 120 "${sc[@]}" bench/gpu/probe.py --- "$M" --gpu-layers -1 2>&1 | grep -E "^ok|Fatal|File \"" | head -4
      echo "== plain python, numpy first, llama libs preloaded:"
      LD_PRELOAD=${libs//:/ } timeout 120 python3 -c "import numpy, runpy, sys; sys.argv=['p', '$M', '--gpu-layers', '-1']; runpy.run_path('bench/gpu/probe.py', run_name='__main__')" 2>&1 | grep -E "^ok|Fatal|File \"" | head -4
      } 2>&1 | tee "$OUT/why.txt"
      ;;
    plan)  # issue 9: py-spy and scalene segments with deltas on the GPU
      python3 -m anubis_tui record --gpu-layers -1 -o "$OUT/gpu-plan.msgpack" \
        --plan "off:10,py-spy@100:10,off:8,py-spy@1000n:8,off:8,scalene@100:10,off:8" 2>&1 | tail -12
      python3 -m anubis_tui report "$OUT/gpu-plan.msgpack" 2>&1 | tee "$OUT/report.txt"
      cp "$OUT/gpu-plan.msgpack.log" "$OUT/worker.log" 2>/dev/null
      ;;
    knobs)  # issue 12: two power limits x two GPU-layer settings, put back at the end and
            # after a kill -9 (by `anubis restore`); the GPU's limits before and after
      q="--query-gpu=power.limit,power.min_limit,power.max_limit,power.default_limit"
      nvidia-smi $q --format=csv | tee "$OUT/limits_before.txt"
      lo=$(nvidia-smi --query-gpu=power.min_limit --format=csv,noheader,nounits | head -1 | cut -d. -f1)
      hi=$(nvidia-smi --query-gpu=power.limit --format=csv,noheader,nounits | head -1 | cut -d. -f1)
      half=$(python3 -c "from anubis_tui.inference.models import read_gguf; from pathlib import Path
print(read_gguf(Path('$M')).layers // 2)")
      python3 -m anubis_tui record --gpu-layers -1 -o "$OUT/gpu-knobs.msgpack" --plan \
        "off:15,power_limit_w=$lo:15,gpu_layers=$half:15,power_limit_w=$hi:15,gpu_layers=all:15" 2>&1 | tail -8
      nvidia-smi $q --format=csv | tee "$OUT/limits_after.txt"
      python3 -m anubis_tui report "$OUT/gpu-knobs.msgpack" 2>&1 | tee "$OUT/knobs_report.txt"
      python3 -m anubis_tui report --json "$OUT/gpu-knobs.msgpack" > "$OUT/knobs_report.json"
      cp "$OUT/gpu-knobs.msgpack.log" "$OUT/knobs_worker.log" 2>/dev/null
      {
        python3 -m anubis_tui record --gpu-layers -1 -o /tmp/k9.msgpack --plan "power_limit_w=$lo:120" \
          > /tmp/k9.log 2>&1 & pid=$!
        for _ in $(seq 60); do grep -q "plan power_limit_w" /tmp/k9.log && break; sleep 1; done
        sleep 3
        kill -9 $pid; wait $pid; echo "killed: rc=$?"
        echo "limit after kill -9: $(nvidia-smi --query-gpu=power.limit --format=csv,noheader)"
        cat ~/.local/state/anubis/device-state.json
        python3 -m anubis_tui restore; echo "restore rc=$?"
        echo "limit after restore: $(nvidia-smi --query-gpu=power.limit --format=csv,noheader)"
        python3 -m anubis_tui report /tmp/k9.msgpack 2>&1 | grep -E "^recovery|^segment|^baseline|limit=" | head -5
      } 2>&1 | tee "$OUT/kill9.txt"
      ;;
    sweep)  # issue 13: three profilers at three rates and a second power limit, against
            # interleaved baselines, 2 repeats; the report, and the limit after
      python3 -m anubis_tui sweep --gpu-layers -1 --segment-s 8 --repeats 2 --warmup-s 30 \
        --profilers py-spy,py-spy-native,scalene --rates 10,100,1000 --knob power_limit_w=200 \
        -o "$OUT/gpu-sweep.msgpack" > "$OUT/sweep_report.txt" 2> "$OUT/sweep_err.txt"
      echo "sweep rc=$?"
      sed -n '/^sweep /,$p' "$OUT/sweep_report.txt"; grep -v "^anubis: sweep \[" "$OUT/sweep_err.txt" | tail -8
      python3 -m anubis_tui report --json "$OUT/gpu-sweep.msgpack" > "$OUT/sweep_report.json"
      nvidia-smi --query-gpu=power.limit --format=csv,noheader
      du -sh "$OUT/gpu-sweep.profiles"
      ;;
    gate)  # issue 19: compare's false positives (A/A) and detection of a 10 % slowdown
      python3 bench/gate_calibration.py --gpu-layers -1 --runs ${GATE_RUNS:-6} --seconds ${GATE_S:-30} --dir /tmp/gate \
        --lengths 10,20,30 2>&1 | tee "$OUT/gate.txt"
      python3 bench/gate_calibration.py --reuse /tmp/gate --lengths 10,20,30 --json > "$OUT/gate.json"
      ;;
    sweeps2)  # issue 19: two identical sweeps back to back must recommend the same rates
      for i in 1 2; do
        python3 -m anubis_tui sweep --gpu-layers -1 --segment-s 8 --repeats 2 --warmup-s 20 \
          --profilers py-spy,scalene --rates 100,1000 -o "$OUT/sweep2-$i.msgpack" \
          > "$OUT/sweep2-$i.txt" 2> "$OUT/sweep2-$i.err"
        echo "sweep $i rc=$?"; grep -E "recommended|inconclusive|warm-up" "$OUT/sweep2-$i.txt" | head -12
      done
      ;;
    attach)  # issue 23: the model through anubis's worker and through an attached
             # llama_cpp.server (--n_gpu_layers -1), alternated: tok/s, J/token, J/request
      python3 bench/attach_vs_worker.py --gpu-layers -1 --rounds ${ATTACH_ROUNDS:-2} --seconds ${ATTACH_S:-30} \
        --dir "$OUT/attach" 2>&1 | tee "$OUT/attach.txt"
      ;;
    uicostmodel)  # issue 21: only the real-model half of uicost
      ANUBIS_GPU_LAYERS=-1 python3 bench/ui_cost.py --seconds ${UI_S:-20} --model --repeats ${UI_REPEATS:-2} 2>&1 \
        | tee "$OUT/uicost_model.txt"
      ;;
    uicost)  # issue 21: the app's CPU over headless record with every layer on the GPU, then the
             # synthetic 1,000 and 100 tok/s streams side by side (a bare pty where tmux is missing)
      ANUBIS_GPU_LAYERS=-1 python3 bench/ui_cost.py --seconds ${UI_S:-20} --model --repeats ${UI_REPEATS:-2} 2>&1 \
        | tee "$OUT/uicost_model.txt"
      python3 bench/ui_cost.py --token-rate 1000,100 --seconds ${UI_S:-20} --repeats ${UI_REPEATS:-2} --goals 2>&1 \
        | tee "$OUT/uicost_synthetic.txt"
      ;;
    sensors)  # issue 18: the meter tree on a real GPU server (NVML), text and JSON
      python3 -m anubis_tui sensors 2>&1 | grep -v -E "^    (sys|proc)\." | tee "$OUT/sensors.txt"
      python3 -m anubis_tui sensors --json > "$OUT/sensors.json"
      ;;
    quality)  # issue 26: the model quantized to q8_0 and q4_0 under $OUT/quality-models, the three
              # x KV f16/q8_0 swept with --quality (about 5 min): the report, the quality table
              # (text and JSON), the front's plot, result rows with perplexity. The variants
              # (230-280 MB each) are deleted at the end: too big to come back; sidecars stay.
      bash bench/gpu/quality.sh "$M" "$OUT" --gpu-layers -1 2>&1 | tee "$OUT/quality.txt"
      rm -f "$OUT"/quality-models/*.gguf
      ;;
    agent)  # issue 14: anubis agent driven by a consumer process on this machine
      python3 bench/gpu/agent_check.py --gpu-layers -1 2>&1 | tee "$OUT/agent_check.txt"
      ;;
    esac
  done
  ;;
*) echo "usage: run.sh setup|chunk N|checks [ratio probe plan knobs sweep gate sweeps2 agent attach uicost sensors quality]"; exit 2 ;;
esac
