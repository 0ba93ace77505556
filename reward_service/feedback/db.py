"""Open the labeling database from a URL, migrate it to the newest schema, hand out sessions.

``--db`` takes a SQLAlchemy URL; a plain path means a SQLite file, and ``postgresql://`` means
the psycopg 3 driver we install (SQLAlchemy's own default would be psycopg2).

SQLite settings are chosen so that a label acknowledged to an annotator survives a killed server
and two annotators never see "database is locked": write-ahead logging, a full fsync at every
commit, a busy timeout, and write transactions that take the write lock when they begin (a
deferred transaction that reads first and writes later can fail at once, without waiting, when
another writer got in between).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant: PostgreSQL sessions migrating at once queue on this advisory lock.
MIGRATION_LOCK = 0x6665656462
SQLITE_BUSY_TIMEOUT_S = 30


class DatabaseError(RuntimeError):
    """The database cannot be opened or migrated; the message says which URL and why."""


def database_url(db: str) -> str:
    """A SQLAlchemy URL from ``--db``: a URL as given, a plain path as a SQLite file."""
    if "://" not in db:
        return f"sqlite:///{Path(db).expanduser().resolve()}"
    for prefix in ("postgresql://", "postgres://"):
        if db.startswith(prefix):
            return "postgresql+psycopg://" + db[len(prefix) :]
    return db


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Take over transaction control from the sqlite3 module so "begin" below decides.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        immediate = connection.get_execution_options().get("write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """One engine and two session factories: reads, and writes that lock up front on SQLite."""

    def __init__(self, db: str) -> None:
        self.url = database_url(db)
        try:
            self.engine = create_engine(self.url, pool_pre_ping=True)
        except (ArgumentError, ImportError) as exc:
            raise DatabaseError(f"--db {db}: {exc}") from exc
        if self.engine.dialect.name == "sqlite":
            _sqlite_pragmas(self.engine)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(
            self.engine.execution_options(write=True), expire_on_commit=False
        )

    @property
    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits when the block ends and rolls back if it raises."""
        with self._write() as session, session.begin():
            yield session

    def migrate(self) -> None:
        """Bring the schema to the newest migration (a new database gets every table)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK}
                    )
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except OperationalError as exc:
            raise DatabaseError(f"{self.display_url}: {exc.orig or exc}") from exc

    def close(self) -> None:
        self.engine.dispose()


def open_database(db: str) -> Database:
    """Open and migrate: every command works on a current schema, whichever ran first."""
    database = Database(db)
    database.migrate()
    return database
