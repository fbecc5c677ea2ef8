#!/usr/bin/env bash
# Issue 26 on one machine: quantize MODEL to q8_0 and q4_0 into OUT/quality-models, sweep the
# three models x KV f16/q8_0 with --quality, then the report, its --plot (the quality front),
# the quality table as JSON and the result rows (with perplexity) into OUT.
#   bash bench/gpu/quality.sh MODEL OUT [extra sweep flags, e.g. --gpu-layers -1]
# Durations: QUALITY_SEGMENT_S (8), QUALITY_REPEATS (2), QUALITY_WARMUP_S (20): about
# 5 minutes on an H200 with every layer on the GPU. On a CPU, tiny values prove the commands.
set -uo pipefail
M=$1 OUT=$2
shift 2
d="$OUT/quality-models"
mkdir -p "$d"
python3 -m anubis_tui models quantize "$M" --types q8_0,q4_0 --out-dir "$d" --force \
  > "$OUT/quality_variants.txt" 2> "$OUT/quality_quantize_err.txt"
rc=$?; echo "quantize rc=$rc"; cat "$OUT/quality_variants.txt"
[ $rc = 0 ] || { tail -3 "$OUT/quality_quantize_err.txt"; exit 1; }
models="$M,$(cut -f1 "$OUT/quality_variants.txt" | paste -sd,)"
rm -f "$OUT/quality.msgpack" "$OUT/quality.png" "$OUT/quality_rows.jsonl"
python3 -m anubis_tui sweep --flash-attn "$@" --knob "model=$models" --knob kv_type=f16,q8_0 \
  --quality --segment-s "${QUALITY_SEGMENT_S:-8}" --repeats "${QUALITY_REPEATS:-2}" \
  --warmup-s "${QUALITY_WARMUP_S:-20}" --cooldown-s 0 -o "$OUT/quality.msgpack" \
  > "$OUT/quality_sweep.txt" 2> "$OUT/quality_sweep_err.txt"
rc=$?; echo "sweep rc=$rc"
grep "^anubis: quality:" "$OUT/quality_sweep_err.txt"
[ $rc = 0 ] || { grep -v "^anubis: sweep \[" "$OUT/quality_sweep_err.txt" | tail -5; exit 1; }
python3 -m anubis_tui report "$OUT/quality.msgpack" --plot "$OUT/quality.png" \
  --rows "$OUT/quality_rows.jsonl" > "$OUT/quality_report.txt" || exit 1
sed -n '/^quality /,$p' "$OUT/quality_report.txt" | tee "$OUT/quality_table.txt"
python3 -m anubis_tui report --json "$OUT/quality.msgpack" \
  | python3 -c "import json, sys; print(json.dumps(json.load(sys.stdin)['quality'], indent=1))" \
  > "$OUT/quality_table.json"
echo "rows: $(wc -l < "$OUT/quality_rows.jsonl"), plot: $(stat -c %s "$OUT/quality.png") bytes"
