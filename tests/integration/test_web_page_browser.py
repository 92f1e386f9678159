"""The web page in a real headless browser: Debian's chromium driven through chromedriver
(selenium). Skipped, naming what is missing, when chromium, chromedriver or selenium is
absent (``apt-get install -y chromium chromium-driver``; ``.ci/run`` installs them)."""

import shutil
import struct
import zlib

import pika
import pytest

pytestmark = pytest.mark.timeout(90)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WIDTH, HEIGHT = 1200, 800


def _missing() -> str | None:
    missing = [name for name, found in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not found]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (the test extra)")
    return ", ".join(missing) or None


@pytest.fixture
def browser(tmp_path):
    missing = _missing()
    if missing:
        pytest.skip(f"the browser test needs {missing} (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--window-size={WIDTH},{HEIGHT}",
                "--force-device-scale-factor=1", "--hide-scrollbars"):
        options.add_argument(arg)
    # Both paths given: selenium's driver manager is never asked to download anything.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER,
                                                               log_output=str(tmp_path / "chromedriver.log")))
    driver.set_page_load_timeout(30)
    # The viewport exactly WIDTH x HEIGHT (a headless window's viewport is smaller than the window).
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
    try:
        yield driver
    finally:
        driver.quit()


def png_pixels(data: bytes) -> tuple[int, int, set[bytes]]:
    """Width, height and the distinct pixels of an 8-bit RGB or RGBA PNG (what chromium
    writes), read with the standard library: a check that the screenshot is a real image."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert header is not None
    width, height, depth, colour = header[:4]
    assert depth == 8 and colour in (2, 6), header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    pixels: set[bytes] = set()
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        if y % 8 == 0:  # a sample of rows is enough to tell a page from a blank
            pixels.update(bytes(line[x:x + 3]) for x in range(0, stride, bpp * 4))
        prev = line
    return width, height, pixels


def test_page_shows_queue_depth_in_a_browser(mqemu_start, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    node = mqemu_start(ports={"http": 0})
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.ports["amqp"]))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("orders")
        ch.queue_declare("invoices")
        for i in range(7):
            ch.basic_publish("", "orders", f"o{i}".encode())
        ch.basic_publish("", "invoices", b"i0")

        browser.get(f"http://127.0.0.1:{node.ports['http']}/")
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "login").is_displayed())
        browser.find_element(By.ID, "user").send_keys("guest")
        browser.find_element(By.ID, "password").send_keys("guest")
        browser.find_element(By.ID, "login-button").click()

        def orders_row(d):
            # Read the table in one script: each poll replaces the rows, so elements found in one
            # call may be gone (stale) by the next.
            rows = d.execute_script("return Array.from(document.querySelectorAll('#queues tr'), "
                                    "r => Array.from(r.cells, c => c.textContent))")
            return next((cells for cells in rows if len(cells) > 3 and cells[1] == "orders"), None)
        cells = WebDriverWait(browser, 30).until(orders_row)
        assert cells[:7] == ["/", "orders", "classic", "7", "7", "0", "0"]
        assert "guest" in browser.find_element(By.ID, "connections").text
        assert browser.find_element(By.ID, "role").text == "active"
        # A second poll has rates: the deliveries of a consumer show up as a deliver rate.
        ch.basic_consume("orders", lambda c, m, p, b: None, auto_ack=True)
        conn.process_data_events(time_limit=0.2)
        WebDriverWait(browser, 30).until(lambda d: (orders_row(d) or [""] * 9)[3] == "0")
        assert orders_row(browser)[6] == "1"

        shot = tmp_path / "page.png"
        assert browser.save_screenshot(str(shot))
        width, height, pixels = png_pixels(shot.read_bytes())
        assert (width, height) == (WIDTH, HEIGHT)
        assert len(pixels) > 20, f"a blank screenshot ({len(pixels)} colours)"  # text, header, table lines
    finally:
        conn.close()
