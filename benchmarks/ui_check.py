"""The record as a researcher sees it, in a real headless browser (issue 13): a small sweep of two
runs, then MLflow's UI on loopback opened at the README's address, checked for the distinct run
names, the sweep's summary on its parent, the Dataset column, and the git commit and source.

Needs Chromium and its driver (Debian: ``apt-get install chromium chromium-driver``) and
``pip install selenium``; not part of the test suite. Run from the repository root:

    python benchmarks/ui_check.py            # prints what it found; exit 1 if a check fails
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PORT = 5057
SIZES = [
    "experiment=debug",
    "scenario.p_max=1.0,2.0",
]


def main() -> int:
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    work = Path(tempfile.mkdtemp(prefix="ui_check_"))
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "MIMO_L2O_CACHE_DIR": str(work / "cache"),
    }
    sweep = subprocess.run(
        [sys.executable, "-m", "mimo_l2o", "-m", *SIZES],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if sweep.returncode:
        print(sweep.stderr[-3000:])
        return 1
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            env["MLFLOW_TRACKING_URI"],
            "--port",
            str(PORT),
        ],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1000"):
        options.add_argument(flag)
    driver = None
    checks: dict[str, bool] = {}
    try:
        for _ in range(60):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        driver = webdriver.Chrome(options=options)
        driver.get(f"http://127.0.0.1:{PORT}/#/experiments/1/runs")  # the README's address
        time.sleep(8)
        parent_text = driver.find_element(By.TAG_NAME, "body").text
        # the sweep's children are nested under its parent: expand them (the button beside its name)
        name = driver.find_element(By.XPATH, "//*[starts-with(text(),'sweep ')]")
        name.find_element(By.XPATH, "./ancestor::*[@role='gridcell'][1]//button").click()
        time.sleep(3)
        text = driver.find_element(By.TAG_NAME, "body").text + parent_text
        driver.save_screenshot(str(work / "runs.png"))
        checks["distinct run names"] = all(f"scenario.p_max={p}" in text for p in ("1.0", "2.0"))
        checks["sweep parent named by its overrides"] = "scenario.p_max=1.0,2.0" in parent_text
        checks["dataset column"] = "network.train" in text or "labels.train" in text
        import mlflow

        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        client = mlflow.MlflowClient()
        runs = client.search_runs(["1"])
        parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
        child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
        driver.get(f"http://127.0.0.1:{PORT}/#/experiments/1/runs/{child.info.run_id}")
        time.sleep(6)
        text = driver.find_element(By.TAG_NAME, "body").text
        driver.save_screenshot(str(work / "child.png"))
        commit = child.data.tags.get("mlflow.source.git.commit", "")
        checks["git commit on the run page"] = bool(commit) and commit[:7] in text
        checks["source on the run page"] = "__main__.py" in text
        driver.get(f"http://127.0.0.1:{PORT}/#/experiments/1/runs/{parent.info.run_id}/artifacts")
        time.sleep(6)
        text = driver.find_element(By.TAG_NAME, "body").text
        driver.save_screenshot(str(work / "parent.png"))
        checks["sweep summary on its parent"] = "summary.md" in text and "report" in text
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    print(f"screenshots in {work}")
    return 0 if checks and all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
