"""The search page in a real headless browser (Debian's chromium and chromedriver; nothing is downloaded):
a typed query and an uploaded image both show the expected results, and only indexed files are served."""
import os
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from retrieval import sources
from retrieval.index import CodeIndex
from retrieval.searcher import Searcher, model_for
from retrieval.server import make_server

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def page(image_index):
    """The page served on a free loopback port by a server thread; yields (url, searcher)."""
    searcher = Searcher(CodeIndex(image_index), model_for(CodeIndex(image_index), device="cpu"))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = make_server(searcher, "127.0.0.1", listener.getsockname()[1], k=6)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "the search page did not start within 20 s"
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", searcher
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        pytest.fail(f"the search page is tested in Debian's headless chromium, but {', '.join(missing)} is missing: "
                    f"apt-get install chromium chromium-driver (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def shown_results(browser) -> list[tuple[int, int]]:
    """(item id, distance) of every result on the page, once its images have loaded."""
    WebDriverWait(browser, 20).until(lambda b: b.execute_script(
        "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))
    return [(int(r.get_attribute("data-id")), int(r.get_attribute("data-distance")))
            for r in browser.find_elements(By.CSS_SELECTOR, ".result")]


def test_text_and_image_search_in_a_browser(page, browser, tmp_path):
    url, searcher = page
    browser.get(url)
    browser.find_element(By.ID, "q").send_keys("a photo of a white circle")
    browser.find_element(By.ID, "search-text").click()
    expected = searcher.search(list(sources.texts(["a photo of a white circle"])), 6)[0]
    assert shown_results(browser) == [(hit.id, hit.distance) for hit in expected]
    images = browser.find_elements(By.CSS_SELECTOR, ".result img")
    assert [i.get_attribute("src") for i in images] == [f"{url}/items/{hit.id}" for hit in expected]
    browser.save_screenshot(str(tmp_path / "search_page.png"))

    photo = searcher.index.record(3)["path"]
    browser.find_element(By.ID, "image").send_keys(photo)
    browser.find_element(By.ID, "search-image").click()
    expected = searcher.search(list(sources.images([photo])), 6)[0]
    assert shown_results(browser)[0] == (3, 0)
    assert shown_results(browser) == [(hit.id, hit.distance) for hit in expected]


def test_only_indexed_files_are_served(page):
    url, searcher = page
    with urllib.request.urlopen(f"{url}/items/0") as response:
        assert response.read() == open(searcher.index.record(0)["path"], "rb").read()
    for path in ("/items/100000", "/items/-1", "/items/..%2F..%2Fetc%2Fpasswd", "/../../etc/passwd"):
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(url + path)
        assert failed.value.code in (404, 422), path
