"""Fixtures for the labeling app: a database of each kind, task files, a headless browser.

``db`` runs a test once on a SQLite file and once on a fresh database of a real PostgreSQL
server that this session starts; ``browser`` is Debian's chromium driven by its chromedriver.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from feedback_data import sentiment_tasks, write_tasks
from postgres_server import Postgres, running_postgres

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    try:
        with running_postgres() as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "labels.db")
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def sqlite_db(tmp_path) -> str:
    return str(tmp_path / "labels.db")


@pytest.fixture
def tasks_file(tmp_path) -> Path:
    return write_tasks(tmp_path / "tasks.jsonl", sentiment_tasks(14, seed=3))


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            pytest.fail(
                f"{path} missing: apt-get install chromium chromium-driver (make test does)"
            )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="feedback-chromium-")
    # The flags this sandboxed, offline machine needs (no setuid sandbox as root, no GPU, no
    # calls home that the closed network would refuse).
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
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
