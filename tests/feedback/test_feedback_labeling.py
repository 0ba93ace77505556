"""The labeling rules on a real database, SQLite and PostgreSQL alike: schema, task order,
k annotators, gold tasks, skip and undo, stats and export filters."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from reward_service.feedback import labeling
from reward_service.feedback.agreement import cohen_kappa
from reward_service.feedback.annotators import create_annotator, hash_token
from reward_service.feedback.db import Database, database_url, open_database
from reward_service.feedback.export import export_labels
from reward_service.feedback.labeling import LabelingError
from reward_service.feedback.models import Base, Label, Task
from reward_service.feedback.stats import active_seconds, build_report, per_hour
from reward_service.feedback.tasks import TaskSpec, add_tasks


@pytest.fixture
def database(db) -> Database:
    database = open_database(db)
    yield database
    database.close()


def add(database: Database, *specs: TaskSpec) -> list[int]:
    with database.write() as session:
        add_tasks(session, specs, "test")
    with database.read() as session:
        return [t.id for t in session.query(Task).order_by(Task.id)]


def people(database: Database, *names: str):
    with database.write() as session:
        return [create_annotator(session, name)[0] for name in names]


def answer(database: Database, who, task_id: int, value=None, skip: bool = False) -> Label:
    with database.write() as session:
        return labeling.submit(session, who, task_id, value, skip)


def next_id(database: Database, who, gold_every: int = 0) -> int | None:
    with database.read() as session:
        task = labeling.next_task(session, who, gold_every)
        return task.id if task else None


def pair(i: int, **kw) -> TaskSpec:
    return TaskSpec("pairwise", f"prompt {i}", [f"a{i}", f"b{i}"], **kw)


def test_migrations_build_exactly_the_models_schema(database):
    with database.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    database.migrate()  # a second run is a no-op
    with database.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == "0001"


def test_database_urls():
    assert database_url("runs/x.db").startswith("sqlite:////")
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"
    assert database_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert database_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"


def test_tasks_come_least_certain_first_then_fewest_labels(database):
    ids = add(database, *(pair(i, k=2) for i in range(4)))
    with database.write() as session:
        for task_id, u in zip(ids, [None, 0.4, 0.05, None], strict=True):
            session.get(Task, task_id).uncertainty = u
    ada, bob = people(database, "ada", "bob")
    assert next_id(database, ada) == ids[2]  # |P - 0.5| = 0.05
    answer(database, ada, ids[2], 0)
    assert next_id(database, ada) == ids[1]
    assert next_id(database, bob) == ids[2]  # still one label short of k = 2
    answer(database, bob, ids[2], 1)
    answer(database, ada, ids[1], 0)
    # Unscored tasks come last, fewest labels first, then import order.
    answer(database, bob, ids[3], 0)
    assert next_id(database, ada) == ids[0]


def test_k_limits_how_many_annotators_see_a_task(database):
    (task_id,) = add(database, pair(0, k=1))
    ada, bob = people(database, "ada", "bob")
    answer(database, ada, task_id, 1)
    assert next_id(database, bob) is None
    with database.read() as session:
        assert labeling.progress(session, bob).remaining == 0


def test_gold_tasks_are_mixed_in_every_n_and_go_to_everyone(database):
    ids = add(database, *(pair(i) for i in range(6)), pair(99, gold=0))
    gold_id = ids[-1]
    ada, bob = people(database, "ada", "bob")
    seen = []
    while (task_id := next_id(database, ada, gold_every=3)) is not None:
        seen.append(task_id)
        answer(database, ada, task_id, 0)
    assert seen.index(gold_id) == 2  # the third task
    assert sorted(seen) == ids
    # Ada took every regular task (k = 1); the gold task still goes to Bob.
    assert next_id(database, bob, gold_every=3) == gold_id


def test_skip_undo_and_double_submit(database):
    ids = add(database, pair(0), pair(1))
    (ada,) = people(database, "ada")
    answer(database, ada, ids[0], skip=True)
    assert next_id(database, ada) == ids[1]
    with pytest.raises(LabelingError) as conflict:
        answer(database, ada, ids[0], 1)
    assert conflict.value.status == 409
    with database.write() as session:
        undone = labeling.undo(session, ada)
    assert undone.task_id == ids[0] and undone.skipped
    assert next_id(database, ada) == ids[0]
    answer(database, ada, ids[0], 1)
    with database.read() as session:
        progress = labeling.progress(session, ada)
        rows = session.query(Label).order_by(Label.id).all()
    assert (progress.labeled, progress.skipped, progress.remaining) == (1, 0, 1)
    # The undone skip is kept, stamped, never deleted.
    assert [(r.skipped, r.retracted_at is not None) for r in rows] == [(True, True), (False, False)]


@pytest.mark.parametrize(
    ("value", "skip", "unsafe", "status"),
    [
        (None, False, None, 422),
        (1, True, None, 422),
        (7, False, None, 422),
        (1, False, [True], 422),
    ],
)
def test_invalid_submissions(database, value, skip, unsafe, status):
    (task_id,) = add(database, pair(0))
    (ada,) = people(database, "ada")
    with pytest.raises(LabelingError) as error, database.write() as session:
        labeling.submit(session, ada, task_id, value, skip, unsafe)
    assert error.value.status == status
    with pytest.raises(LabelingError) as missing, database.write() as session:
        labeling.submit(session, ada, task_id + 100, 1)
    assert missing.value.status == 404
    with pytest.raises(LabelingError) as nothing, database.write() as session:
        labeling.undo(session, ada)
    assert nothing.value.status == 404


def test_tokens_are_stored_as_hashes(database):
    with database.write() as session:
        annotator, token = create_annotator(session, "ada")
    assert annotator.token_hash == hash_token(token) != token
    with database.engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT name, token_hash FROM annotators").all()
    assert stored == [("ada", hash_token(token))]


def test_stats_count_labels_gold_accuracy_and_agreement(database):
    ids = add(database, *(pair(i, k=2) for i in range(6)), pair(90, gold=1), pair(91, gold=0))
    ada, bob, cy = people(database, "ada", "bob", "cy")
    ada_answers = [0, 1, 0, 1, 1, 0]
    bob_answers = [0, 1, 1, 1, 0, 0]
    for task_id, a, b in zip(ids[:6], ada_answers, bob_answers, strict=True):
        answer(database, ada, task_id, a)
        answer(database, bob, task_id, b)
    answer(database, ada, ids[6], 1)  # gold right
    answer(database, ada, ids[7], 1)  # gold wrong
    answer(database, bob, ids[6], 1)
    answer(database, cy, ids[6], skip=True)
    with database.read() as session:
        report = build_report(session)
    by_name = {a.name: a for a in report.annotators}
    assert (by_name["ada"].labels, by_name["ada"].gold_labels, by_name["ada"].gold_accuracy) == (
        8, 2, 0.5
    )  # fmt: skip
    assert by_name["bob"].gold_accuracy == 1.0 and by_name["cy"].skipped == 1
    assert report.tasks == {"pairwise": 8, "ranking": 0, "rating": 0}
    assert report.complete == 6 and report.gold_tasks == 2
    (ada_bob,) = report.pairs
    assert ada_bob.shared == 6
    assert ada_bob.kappa == pytest.approx(cohen_kappa(ada_answers, bob_answers))
    json.dumps(report.as_dict())  # NaN-free, JSON-ready


def test_active_time_leaves_out_breaks():
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    times = [t0 + timedelta(seconds=s) for s in (0, 10, 30, 3000, 3020)]
    assert active_seconds(times) == 50  # 10 + 20 + 20; the 49-minute break is not work
    assert per_hour(5, 50) == pytest.approx(4 * 3600 / 50)
    assert per_hour(1, 0) is None


def test_export_filters_excluded_gold_skipped_and_undone(database, tmp_path):
    ids = add(database, pair(0, k=3), pair(1, k=3), pair(9, gold=0))
    ada, bob, cy = people(database, "ada", "bob", "cy")
    for who in (ada, bob, cy):
        answer(database, who, ids[0], 0)
    answer(database, ada, ids[1], 1)
    with database.write() as session:
        labeling.undo(session, ada)
    answer(database, bob, ids[1], skip=True)
    answer(database, ada, ids[2], 0)
    with database.write() as session:
        session.get(type(cy), cy.id).excluded = True
    out = tmp_path / "out.jsonl"
    with database.read() as session:
        summary = export_labels(session, out, "pairwise", exclude=frozenset({"bob"}))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["annotator"], r["task_id"]) for r in rows] == [("ada", ids[0])]
    assert summary.left_out == {"excluded annotator": 2, "skipped": 1, "gold task": 1}
    with database.read() as session:
        export_labels(session, out, "pairwise", include_gold=True)
    assert len(out.read_text().splitlines()) == 3  # ada's and bob's first label, ada's gold
