#!/usr/bin/env python
"""The glued values of executed chapter notebooks, to compare two builds.

    python ci/glue_values.py _build/stage/book/03_neural_rank_collapse.ipynb     # JSON {key: text}
    python ci/glue_values.py --diff OLD.ipynb NEW.ipynb                          # what changed

Each value is the text a reader sees: ``text/markdown`` where the glue has it, else
``text/plain`` (glue keeps its data under a ``mime_prefix``, removed here). ``--diff`` prints one line per key that was added, removed or changed, and
a last line with the counts; exit status 0 whether or not they differ.
"""

from __future__ import annotations

import argparse
import json
import sys

import nbformat


def glued_values(nb) -> dict[str, str]:
    """``{key: shown text}`` of every ``glue`` output of notebook ``nb`` (last one wins)."""
    out = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            scrap = o.get("metadata", {}).get("scrapbook", {})
            name = scrap.get("name")
            if name:  # glue stores its data under a prefix: application/papermill.record/text/plain
                prefix = scrap.get("mime_prefix", "")
                data = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in o.get("data", {}).items()}
                text = data.get("text/markdown", data.get("text/plain", "<figure>" if "image/png" in data else ""))
                out[name] = "".join(text) if isinstance(text, list) else str(text)
    return out


def read(path: str) -> dict[str, str]:
    return glued_values(nbformat.read(path, as_version=4))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="+")
    ap.add_argument("--diff", action="store_true", help="compare two notebooks: OLD NEW")
    args = ap.parse_args(argv)
    if not args.diff:
        json.dump({p: read(p) for p in args.notebooks} if len(args.notebooks) > 1 else read(args.notebooks[0]),
                  sys.stdout, indent=1, ensure_ascii=False)
        print()
        return 0
    if len(args.notebooks) != 2:
        ap.error("--diff takes two notebooks: OLD NEW")
    old, new = read(args.notebooks[0]), read(args.notebooks[1])
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
    for k in removed:
        print(f"- {k}: {old[k]!r}")
    for k in added:
        print(f"+ {k}: {new[k]!r}")
    for k in changed:
        print(f"~ {k}: {old[k]!r} -> {new[k]!r}")
    print(f"{len(old)} keys before, {len(new)} after: {len(changed)} changed, {len(added)} added, "
          f"{len(removed)} removed, {len(set(old) & set(new)) - len(changed)} equal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
