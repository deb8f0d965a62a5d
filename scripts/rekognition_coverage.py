"""Write docs/rekognition-coverage.md from botocore's Rekognition model and regard's operations.

python scripts/rekognition_coverage.py          # rewrite the file
python scripts/rekognition_coverage.py --check  # exit 1 if the file is stale

Either way it first checks that the API's operation table serves exactly the operations that the
catalogue (regard.catalogue) says it serves, and exits 1 naming the difference if not.
"""

from __future__ import annotations

import sys
from pathlib import Path

from regard.api.rekognition.coverage import render
from regard.api.rekognition.operations import OPERATIONS
from regard.catalogue import served_names

TARGET = Path(__file__).resolve().parents[1] / "docs" / "rekognition-coverage.md"


def catalogue_mismatch() -> str | None:
    """What the API's operation table and the catalogue's served operations disagree on, if anything."""
    api, catalogue = set(OPERATIONS), served_names()
    if api == catalogue:
        return None
    parts = []
    if api - catalogue:
        parts.append("served but not in the catalogue: " + ", ".join(sorted(api - catalogue)))
    if catalogue - api:
        parts.append("in the catalogue but not served: " + ", ".join(sorted(catalogue - api)))
    return "; ".join(parts)


def main(argv: list[str]) -> int:
    mismatch = catalogue_mismatch()
    if mismatch:
        print(f"src/regard/catalogue.py and the API's operations disagree: {mismatch}", file=sys.stderr)
        return 1
    text = render()
    if "--check" in argv:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is stale; run python scripts/rekognition_coverage.py", file=sys.stderr)
            return 1
        return 0
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
