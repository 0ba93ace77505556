"""``reward-service feedback`` as an operator types it: exact spellings, one-line outputs, and
clear exit-2 errors instead of tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

from feedback_data import sentiment_tasks, write_tasks
from feedback_process import feedback, free_port, new_annotator

import reward_service.cli


def test_the_commands_keep_their_spellings():
    parser = reward_service.cli.build_parser()
    for argv in (
        ["feedback", "import", "--db", "D", "--tasks", "F"],
        ["feedback", "annotator", "--db", "D", "--name", "N"],
        ["feedback", "serve", "--db", "D", "--host", "H", "--port", "1"],
        ["feedback", "export", "--db", "D", "--output", "F", "--format", "pairwise"],
        ["feedback", "export", "--db", "D", "--output", "F", "--format", "rankings"],
        ["feedback", "export", "--db", "D", "--output", "F", "--format", "ratings"],
        ["feedback", "stats", "--db", "D"],
    ):
        assert parser.parse_args(argv).feedback_command == argv[1]


def test_help_needs_neither_the_database_stack_nor_torch():
    code = (
        "import sys, reward_service.cli as c; c.build_parser()\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic', 'torch')]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_labeling_app_imports_no_torch():
    code = (
        "import sys\n"
        "import reward_service.feedback.app, reward_service.feedback.export\n"
        "import reward_service.feedback.stats, reward_service.feedback.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_import_annotator_stats_and_export_round_trip(tmp_path):
    db = f"sqlite:///{tmp_path / 'labels.db'}"  # the URL form of the same SQLite file
    tasks = write_tasks(tmp_path / "tasks.jsonl", sentiment_tasks(5, seed=1))
    first = json.loads(feedback("import", "--db", db, "--tasks", tasks).stdout)
    again = json.loads(feedback("import", "--db", db, "--tasks", tasks).stdout)
    assert (first["added"], again["added"], again["already_present"]) == (5, 0, 5)

    printed = feedback("annotator", "--db", db, "--name", "ada").stdout
    assert printed.count("\n") == 1 and printed.startswith("/login?token=")
    assert len(printed.strip().removeprefix("/login?token=")) >= 43  # 256 random bits

    stats = feedback("stats", "--db", db).stdout
    assert "5 pairwise" in stats and "ada" in stats
    report = json.loads(feedback("stats", "--db", db, "--json").stdout)
    assert report["tasks"]["pairwise"] == 5 and report["annotators"][0]["labels"] == 0

    out = tmp_path / "labels.jsonl"
    nothing = feedback("export", "--db", db, "--output", out, check=False)
    assert nothing.returncode == 2 and "no labels yet" in nothing.stderr
    assert not out.exists()


def test_errors_are_one_line_and_exit_2(tmp_path):
    db = str(tmp_path / "labels.db")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "responses": ["a", "b"]}\n{"prompt": "p"}\n')
    cases = [
        (["import", "--db", db, "--tasks", bad], f"{bad}:2: expected prompt + responses"),
        (["import", "--db", db, "--tasks", tmp_path / "none.jsonl"], "cannot open"),
        (["annotator", "--db", db, "--name", "  "], "--name must be"),
        (["annotator", "--db", db, "--name", "ghost", "--new-token"], "no annotator named"),
        (["stats", "--db", "nosuchdriver://x"], "--db nosuchdriver://x"),
        (["stats", "--db", f"postgresql://nobody@127.0.0.1:{free_port()}/x"], "127.0.0.1"),
        (["serve", "--db", db, "--port", "99999"], "--port"),
    ]
    for args, message in cases:
        done = feedback(*args, check=False)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    new_annotator(db, "ada")
    duplicate = feedback("annotator", "--db", db, "--name", "ada", check=False)
    assert duplicate.returncode == 2 and "--new-token" in duplicate.stderr


def test_excluding_an_annotator_is_remembered(tmp_path):
    db = str(tmp_path / "labels.db")
    new_annotator(db, "ada")
    done = feedback("annotator", "--db", db, "--name", "ada", "--exclude")
    assert done.stdout.strip() == "annotator ada: labels excluded from export"
    assert "ada (excluded)" in feedback("stats", "--db", db).stdout
    feedback("annotator", "--db", db, "--name", "ada", "--include")
    assert "(excluded)" not in feedback("stats", "--db", db).stdout
