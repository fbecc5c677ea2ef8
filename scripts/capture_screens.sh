#!/usr/bin/env bash
# The app in tmux on the default model, its screen captured after each key a newcomer presses:
#   bash scripts/capture_screens.sh OUTDIR [COLSxROWS ...]     (default: 80x24 200x60)
# For each size: start (12 s in), ? (help), end of help (scrolled), Escape, p (py-spy on),
# - (rate down), + (rate up), r (the recording stops), r (a new one starts), t and T (threads
# down, up), q (quit: the summary it prints).
# Each screen is OUTDIR/<size>-<step>.txt (tmux capture-pane -p).
set -uo pipefail
out=${1:?usage: capture_screens.sh OUTDIR [COLSxROWS ...]}
shift
mkdir -p "$out"
sizes=${*:-80x24 200x60}
for size in $sizes; do
  cols=${size%x*} rows=${size#*x}
  sock=anubis-screens-$$-$size
  tmux -L "$sock" new-session -d -s s -x "$cols" -y "$rows" \
    "anubis run --threads 1 --record $out/$size-session.msgpack; sleep 10"
  grab() { sleep "${2:-2}"; tmux -L "$sock" capture-pane -p -t s > "$out/$size-$1.txt"; }
  keys() { tmux -L "$sock" send-keys -t s "$@"; }
  grab start 12
  keys '?'; grab help
  keys End; grab help-end 1
  keys Escape; sleep 1
  keys p; grab p 4
  keys -; grab minus
  keys +; grab plus
  keys r; grab r 3
  keys r; grab r-stop 3
  keys t; grab t 3
  keys T; grab T 3
  keys q; grab after-quit 3
  tmux -L "$sock" kill-server 2>/dev/null
done
ls "$out"
