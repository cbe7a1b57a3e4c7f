"""The model card's HTML page rendered by a real headless browser (Debian's chromium): its images load, its tables
are there, and the screenshot is not blank."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from test_registry import make_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: The flags a sandboxed root session needs; no network, no first-run work (see the machine notes).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
#: Added to a copy of the page: writes what the browser loaded into the DOM, which --dump-dom prints.
PROBE = ("<script>window.addEventListener('load', () => { document.body.dataset.images = "
         "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length; "
         "document.body.dataset.tables = document.querySelectorAll('table').length; });</script>")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's package)")
def test_the_card_renders_in_a_headless_browser(tmp_path):
    from PIL import Image

    from textclf.registry import ModelRegistry

    registry = ModelRegistry(str(tmp_path / "registry"))
    version = registry.register(make_run(tmp_path / "run"))
    page = tmp_path / "card.html"
    page.write_text(registry.card(version, html=True).replace("</body>", PROBE + "</body>"), encoding="utf-8")
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([CHROMIUM, *FLAGS, *profile, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert 'data-images="2"' in dom and 'data-tables="' in dom, dom[-400:]
    tables = int(dom.split('data-tables="')[1].split('"')[0])
    assert tables == 3  # headline metrics, per class, export checks (no robustness run here)
    shot = tmp_path / "card.png"
    subprocess.run([CHROMIUM, *FLAGS, *profile, "--window-size=1000,2400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1000, 2400)
    assert len(set(image.resize((100, 240)).getdata())) > 20  # text, tables and plots, not a blank page
