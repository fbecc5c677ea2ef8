from __future__ import annotations

from anubis_tui.cli import main

raise SystemExit(main())
