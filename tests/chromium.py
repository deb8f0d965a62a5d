"""Headless Chromium (Debian's, installed by scripts/install) for tests that open rendered pages."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

#: The browser, or None where it is not installed (tests then skip; under CI=true a skip fails).
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def run_chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Chromium headless with a throwaway profile under ``tmp_path``, no network chatter of its
    own, console messages on stderr; ``args`` ends with the URL."""
    assert CHROMIUM is not None
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def dump_dom(page: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The DOM of a local page as Chromium renders it (``--dump-dom``)."""
    return run_chromium(["--dump-dom", page.resolve().as_uri()], tmp_path)
