"""A stand-in for ssh whose link drops: it plays a committed recording's records up to a
time, as `anubis agent` would write them, then says what ssh says and exits 255.

    python fake_ssh.py RECORDING UNTIL_S -- HOST REMOTE_CMD

The host and the remote command are taken as ssh takes them and not run.
"""

from __future__ import annotations

import sys

from anubis_tui.recording.format import pack
from anubis_tui.recording.reader import read_all
from anubis_tui.records import Footer


def main(argv: list[str]) -> int:
    if "--" not in argv or len(argv) < 4:
        print("fake ssh: usage RECORDING UNTIL_S -- HOST CMD", file=sys.stderr)
        return 2
    path, until_s = argv[0], float(argv[1])
    host = argv[argv.index("--") + 1]
    records, _ = read_all(path)
    out = sys.stdout.buffer
    for rec in records:
        if isinstance(rec, Footer) or getattr(rec, "t", 0) > until_s * 1e9:
            continue
        out.write(pack(rec))
    out.flush()
    print(f"Connection to {host} closed by remote host.", file=sys.stderr)
    return 255


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
