"""Write docs/rekognition-coverage.md from botocore's Rekognition model and regard's operations.

python scripts/rekognition_coverage.py          # rewrite the file
python scripts/rekognition_coverage.py --check  # exit 1 if the file is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

from regard.api.rekognition.coverage import render

TARGET = Path(__file__).resolve().parents[1] / "docs" / "rekognition-coverage.md"


def main(argv: list[str]) -> int:
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
