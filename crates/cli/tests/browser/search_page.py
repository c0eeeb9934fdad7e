"""Drives `gear serve`'s search page in headless Chromium (Debian's chromium + chromedriver,
through Selenium): types a query, waits for the results, reads what is highlighted, opens the
explain view, and saves a screenshot. Prints one JSON object for the Rust test to check.

usage: search_page.py URL QUERY SCREENSHOT
"""

import json
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait


def main() -> None:
    url, query, screenshot = sys.argv[1], sys.argv[2], sys.argv[3]
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,1600",
        f"--user-data-dir={tempfile.mkdtemp(prefix='gear-chromium-')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url + "/")
        box = driver.find_element(By.ID, "q")
        box.send_keys(query)
        driver.find_element(By.CSS_SELECTOR, "form#search button[type=submit]").click()
        wait = WebDriverWait(driver, 120)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "li.result mark.located")))
        first = driver.find_elements(By.CSS_SELECTOR, "li.result")[0]
        marks = first.find_elements(By.CSS_SELECTOR, "mark.located")
        top = first.find_element(By.CSS_SELECTOR, "mark.located.top")
        text = first.find_element(By.CSS_SELECTOR, "p.text")
        result = {
            "results": len(driver.find_elements(By.CSS_SELECTOR, "li.result")),
            "first_doc_id": first.get_attribute("data-doc-id"),
            "top_mark": top.get_attribute("textContent"),
            "marks_in_first": len(marks),
            "first_text": text.get_attribute("textContent"),
            "status": driver.find_element(By.ID, "status").text,
        }
        first.find_element(By.CSS_SELECTOR, "button.explain").click()
        wait.until(lambda d: first.find_elements(By.CSS_SELECTOR, "ul.tokens li"))
        result["tokens"] = len(first.find_elements(By.CSS_SELECTOR, "ul.tokens li"))
        driver.save_screenshot(screenshot)
        print(json.dumps(result))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
