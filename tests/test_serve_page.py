"""The draw-a-digit page of --mode=serve in headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium; nothing is downloaded): strokes of a "1" and of a "7" drawn
with pointer events on the canvas are read as 1 and 7 by a real-MNIST model, and the page's
screenshot is written for the docs (docs/images/serve.png)."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("fastapi", reason="--mode=serve needs the serve extra")
webdriver = pytest.importorskip("selenium.webdriver", reason="the test extra's selenium drives "
                                "the browser")
from selenium.webdriver.common.actions.action_builder import ActionBuilder  # noqa: E402
from selenium.webdriver.common.actions.pointer_input import PointerInput  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

import serving  # noqa: E402
from conftest import REPO  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
    "(apt-get install chromium chromium-driver)")]
# Strokes on the 280x280 canvas, as (x, y) points: a "1" is one stroke down, a "7" a bar and
# a slanted stroke down to the left.
DIGITS = {"1": [[(150, 40), (146, 140), (142, 240)]],
          "7": [[(70, 50), (150, 50), (210, 50), (185, 120), (150, 190), (125, 245)]]}


@pytest.fixture(scope="module")
def browser():
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1000,760",
              "--disable-dev-shm-usage"):
    options.add_argument(arg)
  driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
  yield driver
  driver.quit()


def _draw(driver, canvas, strokes) -> None:
  """Pointer events (a pen: pointerdown, pointermove, pointerup) along each stroke, at canvas
  pixels; WebDriver's pointer offsets are from the element's centre, in CSS pixels."""
  scale = canvas.size["width"] / 280
  actions = ActionBuilder(driver, mouse=PointerInput("pen", "pen"))
  for stroke in strokes:
    points = [(round((x - 140) * scale), round((y - 140) * scale)) for x, y in stroke]
    actions.pointer_action.move_to(canvas, *points[0]).pointer_down()
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
      for t in (0.25, 0.5, 0.75, 1.0):
        actions.pointer_action.move_to(canvas, round(x0 + (x1 - x0) * t),
                                       round(y0 + (y1 - y0) * t))
    actions.pointer_action.pointer_up()
  actions.perform()


def _answer(driver) -> str:
  WebDriverWait(driver, 30).until(
      lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")
  return driver.find_element(By.ID, "answer").text


def test_drawn_digits_are_read_and_the_page_is_pictured(browser, mnist_served_run):
  with serving.serving(mnist_served_run, "--max_batch=8") as server:
    browser.get(server.url)
    canvas = browser.find_element(By.ID, "pad")
    read = {}
    for digit, strokes in DIGITS.items():
      browser.find_element(By.ID, "clear").click()
      _draw(browser, canvas, strokes)
      read[digit] = _answer(browser)
      bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
      assert len(bars) == 10 and browser.find_element(By.ID, "status").text == ""
    assert read == {"1": "1", "7": "7"}
    browser.save_screenshot(str(REPO / "docs" / "images" / "serve.png"))
