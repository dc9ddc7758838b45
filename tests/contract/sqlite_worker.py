"""A separate OS process hammering a shared SQLite store, for test_sqlite_adapter.py.

    python -m tests.contract.sqlite_worker count DB_FILE DOC_ID THREADS PER_THREAD
    python -m tests.contract.sqlite_worker claim DB_FILE START_AT ME DOC_ID...

`count` increments a document's `cas` field by compare-and-set (read it, then update only if
it still holds what was read, retrying otherwise) and its `inc` field by plain `$inc`, from
several threads. `claim` waits until the wall clock reaches START_AT, so that every worker
fires at once, tries to claim each document, and prints the ids it won as JSON.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from shared.storage.sqlite import SqliteDatabase


def count(db_file: str, doc_id: str, threads: int, per_thread: int) -> None:
    """Increment `cas` and `inc` of one document `threads * per_thread` times each."""
    db = SqliteDatabase(Path(db_file))
    things = db.collection("things")

    def work() -> None:
        for _ in range(per_thread):
            while True:
                seen = things.get(doc_id)["cas"]
                if things.update_one({"_id": doc_id, "cas": seen}, {"$inc": {"cas": 1}}):
                    break
            things.update_one({"_id": doc_id}, {"$inc": {"inc": 1}})

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    db.close()


def claim(db_file: str, start_at: float, me: str, doc_ids: list[str]) -> None:
    """Try to claim every document at START_AT; print the ids won."""
    db = SqliteDatabase(Path(db_file))
    things = db.collection("things")
    time.sleep(max(0.0, start_at - time.time()))
    won = [
        doc_id
        for doc_id in doc_ids
        if things.update_one(
            {"_id": doc_id, "state": "free"}, {"$set": {"state": "claimed", "by": me}}
        )
    ]
    db.close()
    print(json.dumps(won))


if __name__ == "__main__":
    command, db_file, *rest = sys.argv[1:]
    if command == "count":
        count(db_file, rest[0], int(rest[1]), int(rest[2]))
    else:
        claim(db_file, float(rest[0]), rest[1], rest[2:])
