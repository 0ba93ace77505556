"""``reward-service feedback``: import tasks, add annotators, serve the labeling app, export.

The database and web modules are imported inside each command, so ``reward-service --help`` and
the other subcommands work without the ``[feedback]`` extra installed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from reward_service.feedback.settings import FeedbackSettings

PROG = "reward-service feedback"
DB_HELP = "SQLAlchemy URL (sqlite:///…, postgresql://…) or a SQLite file path"
EXPORT_FORMATS = ("pairwise", "rankings", "ratings", "safety")
TASK_KINDS = ("pairwise", "ranking", "rating")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="feedback_command", required=True, metavar="ACTION")

    p = sub.add_parser("import", help="add tasks from JSONL (tasks or ppo-client sample output)")
    p.add_argument("--db", required=True, help=DB_HELP)
    p.add_argument("--tasks", type=Path, required=True, help="JSONL file of tasks or samples")
    p.add_argument("--k", type=int, default=1, help="annotators per task (a line's k wins)")
    p.add_argument("--kind", choices=TASK_KINDS, help="split every group into tasks of this kind")
    p.set_defaults(_action=_import)

    p = sub.add_parser("annotator", help="add an annotator and print their login path")
    p.add_argument("--db", required=True, help=DB_HELP)
    p.add_argument("--name", required=True, help="annotator name (unique)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--new-token", action="store_true", help="new login path for an existing annotator"
    )
    mode.add_argument("--exclude", action="store_true", help="leave their labels out of export")
    mode.add_argument("--include", action="store_true", help="undo --exclude")
    p.set_defaults(_action=_annotator)

    p = sub.add_parser("serve", help="serve the labeling app")
    _settings_flags(p)
    p.set_defaults(_action=_serve)

    p = sub.add_parser("export", help="write labels as training JSONL for reward-service train")
    p.add_argument("--db", required=True, help=DB_HELP)
    p.add_argument("--output", type=Path, required=True, help="JSONL file to write")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="pairwise", dest="fmt")
    p.add_argument(
        "--exclude", action="append", default=[], metavar="NAME", help="leave out an annotator"
    )
    p.add_argument("--include-gold", action="store_true", help="export gold-task labels too")
    p.set_defaults(_action=_export)

    p = sub.add_parser("stats", help="labels per annotator, throughput, agreement")
    p.add_argument("--db", required=True, help=DB_HELP)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(_action=_stats)


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (``--reward-url`` for ``reward_url``), overriding FEEDBACK_*."""
    for name, field in FeedbackSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = (field.description or "").replace("%", "%%") + f" (env FEEDBACK_{name.upper()})"
        if field.annotation is bool:
            action = argparse.BooleanOptionalAction
            parser.add_argument(
                flag, dest=name, action=action, default=argparse.SUPPRESS, help=help_text
            )
        else:
            parser.add_argument(
                flag, dest=name, default=argparse.SUPPRESS, metavar=name.upper(), help=help_text
            )


def run(args: argparse.Namespace) -> int:
    action: Callable[[argparse.Namespace], int] = args._action
    where = f"{PROG} {args.feedback_command}"
    try:
        from reward_service.feedback.active import RewardServiceError
        from reward_service.feedback.annotators import AnnotatorError
        from reward_service.feedback.db import DatabaseError
        from reward_service.feedback.tasks import TaskFileError
    except ImportError as exc:
        print(
            f"{where}: error: {exc.name} is missing: pip install 'rlhf-reward-service[feedback]'",
            file=sys.stderr,
        )
        return 2
    try:
        return action(args)
    except (
        AnnotatorError,
        DatabaseError,
        TaskFileError,
        RewardServiceError,
        OSError,
        ValueError,
    ) as exc:
        print(f"{where}: error: {exc}", file=sys.stderr)
        return 2


def _import(args: argparse.Namespace) -> int:
    from reward_service.feedback.db import open_database
    from reward_service.feedback.tasks import add_tasks, read_tasks

    if args.k < 1:
        raise ValueError("--k must be >= 1")
    specs = read_tasks(args.tasks, args.kind, args.k)
    database = open_database(args.db)
    with database.write() as session:
        added, present = add_tasks(session, specs, str(args.tasks))
    print(json.dumps({"tasks": args.tasks.name, "added": added, "already_present": present}))
    return 0


def _annotator(args: argparse.Namespace) -> int:
    from reward_service.feedback import annotators
    from reward_service.feedback.db import open_database

    database = open_database(args.db)
    with database.write() as session:
        if args.exclude or args.include:
            annotators.find(session, args.name).excluded = args.exclude
            state = "excluded from" if args.exclude else "included in"
            print(f"annotator {args.name}: labels {state} export")
            return 0
        if args.new_token:
            _, token = annotators.rotate_token(session, args.name)
        else:
            _, token = annotators.create_annotator(session, args.name)
    print(annotators.login_path(token))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from reward_service.feedback.active import RewardService, score_open_tasks
    from reward_service.feedback.app import RedactTokens, create_app
    from reward_service.feedback.db import open_database

    try:
        settings = FeedbackSettings(
            **{k: v for k, v in vars(args).items() if k in FeedbackSettings.model_fields}
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ValueError(f"--{'-'.join(map(str, err['loc']))}: {err['msg']}") from exc
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its per-connection chatter
    log = logging.getLogger("reward_service.feedback")
    database = open_database(settings.db)
    service = None
    if settings.reward_url:
        key = None
        if settings.reward_api_key_file:
            key = settings.reward_api_key_file.read_text().strip()
        service = RewardService(settings.reward_url, settings.reward_model, key)
        n = score_open_tasks(
            database, service, lambda done, total: log.info("scored %d/%d tasks", done, total)
        )
        log.info("active selection on: %d tasks scored by %s", n, settings.reward_url)
    app = create_app(settings, database, service)
    log.info(
        "labeling app on http://%s:%d (db %s)", settings.host, settings.port, database.display_url
    )
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level.lower()
    )
    # After Config, which sets up uvicorn's loggers, so the filter stays on.
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
    uvicorn.Server(config).run()
    return 0


def _export(args: argparse.Namespace) -> int:
    from reward_service.feedback.db import open_database
    from reward_service.feedback.export import export_labels

    database = open_database(args.db)
    with database.read() as session:
        summary = export_labels(
            session, args.output, args.fmt, frozenset(args.exclude), args.include_gold
        )
    report = {"output": str(args.output), "format": args.fmt, **summary.as_dict()}
    if summary.lines == 0:
        why = json.dumps(report["left_out"]) if summary.left_out else "no labels yet"
        raise ValueError(f"nothing to export as {args.fmt}, no file written: {why}")
    print(json.dumps(report))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from reward_service.feedback.db import open_database
    from reward_service.feedback.stats import build_report, render

    database = open_database(args.db)
    with database.read() as session:
        report = build_report(session)
    print(json.dumps(report.as_dict(), indent=2) if args.json else render(report))
    return 0
