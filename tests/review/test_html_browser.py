"""report.html in a real headless browser (Debian's chromium): it renders from disk with no network,
the embedded plot loads and is visible, and the console stays clean. The screenshot is kept in
tests/artifacts/report_screenshot.png for a person to look at."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from harness.commands.main import main

HERE = Path(__file__).resolve().parents[1]
FIXTURE = HERE / "fixtures" / "karpathy_mar8_results.tsv"
ARTIFACTS = HERE / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run does it)"
)

# Console messages that mean the page is broken (script errors, blocked or failed loads).
BAD_CONSOLE = re.compile(
    r"Uncaught|CONSOLE\(\d+\)\].*(error|Error)|Failed to load resource|net::ERR_", re.IGNORECASE
)


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        "--hide-scrollbars", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    tsv = out / "night.tsv"
    # A description with markup must arrive as text, not as an element.
    tsv.write_text(FIXTURE.read_text() + "abcdef1\t0.990000\t44.0\tdiscard\t<b>bold?</b> <img src=x>\n")
    assert main(["report", "--tsv", str(tsv), "--out", str(out)]) == 0
    return out / "report.html"


def test_report_renders_with_visible_plot_and_clean_console(page: Path, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report_screenshot.png"
    shot.unlink(missing_ok=True)
    result = chromium(
        tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,1400", page.as_uri()
    )
    assert shot.is_file(), result.stderr[-3000:]
    bad = [line for line in result.stderr.splitlines() if BAD_CONSOLE.search(line)]
    assert not bad, bad

    pixels = mpimg.imread(str(shot))[..., :3]  # floats in [0, 1]
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1200
    assert pixels.std() > 0.05, "the screenshot is blank"
    # The plot's kept points and running-best line are #2e7d32; nothing else on the page is that green.
    green = np.abs(pixels - np.array([0x2E, 0x7D, 0x32]) / 255.0).max(axis=-1) < 0.12
    assert green.sum() > 500, f"the plot is not visible ({green.sum()} plot-green pixels)"
    rows = np.nonzero(green.any(axis=1))[0]
    assert rows.min() > 150, "the plot should sit below the summary table"


def test_dom_has_plot_tables_and_escaped_text(page: Path, tmp_path: Path) -> None:
    result = chromium(tmp_path / "profile-dom", "--dump-dom", page.as_uri())
    dom = result.stdout
    assert "<h1>" in dom and 'id="summary"' in dom and 'id="kept"' in dom and 'id="all"' in dom
    assert re.search(r'<img class="plot" id="progress" alt="progress plot" src="data:image/png;base64,', dom)
    assert "&lt;b&gt;bold?&lt;/b&gt; &lt;img src=x&gt;" in dom  # the markup stayed text
    assert "<b>bold?</b>" not in dom
    bad = [line for line in result.stderr.splitlines() if BAD_CONSOLE.search(line)]
    assert not bad, bad


def test_embedded_plot_decodes_in_the_browser(page: Path, tmp_path: Path) -> None:
    """The page has no script of its own; a probe copy asks the browser whether the image decoded."""
    probe = tmp_path / "probe.html"
    script = (
        "<script>window.addEventListener('load', () => { const img = document.getElementById('progress');"
        " document.body.setAttribute('data-plot', img.complete + ':' + img.naturalWidth + 'x' + img.naturalHeight);"
        " });</script>"
    )
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    result = chromium(tmp_path / "profile-probe", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    match = re.search(r'data-plot="(\w+):(\d+)x(\d+)"', result.stdout)
    assert match, result.stderr[-3000:]
    assert match.group(1) == "true" and int(match.group(2)) == 1400 and int(match.group(3)) == 700
