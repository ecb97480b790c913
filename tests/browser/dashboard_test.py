#!/usr/bin/python3
"""The dashboard in a real browser: headless Chromium (Debian's chromium and chromium-driver, driven by
python3-selenium) against the real jobhost binary with the example plugins.

Usage: dashboard_test.py --jobhost PATH --plugins DIR --screenshots DIR

Checks: every page loads without a console error and shows what the API says; a job enqueued through the API
appears; a dead letter is retried from the page (after a wrong token is refused with a visible message) and then
succeeds; the layout fits a phone's width; the navigation works from the keyboard. Screenshots of each page are
kept in --screenshots for people to look at.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

TOKEN = "dashboard-test-token-0123456789"
failures = []


def check(condition, what):
    print(("ok   " if condition else "FAIL ") + what, flush=True)
    if not condition:
        failures.append(what)
    return condition


def eventually(predicate, limit=20.0, step=0.1):
    end = time.time() + limit
    while time.time() < end:
        try:
            if predicate():
                return True
        except Exception:  # noqa: BLE001 - a page mid-render, a host not up yet: look again
            pass
        time.sleep(step)
    return False


class Host:
    def __init__(self, jobhost, plugins, folder):
        self.folder = folder
        config = os.path.join(folder, "jobhost.toml")
        with open(os.path.join(folder, "token"), "w") as f:
            f.write(TOKEN + "\n")
        with open(config, "w") as f:
            f.write(f'''[host]
plugin_dir = "{plugins}"
watch_plugins = false
[store]
path = "{folder}/jobs.db"
retain_done = 1000
[http]
listen = "127.0.0.1:0"
token_file = "{folder}/token"
[jobs.shell]
max_retries = 0
''')
        self.log = open(os.path.join(folder, "jobhost.log"), "w+")
        self.process = subprocess.Popen([jobhost, "run", "--config", config], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self.port = None

        def port():
            self.log.flush()
            with open(self.log.name) as f:
                m = re.search(r"http listening on 127\.0\.0\.1:(\d+)", f.read())
            if m:
                self.port = int(m.group(1))
            return self.port is not None

        if not eventually(port, 30):
            raise SystemExit("jobhost did not start:\n" + open(self.log.name).read())
        self.url = f"http://127.0.0.1:{self.port}"

    def api(self, method, path, body=None, token=TOKEN):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


def browser(profile):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def console_errors(driver, allowed=()):
    errors = []
    for entry in driver.get_log("browser"):
        if entry["level"] != "SEVERE":
            continue
        if any(a in entry["message"] for a in allowed):
            continue
        errors.append(entry["message"])
    return errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobhost", required=True)
    ap.add_argument("--plugins", required=True)
    ap.add_argument("--screenshots", required=True)
    args = ap.parse_args()
    os.makedirs(args.screenshots, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="jobhost-browser-")
    host = Host(args.jobhost, args.plugins, folder)
    driver = None
    try:
        driver = browser(os.path.join(folder, "chromium"))
        wait = WebDriverWait(driver, 20)

        def shot(name):
            driver.save_screenshot(os.path.join(args.screenshots, name + ".png"))

        def click(selector):  # the page re-renders as it refreshes: find the element afresh until a click lands
            return eventually(lambda: driver.find_element(By.CSS_SELECTOR, selector).click() or True, 10)

        def text():  # as shown: labels are upper-cased by the style sheet, so compare in lower case
            return driver.find_element(By.TAG_NAME, "main").text.lower()

        # Overview
        driver.get(host.url + "/")
        wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Overview"))
        check(eventually(lambda: "health" in text() and "healthy" in text()), "the overview shows the health")
        check("workers busy" in text() and "jobs finished per second" in text(), "the overview shows workers and charts")
        time.sleep(2.5)  # a second sample for the charts
        shot("overview")

        # Job types: the example plugins' types
        driver.get(host.url + "/#/types")
        check(eventually(lambda: all(t in text() for t in ("hello", "shell", "math.sum", "text.upper"))),
              "the types page lists the example types")
        shot("types")
        driver.get(host.url + "/#/types/hello")
        check(eventually(lambda: "settings and where each came from" in text() and "hello.so" in text()),
              "one type shows its settings, their sources and its plugin file")

        # A job enqueued through the API appears on the jobs page and on its own page
        status, body = host.api("POST", "/api/v1/jobs", {"type": "hello", "payload": {"name": "browser"}})
        check(status == 201, f"enqueue through the API answers 201 ({status} {body})")
        job = body["id"]
        driver.get(host.url + "/#/jobs")
        check(eventually(lambda: driver.find_elements(By.LINK_TEXT, str(job))), f"job {job} appears on the jobs page")
        shot("jobs")
        check(eventually(lambda: driver.find_element(By.LINK_TEXT, str(job)).click() or True, 10), "the job's link works")
        check(eventually(lambda: f"job {job}" in text() and '"browser"' in text() and "done" in text()),
              "the job's page shows its payload and that it is done")
        shot("job")
        errors = console_errors(driver)
        check(not errors, f"no console errors so far {errors}")

        # A dead letter: the shell job fails while the file is missing
        marker = os.path.join(folder, "ok")
        status, body = host.api("POST", "/api/v1/jobs", {"type": "shell", "payload": {"command": f"test -e {marker}"}})
        dead = body["id"]
        check(eventually(lambda: host.api("GET", f"/api/v1/jobs/{dead}")[1]["state"] == "dead"),
              f"job {dead} goes to the dead-letter queue")
        driver.get(host.url + "/#/dlq")
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, f'button[aria-label="Retry job {dead}"]')))
        shot("dlq")

        # Without a token the retry is refused, the page says so and asks for the token
        check(click(f'button[aria-label="Retry job {dead}"]'), "the retry button is there")
        notice = driver.find_element(By.ID, "notice")
        check(eventually(lambda: notice.is_displayed() and "refused" in notice.text), "a missing token is refused visibly")
        dialog_input = driver.find_element(By.ID, "token-input")
        check(eventually(dialog_input.is_displayed), "the page asks for the token")
        dialog_input.clear()
        dialog_input.send_keys("wrong-token-wrong-token")
        driver.find_element(By.ID, "token-save").click()
        check(click(f'button[aria-label="Retry job {dead}"]'), "the retry button is there again")
        check(eventually(lambda: notice.is_displayed() and "token is wrong" in notice.text),
              f"a wrong token is refused with a visible message ({notice.text!r})")
        shot("wrong-token")
        check(host.api("GET", f"/api/v1/jobs/{dead}")[1]["state"] == "dead", "nothing changed with a wrong token")

        # With the right token, the retry works and the job then succeeds
        dialog_input = driver.find_element(By.ID, "token-input")
        check(eventually(dialog_input.is_displayed), "the page asks again")
        dialog_input.clear()
        dialog_input.send_keys(TOKEN)
        driver.find_element(By.ID, "token-save").click()
        open(marker, "w").close()
        check(click(f'button[aria-label="Retry job {dead}"]'), "the retry button is there with the right token")
        check(eventually(lambda: host.api("GET", f"/api/v1/jobs/{dead}")[1]["state"] == "done"),
              f"the dead letter {dead}, retried from the page, succeeds")
        check(eventually(lambda: not driver.find_elements(By.CSS_SELECTOR, f'button[aria-label="Retry job {dead}"]')),
              "it leaves the dead-letter page")
        driver.get(host.url + f"/#/jobs/{dead}")
        check(eventually(lambda: f"job {dead}" in text() and "attempts that failed" in text()
                         and "command failed" in text()), "the job's page shows the earlier attempt's error")

        # Enable and disable from the types page
        driver.get(host.url + "/#/types")
        row = lambda: driver.find_element(By.XPATH, '//tr[td/a[text()="hello"]]')  # noqa: E731
        check(eventually(lambda: "enabled" in row().text), "hello is enabled")
        check(eventually(lambda: row().find_element(By.XPATH, './/button[text()="Disable"]').click() or True, 10),
              "the Disable button is there")
        check(eventually(lambda: host.api("GET", "/api/v1/types/hello")[1]["settings"]["enabled"] is False),
              "Disable on the page disables the type")
        check(eventually(lambda: "disabled" in row().text), "the page shows it disabled")
        check(eventually(lambda: row().find_element(By.XPATH, './/button[text()="Enable"]').click() or True, 10),
              "the Enable button is there")
        check(eventually(lambda: host.api("GET", "/api/v1/types/hello")[1]["settings"]["enabled"] is True),
              "Enable on the page enables it again")

        # Events: a live tail
        driver.get(host.url + "/#/events")
        check(eventually(lambda: "succeeded" in text() and "hello" in text()), "the events page shows events")
        before = host.api("POST", "/api/v1/jobs", {"type": "hello", "payload": {"name": "tail"}})[1]["id"]
        check(eventually(lambda: driver.find_elements(By.LINK_TEXT, str(before)), 10),
              "a new event appears without a reload")
        shot("events")

        errors = console_errors(driver, allowed=("status of 401",))
        check(not errors, f"no console errors besides the refused requests {errors}")

        # Keyboard: the skip link, then the navigation, reachable with Tab and followed with Enter
        driver.get(host.url + "/#/")
        wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Overview"))
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.TAB)
        check(driver.switch_to.active_element.text == "Skip to content", "Tab reaches the skip link first")
        active = None
        for _ in range(6):
            driver.switch_to.active_element.send_keys(Keys.TAB)
            active = driver.switch_to.active_element
            if active.text == "Dead letters":
                break
        check(active is not None and active.text == "Dead letters", "Tab reaches the navigation")
        active.send_keys(Keys.ENTER)
        check(eventually(lambda: driver.current_url.endswith("#/dlq") and "dead letters" in text()),
              "Enter follows a link")

        # A phone's width: nothing overflows the page sideways; wide tables scroll inside their own box
        driver.set_window_size(390, 844)
        for page in ("/#/", "/#/types", "/#/jobs", "/#/dlq", "/#/events"):
            driver.get(host.url + page)
            time.sleep(0.8)
            width = driver.execute_script("return document.documentElement.scrollWidth")
            inner = driver.execute_script("return window.innerWidth")
            check(width <= inner + 1, f"{page} fits a phone's width ({width} <= {inner})")
        driver.get(host.url + "/#/types")
        time.sleep(0.8)
        shot("phone-types")
        errors = console_errors(driver, allowed=("status of 401",))
        check(not errors, f"no console errors at a phone's width {errors}")
    finally:
        if driver:
            driver.quit()
        check(host.stop() == 0, "jobhost stops cleanly on SIGTERM (exit code 0, no sanitizer report)")
        if failures:
            print("jobhost's log:\n" + open(host.log.name).read()[-4000:])
        shutil.rmtree(folder, ignore_errors=True)
    print(f"screenshots in {args.screenshots}")
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
