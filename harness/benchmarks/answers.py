"""The model under test answering a benchmark's chats, chunk by chunk and crash-safe.

A :data:`Chat` takes chat requests (messages, temperature, max new tokens) and returns the reply
text by request id. :func:`answer_in_chunks` sends fixed chunks of requests and appends each
chunk's replies to a partial file as it finishes; a rerun reuses the replies found there (same
request id and same request, by :meth:`JudgeRequest.key`), so a crash loses one chunk at most.
The chunks do not depend on what is already done, so a resumed run sends the same batches and
gets the same replies as an uninterrupted one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from harness.artifacts import append_jsonl, partial_path, read_partial_jsonl
from harness.faults import crash_point
from harness.judges.base import JudgeRequest

Chat = Callable[[list[JudgeRequest]], dict[str, str]]
CHUNK = 64  # requests answered and committed together
_KEY = "model-under-test"  # what JudgeRequest.key hashes beside the request itself


def answer_in_chunks(requests: list[JudgeRequest], chat: Chat, answers: Path,
                     chunk: int | None = None) -> dict[str, str]:
    """Every request's reply; chunks are committed to the partial file of ``answers`` (the file
    the caller writes when all are in, then deleting the partial one), and the replies committed
    there by an interrupted call are reused. ``chunk`` defaults to :data:`CHUNK`."""
    chunk = chunk or CHUNK
    partial = partial_path(answers)
    saved = {r["id"]: r for r in read_partial_jsonl(partial)}
    replies = {r.id: saved[r.id]["reply"] for r in requests
               if r.id in saved and saved[r.id].get("key") == r.key(_KEY)}
    if replies:
        print(f"{partial}: {len(replies)} answer(s) committed before are reused", file=sys.stderr)
    for start in range(0, len(requests), chunk):
        todo = requests[start:start + chunk]
        if all(r.id in replies for r in todo):
            continue
        got = chat(todo)
        append_jsonl(partial, ({"id": r.id, "key": r.key(_KEY), "reply": got[r.id]} for r in todo))
        replies.update({r.id: got[r.id] for r in todo})
        crash_point("answer/chunk")
    return replies
