"""Share of public definitions in a package that carry a docstring.

Counts module-level functions and classes, and the public methods of those
classes (names not starting with ``_``; nested functions are not counted).
A definition is public when its name has no leading underscore and, for a
method, its class is public too.

Usage: ``python3 scripts/docstring_coverage.py [PACKAGE_DIR] [--list] [--files F ...]``.
Prints ``documented/total (percent)`` overall and per file with ``--list``;
``--missing`` prints each undocumented definition as ``path:line name``.
Exit status is 0 (a measurement, not a gate).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

Def = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def public_defs(tree: ast.Module) -> list[tuple[str, Def]]:
    """Public module-level functions and classes, and public methods of public classes.

    Returns (qualified name, node) pairs in source order.
    """
    out: list[tuple[str, Def]] = []
    for node in tree.body:
        if not isinstance(node, Def) or node.name.startswith("_"):
            continue
        out.append((node.name, node))
        if isinstance(node, ast.ClassDef):
            for sub in node.body:
                is_def = isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef)
                if is_def and not sub.name.startswith("_"):
                    out.append((f"{node.name}.{sub.name}", sub))
    return out


def measure(path: Path) -> tuple[int, int, list[tuple[int, str]]]:
    """(documented, total, [(line, name) undocumented]) for one source file.

    Raises SyntaxError when the file does not parse.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    defs = public_defs(tree)
    missing = [(n.lineno, q) for q, n in defs if ast.get_docstring(n) is None]
    return len(defs) - len(missing), len(defs), missing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default="anubis_tui")
    ap.add_argument("--files", nargs="*", help="measure only these files")
    ap.add_argument("--list", action="store_true", help="print each file's figure")
    ap.add_argument("--missing", action="store_true", help="print each undocumented definition")
    a = ap.parse_args(argv)
    files = [Path(f) for f in a.files] if a.files else sorted(Path(a.root).rglob("*.py"))
    doc = tot = 0
    for f in files:
        d, t, missing = measure(f)
        doc, tot = doc + d, tot + t
        if a.list and t:
            print(f"{f}: {d}/{t}")
        if a.missing:
            for line, name in missing:
                print(f"{f}:{line} {name}")
    share = 100.0 * doc / tot if tot else 100.0
    print(f"{doc}/{tot} public definitions documented ({share:.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
