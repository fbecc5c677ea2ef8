#!/usr/bin/env bash
# The system packages the test suite drives, installed when missing (Debian/Ubuntu, apt-get):
#   tmux             the end-to-end UI tests run the real app in tmux and read the screen back
#   prometheus       a real Prometheus server scrapes the exporter plugin
#   openssh-server   `anubis run --remote` is tested against sshd on loopback
#   openssh-client   ... through the system ssh
#   chromium         the results database's HTML export is opened in a real headless browser
# Part of the README's test command; .ci/run runs that same command. Needs root or sudo when
# something is missing; does nothing (and needs nothing) when all are there.
set -euo pipefail

missing=()
command -v tmux >/dev/null || missing+=(tmux)
command -v prometheus >/dev/null || missing+=(prometheus)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null || missing+=(openssh-client)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "test-deps: install ${missing[*]} with your package manager (no apt-get here)" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "test-deps: ${missing[*]} missing; run as root or install sudo" >&2; exit 1; }
  sudo=(sudo)
fi
echo "test-deps: installing ${missing[*]}" >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
