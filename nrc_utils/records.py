"""The run records of a book build, as the Reproducibility page shows them.

``ci/build_book.py`` writes one JSON file per run (``_build/records.json``): the profile, the
date, the command, the git commit, the hardware, the package versions, and per chapter its
status, wall time, device, parameters, ``--set`` overrides and the SHA-256 of its source. A
chapter whose last run failed keeps the record of the notebook that is staged (the last good
run) with the failed attempt under ``last_attempt``. The functions here turn that file into the
page's tables (pandas DataFrames) and sentences.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["read", "summary_sentence", "chapter_table", "total_wall_s", "machine_table", "package_table",
           "parameter_table"]


def read(path: str | Path) -> dict[str, Any] | None:
    """The records at ``path``, or ``None`` when there is no file (the page run on its own).
    A file that is not a JSON object is refused with one line naming it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable run record ({err}); run `make book` to write it again") from None
    if not isinstance(records, dict) or not isinstance(records.get("chapters", {}), dict):
        raise ValueError(f"{path} is not a run record (no chapters); run `make book` to write it again")
    return records


def summary_sentence(records: dict | None, records_path: str) -> str:
    """One sentence on how this build was made, or on why there is nothing to report."""
    if records is None:
        return (f"No run records were found at `{records_path}`: this page was executed on its own, "
                "outside `ci/build_book.py`, so there is nothing to report; run `make book` to produce them.")
    return f"Built with the `{records['profile']}` profile on {records['date']} by `{records['command']}`."


def _status(chapter: dict) -> str:
    status = chapter.get("status") or ""
    attempt = chapter.get("last_attempt")
    if attempt:
        status += (f" (the last run, {attempt.get('started', '?')}, {attempt.get('status', 'failed')}"
                   f" with {attempt.get('error', 'an error')}: this page shows the run before it)")
    return status


def chapter_table(records: dict) -> "object":
    """One row per chapter: status, wall time, profile, device, overrides."""
    import pandas as pd

    rows = [{"chapter": stem, "status": _status(c), "wall time (s)": c.get("wall_s"), "profile": c.get("profile"),
             "device": c.get("device", ""), "overrides": ", ".join(c.get("overrides") or [])}
            for stem, c in records["chapters"].items()]
    return pd.DataFrame(rows, columns=["chapter", "status", "wall time (s)", "profile", "device", "overrides"])


def total_wall_s(records: dict | None) -> float:
    """The summed wall time of the chapters recorded (0 without records)."""
    return sum(float(c.get("wall_s") or 0.0) for c in (records or {}).get("chapters", {}).values())


def machine_table(records: dict) -> "object":
    """The machine and the commit the build ran on."""
    import pandas as pd

    hw, git = records.get("hardware") or {}, records.get("git") or {}
    commit = git.get("commit") or "unknown (not a git checkout)"
    if git.get("dirty"):
        commit += " (with uncommitted changes)"
    rows = [("CPU", hw.get("cpu")), ("cores", hw.get("cores")), ("threads per kernel", records.get("threads")),
            ("memory (GiB)", hw.get("ram_gb")), ("accelerator", hw.get("device")),
            ("platform", hw.get("platform")), ("git commit", commit)]
    return pd.DataFrame(rows, columns=["machine", ""])


def package_table(records: dict) -> "object":
    """The package versions, sorted by name."""
    import pandas as pd

    return pd.DataFrame(sorted((records.get("packages") or {}).items()), columns=["package", "version"])


def parameter_table(records: dict) -> "object":
    """One row per chapter and parameter, with the value it ran with (as Python writes it)."""
    import pandas as pd

    rows = [{"chapter": stem, "parameter": name, "value": repr(value)}
            for stem, c in records["chapters"].items() for name, value in (c.get("parameters") or {}).items()]
    return pd.DataFrame(rows, columns=["chapter", "parameter", "value"])
