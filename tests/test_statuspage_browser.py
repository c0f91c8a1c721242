"""The status page in a real headless browser (Debian chromium + chromium-driver, driven by Selenium),
served by the real exporter process after a real scrape of an open and a refused loopback target."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from tests.helpers.exporter_process import REPO, free_port, http, start_exporter

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} is missing (Debian package {package})")
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a browser or driver
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def exporter_url(config_file):
    port = free_port()
    process = start_exporter(f"--config.file={config_file}", f"--web.listen-address=127.0.0.1:{port}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


def test_the_status_page_in_chromium(browser, exporter_url, listener, closed_port):
    from selenium.webdriver.common.by import By

    assert http("GET", exporter_url + "/metrics")[0] == 200  # one scrape: every target has a state
    browser.get(exporter_url + "/")
    assert browser.title == "connectivity_exporter"

    def row(port: int):
        return browser.find_element(By.CSS_SELECTOR, f'#targets tr[data-target="127.0.0.1:{port}"]')

    open_state = row(listener).find_element(By.CSS_SELECTOR, "td.state")
    refused_state = row(closed_port).find_element(By.CSS_SELECTOR, "td.state")
    assert (open_state.text, refused_state.text) == ("open", "refused")
    # Each state has its own colour, as the browser computed it from the inline CSS.
    open_colour = open_state.value_of_css_property("background-color")
    refused_colour = refused_state.value_of_css_property("background-color")
    assert open_colour != refused_colour
    assert "rgba(0, 0, 0, 0)" not in (open_colour, refused_colour)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#recent tbody tr")) == 2
    assert len(browser.find_elements(By.CSS_SELECTOR, "#failures tbody tr")) == 1

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "status-page.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000

    # The failure's recorded transcript, then the live debug probe of the refused target.
    browser.find_element(By.CSS_SELECTOR, "#failures tbody tr a").click()
    recorded = browser.find_element(By.TAG_NAME, "body").text
    assert f"of 127.0.0.1:{closed_port} with module tcp_connect" in recorded
    assert f"Trying 127.0.0.1:{closed_port}..." in recorded
    browser.back()
    row(closed_port).find_element(By.LINK_TEXT, "probe now").click()
    live = browser.find_element(By.TAG_NAME, "body").text
    assert live.startswith(f"Probe of 127.0.0.1:{closed_port} with module tcp_connect")
    assert "Verdict: FAILURE, state refused" in live
    assert "ECONNREFUSED" in live
