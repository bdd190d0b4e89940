"""The HTML report in a real headless Chromium (Debian's chromium + chromedriver): it renders, every image
loads, and the console stays free of errors."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,2000",
]


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        subprocess.run(["bash", str(ROOT / "deploy" / "system-deps.sh")], check=True)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


def test_report_renders_offline_with_every_image_and_no_console_error(iris_run, browser, tmp_path):
    report = iris_run.path / "report.html"
    browser.get(report.as_uri())
    assert browser.title == f"mlkube run {iris_run.id}"
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])"
    )
    assert [alt for alt, _ in images] == ["algorithm_comparison", "confusion_matrix"]
    assert all(loaded for _, loaded in images)
    rows = browser.execute_script("return document.querySelectorAll('#leaderboard tr').length")
    assert rows == 1 + 6  # header + the six tutorial models
    headings = browser.execute_script(
        "return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)"
    )
    assert headings == ["Problem", "Classical models", "Serving", "Environment and timings"]
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    assert "http" not in report.read_text().replace("http-equiv", "")  # nothing fetched from a network
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000
