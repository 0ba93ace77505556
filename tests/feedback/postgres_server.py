"""A real PostgreSQL server for the tests: Debian's package, a temporary cluster, a free port.

``initdb`` refuses to run as root, so as root (CI containers) the cluster belongs to the
``postgres`` user that the package creates, and its commands run through ``runuser``. The data
lives under /tmp rather than pytest's temporary folder, which other users cannot enter.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from feedback_process import free_port

INSTALL_HINT = "install Debian's postgresql package (`make test` does: apt-get install postgresql)"


@dataclass
class Postgres:
    port: int
    user: str = "feedback"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError(f"no PostgreSQL server binaries: {INSTALL_HINT}")
    return Path(found[-1]).parent


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    bindir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="feedback-pg-", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise RuntimeError(f"running as root and no postgres user: {INSTALL_HINT}") from exc
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log = root / "data", root / "server.log"
    port = free_port()

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, text=True)

    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-U", "feedback", "--auth=trust", "-E", "UTF8")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
    except subprocess.CalledProcessError as exc:
        server_log = log.read_text() if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{server_log}") from exc
    try:
        yield Postgres(port)
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)
