"""The labeling pages: server-rendered HTML with one small script, no build step.

Every text from the database goes through :func:`html.escape`; the script reads the task from
``data-`` attributes and never writes HTML. The Content-Security-Policy allows only this page's
own inline style and script (by nonce), so injected markup could not run anything anyway.
Stable ``data-testid`` attributes are part of the contract with browser tests and tools.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from html import escape
from pathlib import Path

from reward_service.feedback.labeling import Progress
from reward_service.feedback.models import RATING_SCALE, Task

SCRIPT = (Path(__file__).parent / "label.js").read_text()
LETTERS = string.ascii_lowercase

STYLE = """
body { font: 16px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1rem; }
header { display: flex; justify-content: space-between; color: #555; margin-bottom: 1rem; }
.prompt { background: #f4f4f6; padding: .8rem 1rem; border-radius: 6px; white-space: pre-wrap; }
.responses { display: grid; gap: 1rem; margin: 1rem 0;
             grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); }
.response { border: 1px solid #ccd; border-radius: 6px; padding: .8rem; }
.response .text { white-space: pre-wrap; min-height: 3rem; }
.response .text:empty::before { content: "(empty response)"; color: #888; font-style: italic; }
.response.ranked { border-color: #2a7; }
.rank { font-weight: bold; color: #2a7; }
button { font: inherit; padding: .4rem .8rem; margin: .2rem .2rem 0 0; cursor: pointer; }
kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 .3rem; font-size: .85em; }
.hint { color: #666; font-size: .9rem; }
#status { min-height: 1.5rem; color: #b00; }
"""

HINTS = {
    "pairwise": "<kbd>1</kbd>/<kbd>2</kbd> choose the better response",
    "ranking": "press response numbers best first; <kbd>Backspace</kbd> starts over",
    "rating": "<kbd>1</kbd>–<kbd>5</kbd> rate the response",
}


def progress_text(progress: Progress) -> str:
    return f"{progress.labeled} labeled · {progress.skipped} skipped · {progress.remaining} left"


@dataclass(frozen=True)
class Page:
    html: str
    nonce: str

    @property
    def headers(self) -> dict[str, str]:
        """Only this page's own style and script may run; no framing; no token in referrers."""
        csp = (
            f"default-src 'none'; script-src 'nonce-{self.nonce}'; "
            f"style-src 'nonce-{self.nonce}'; connect-src 'self'; form-action 'none'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        return {
            "Content-Security-Policy": csp,
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        }


def _document(title: str, body: str, csrf: str = "") -> Page:
    nonce = secrets.token_urlsafe(16)
    script = f'<script nonce="{nonce}">{SCRIPT}</script>' if csrf else ""
    html = (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="csrf-token" content="{escape(csrf)}">'
        f"<title>{escape(title)}</title>"
        f'<style nonce="{nonce}">{STYLE}</style></head>\n'
        f"<body>{body}{script}</body></html>\n"
    )
    return Page(html, nonce)


def _header(name: str, progress: Progress) -> str:
    return (
        "<header>"
        f'<span data-testid="progress">{escape(progress_text(progress))}</span>'
        f'<span data-testid="annotator">{escape(name)}</span>'
        "</header>"
    )


def _response(task: Task, index: int) -> str:
    letter = LETTERS[index]
    buttons = ""
    if task.kind != "rating":
        verb = "better" if task.kind == "pairwise" else "next best"
        buttons = (
            f'<button type="button" data-testid="choose-{letter}" data-pick="{index}">'
            f"{letter.upper()} is {verb} <kbd>{index + 1}</kbd></button>"
        )
    rank = (
        f'<span class="rank" data-testid="rank-{letter}"></span>' if task.kind == "ranking" else ""
    )
    return (
        f'<article class="response" data-index="{index}">'
        f"<h2>Response {letter.upper()} {rank}</h2>"
        f'<div class="text" data-testid="response-{letter}">{escape(task.responses[index])}</div>'
        f'<label class="hint"><input type="checkbox" data-testid="unsafe-{letter}" '
        f'data-unsafe="{index}"> unsafe <kbd>Shift+{index + 1}</kbd></label><br>'
        f"{buttons}</article>"
    )


def task_page(task: Task, name: str, progress: Progress, csrf: str) -> Page:
    low, high = RATING_SCALE
    rating = ""
    if task.kind == "rating":
        rating = (
            "<p>"
            + "".join(
                f'<button type="button" data-testid="rate-{v}" data-rate="{v}">{v} <kbd>{v}</kbd>'
                "</button>"
                for v in range(low, high + 1)
            )
            + "</p>"
        )
    body = (
        _header(name, progress) + f'<main data-task-id="{task.id}" data-kind="{task.kind}" '
        f'data-responses="{len(task.responses)}">'
        f'<div class="prompt" data-testid="prompt">{escape(task.prompt)}</div>'
        '<div class="responses">'
        + "".join(_response(task, i) for i in range(len(task.responses)))
        + "</div>"
        + rating
        + '<p><button type="button" data-testid="skip" data-action="skip">Skip <kbd>s</kbd>'
        '</button><button type="button" data-testid="undo" data-action="undo">Undo last '
        "<kbd>u</kbd></button></p>"
        f'<p class="hint">{HINTS[task.kind]}; <kbd>s</kbd> skip; <kbd>u</kbd> undo</p>'
        '<p id="status" role="status" data-testid="status"></p>'
        "</main>"
    )
    return _document(f"Task {task.id}", body, csrf)


def done_page(name: str, progress: Progress, csrf: str) -> Page:
    body = (
        _header(name, progress)
        + '<main data-task-id="">'
        + '<p data-testid="done">Nothing left to label right now. Thank you!</p>'
        + '<p><button type="button" data-testid="undo" data-action="undo">Undo last '
        "<kbd>u</kbd></button></p>"
        + '<p id="status" role="status" data-testid="status"></p></main>'
    )
    return _document("All done", body, csrf)


def message_page(title: str, message: str) -> Page:
    return _document(title, f"<h1>{escape(title)}</h1><p>{escape(message)}</p>")
