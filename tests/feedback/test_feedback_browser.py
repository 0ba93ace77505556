"""A person's whole round in real headless chromium, on SQLite and on PostgreSQL: log in with
the printed link, label ten comparisons by keyboard, undo one and redo it, watch the progress
count, export, and train a reward model on the exported file."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from feedback_data import is_positive
from feedback_process import feedback, new_annotator, running_app
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

WAIT_S = 30
# Each action loads a fresh page: until it has, chromium may answer a lookup with a missing or
# stale node, or with "Node with given id does not belong to the document" (a plain
# WebDriverException). A wait retries on these; a page that never shows the count times out.
NAVIGATING = (NoSuchElementException, StaleElementReferenceException, WebDriverException)


def by_testid(driver, name: str):
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{name}"]')


def wait_for_progress(driver, labeled: int) -> str:
    """Wait until the page (a fresh one after each action) reports ``labeled`` answers."""

    def ready(d) -> str | bool:
        text = by_testid(d, "progress").text
        return text if text.startswith(f"{labeled} labeled") else False

    return WebDriverWait(driver, WAIT_S, ignored_exceptions=NAVIGATING).until(ready)


def press(driver, *keys: str) -> None:
    ActionChains(driver).send_keys(*keys).perform()


def current_task(driver) -> dict:
    return {
        "id": int(driver.find_element(By.TAG_NAME, "main").get_attribute("data-task-id")),
        "prompt": by_testid(driver, "prompt").text,
        "a": by_testid(driver, "response-a").text,
        "b": by_testid(driver, "response-b").text,
    }


def better_key(task: dict) -> str:
    return "1" if is_positive(task["a"]) else "2"


@pytest.mark.slow
def test_label_by_keyboard_undo_export_and_train(db, tasks_file, browser, tiny_base, tmp_path):
    feedback("import", "--db", db, "--tasks", tasks_file)
    token = new_annotator(db, "ada")
    with running_app(db, tmp_path) as app:
        browser.get(app.url + f"/login?token={token}")
        assert wait_for_progress(browser, 0).endswith("14 left")
        assert "token" not in browser.current_url  # the login redirect drops it

        labeled: dict[int, dict] = {}
        for n in range(10):
            task = current_task(browser)
            assert task["id"] not in labeled
            if n == 3:
                # Shift+2 flags response B unsafe.
                ActionChains(browser).key_down(Keys.SHIFT).send_keys("2").key_up(
                    Keys.SHIFT
                ).perform()
                assert by_testid(browser, "unsafe-b").is_selected()
            press(browser, better_key(task))
            labeled[task["id"]] = task
            assert wait_for_progress(browser, n + 1).endswith(f"{14 - n - 1} left")

        press(browser, "u")
        wait_for_progress(browser, 9)
        undone = current_task(browser)
        assert undone["id"] == task["id"]  # the page brings back the task just undone
        assert by_testid(browser, "progress").text.endswith("5 left")
        press(browser, better_key(undone))
        wait_for_progress(browser, 10)

        press(browser, "s")  # a skip is counted, not exported
        WebDriverWait(browser, WAIT_S, ignored_exceptions=NAVIGATING).until(
            lambda d: "1 skipped" in by_testid(d, "progress").text
        )

    export = tmp_path / "labels.jsonl"
    summary = json.loads(feedback("export", "--db", db, "--output", export).stdout)
    assert summary["lines"] == 10 and summary["left_out"] == {"skipped": 1}
    rows = [json.loads(line) for line in export.read_text().splitlines()]
    assert sorted(r["task_id"] for r in rows) == sorted(labeled)
    for row in rows:
        task = labeled[row["task_id"]]
        assert row["prompt"] == task["prompt"]
        assert is_positive(row["chosen"]) and not is_positive(row["rejected"])
        assert row["annotator"] == "ada" and row["labeled_at"].endswith("+00:00")

    safety = tmp_path / "safety.jsonl"
    feedback("export", "--db", db, "--output", safety, "--format", "safety")
    flagged = [json.loads(line) for line in safety.read_text().splitlines()]
    assert len(flagged) == 20
    unsafe = [r for r in flagged if not r["safe"]]
    assert [r["response"] for r in unsafe] == [list(labeled.values())[3]["b"]]

    checkpoint = tmp_path / "rm"
    trained = subprocess.run(
        [
            sys.executable, "-m", "reward_service.cli", "train", "--data", str(export),
            "--output", str(checkpoint), "--base", str(tiny_base), "--max-length", "64",
            "--batch-size", "4", "--steps", "20", "--lr", "1e-3",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    report = json.loads((checkpoint / "report.json").read_text())
    assert report["n_train"] + report["n_eval"] == 10 and report["steps"] == 20
    assert (checkpoint / "model.safetensors").is_file()


@pytest.mark.slow
def test_rank_and_rate_by_keyboard_and_by_clicks(sqlite_db, browser, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        json.dumps({"prompt": "Rank", "responses": ["first", "second", "third"]}) + "\n"
        + json.dumps({"prompt": "Rate by key", "responses": ["fine"]}) + "\n"
        + json.dumps({"prompt": "Rate by click", "responses": ["meh"]}) + "\n"
        + json.dumps({"prompt": "Pick by click", "responses": ["left", "right"]}) + "\n"
    )  # fmt: skip
    feedback("import", "--db", sqlite_db, "--tasks", tasks)
    token = new_annotator(sqlite_db, "ada")
    with running_app(sqlite_db, tmp_path) as app:
        browser.get(app.url + f"/login?token={token}")
        wait_for_progress(browser, 0)
        assert by_testid(browser, "prompt").text == "Rank"
        press(browser, "3")
        assert by_testid(browser, "rank-c").text == "#1"
        press(browser, Keys.BACKSPACE)  # start over
        assert by_testid(browser, "rank-c").text == ""
        press(browser, "2", "3")  # second, third; first places itself last
        wait_for_progress(browser, 1)
        assert by_testid(browser, "prompt").text == "Rate by key"
        press(browser, "4")
        wait_for_progress(browser, 2)
        by_testid(browser, "rate-2").click()
        wait_for_progress(browser, 3)
        by_testid(browser, "choose-b").click()
        wait_for_progress(browser, 4)
        assert by_testid(browser, "done").text.startswith("Nothing left")

    rankings = tmp_path / "rankings.jsonl"
    feedback("export", "--db", sqlite_db, "--output", rankings, "--format", "rankings")
    rows = [json.loads(line) for line in rankings.read_text().splitlines()]
    assert [r["responses"] for r in rows] == [["second", "third", "first"], ["right", "left"]]
    ratings = tmp_path / "ratings.jsonl"
    feedback("export", "--db", sqlite_db, "--output", ratings, "--format", "ratings")
    rows = [json.loads(line) for line in ratings.read_text().splitlines()]
    assert [(r["response"], r["score"]) for r in rows] == [("fine", 4), ("meh", 2)]
