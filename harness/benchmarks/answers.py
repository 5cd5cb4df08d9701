"""The model under test answering a benchmark's chats, chunk by chunk and crash-safe.

A :data:`Chat` takes chat requests (messages, temperature, max new tokens) and returns the reply
text by request id. :func:`answer_in_chunks` sends fixed chunks of requests and appends each
chunk's replies to a partial file as it finishes; a rerun reuses the replies found there (same
request id and same request, by :meth:`JudgeRequest.key`), so a crash loses one chunk at most.
The chunks do not depend on what is already done, so a resumed run sends the same batches and
gets the same replies as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.commits import Commits, in_chunks
from harness.judges.base import JudgeRequest

Chat = Callable[[list[JudgeRequest]], dict[str, str]]
CHUNK = 64  # requests answered and committed together
_KEY = "model-under-test"  # what JudgeRequest.key hashes beside the request itself


def answer_in_chunks(requests: list[JudgeRequest], chat: Chat, answers: Path,
                     chunk: int | None = None) -> dict[str, str]:
    """Every request's reply; chunks are committed to the partial file of ``answers`` (the file
    the caller writes when all are in, then deleting the partial one), and the replies committed
    there by an interrupted call are reused. ``chunk`` defaults to :data:`CHUNK`."""
    keys = {r.id: r.key(_KEY) for r in requests}
    commits = Commits(answers, "id", "answer/chunk", what="answer",
                      keep=lambda row: keys.get(row["id"]) == row.get("key"))

    def answer(todo: list[JudgeRequest]) -> list[dict[str, str]]:
        got = chat(list(todo))
        return [{"id": r.id, "key": keys[r.id], "reply": got[r.id]} for r in todo]

    in_chunks(commits, requests, chunk or CHUNK, lambda r: r.id, answer)
    return {r.id: commits.rows[r.id]["reply"] for r in requests}
