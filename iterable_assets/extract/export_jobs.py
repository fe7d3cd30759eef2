"""Iterable's asynchronous Export Jobs API: a whole range of one dataTypeName as jobs, their files
downloaded in parallel from pre-signed URLs, into one sink.

`POST export/start` starts a job, `GET export/{jobId}/files` tells its state and lists its files
(10 a page, `startAfter`), `DELETE export/{jobId}` cancels it. Iterable processes 4 jobs at once per
organisation and queues the rest; `start` and `files` take 1 request per second per organisation.

- A range is cut in at most `jobs_max` pieces, a job each, run at once: Iterable's slots are the
  limit, so a year of one table takes about a quarter of one job's time.
- The jobs of this project in flight (enqueued or running) are counted in the ledger of the rate
  budget, across every process (every host, on Postgres): a piece waits for a slot, so the project
  never has more than `jobs_max` in flight.
- A `failed` job is started again (up to FAILED_JOB_ATTEMPTS). A job whose `exportTruncated` is set
  is dropped and its range split in halves. An expired URL (403) is fetched fresh from its page.
- The ledger records each job the project starts, with its holder (the process: a PID on one host, a
  lease on Postgres) and a heartbeat. A job whose holder died is cancelled by the next use of jobs; a
  job not in the ledger is never touched.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

from iterable_assets.catalog.clock import utc
from iterable_assets.catalog.streams import JOB_CANCEL_FAMILY, JOB_FILES_FAMILY, JOB_START_FAMILY
from iterable_assets.extract.ledger import Ledger, Transaction
from iterable_assets.extract.sinks import TextFile

REQUEST_FORMAT = "%Y-%m-%d %H:%M:%S"
JSON_STREAM = "application/x-json-stream"
IN_FLIGHT = ("enqueued", "queued", "running", "cancelling")
FAILED_JOB_ATTEMPTS = 3
PARALLEL_DOWNLOADS = 4
FILES_PER_PAGE = 10  # Iterable's page of `files`: a shorter page is the last
SHORTEST_PIECE = timedelta(seconds=1)  # a truncated job's range is halved down to this


class ExportJobError(Exception):
    """A job that could not deliver its range: it failed every attempt, or was cancelled by someone else."""


@dataclass
class JobLedger:
    """The project's export jobs in flight, in the ledger every process shares (extract/ledger.py)."""

    ledger: Ledger
    project: str  # the project's fingerprint (never the key)
    jobs_max: int
    lease_seconds: float  # a heartbeat older than this marks its holder dead, whatever its host

    def _transact(self, work: Callable[[Transaction], Any]) -> Any:
        return self.ledger.transact(f"iterable_jobs:{self.project}", work)

    def claim(self, data_type: str) -> int | None:
        """A slot (its ledger row id) when fewer than `jobs_max` of the project's jobs are in flight."""
        holder = self.ledger.holder

        def claim(tx: Transaction) -> int | None:
            [(count,)] = tx.rows("SELECT count(*) FROM export_slots WHERE project = ?", [self.project])
            if count >= self.jobs_max:
                return None
            return tx.rows(
                "INSERT INTO export_slots (project, data_type, host, holder, heartbeat) VALUES (?, ?, ?, ?, ?) "
                "RETURNING id",
                [self.project, data_type, socket.gethostname(), holder, tx.now()],
            )[0][0]

        return self._transact(claim)

    def started(self, slot: int, job_id: int) -> None:
        sql = "UPDATE export_slots SET job_id = ?, heartbeat = ? WHERE id = ?"
        self._transact(lambda tx: tx.rows(sql, [job_id, tx.now(), slot]))

    def beat(self, slot: int) -> None:
        self._transact(lambda tx: tx.rows("UPDATE export_slots SET heartbeat = ? WHERE id = ?", [tx.now(), slot]))

    def release(self, slot: int) -> None:
        self._transact(lambda tx: tx.rows("DELETE FROM export_slots WHERE id = ?", [slot]))

    def orphans(self) -> list[tuple[int, int | None]]:
        """(slot, job id) of the project's jobs whose holder is dead (see extract/ledger.py), or whose
        heartbeat is older than the lease."""

        def dead(tx: Transaction) -> list[tuple[int, int | None]]:
            sql = "SELECT id, job_id, host, holder, heartbeat FROM export_slots WHERE project = ?"
            rows, now = tx.rows(sql, [self.project]), tx.now()
            return [
                (slot, job_id)
                for slot, job_id, host, holder, heartbeat in rows
                if now - heartbeat > self.lease_seconds or self.ledger.holder_gone(tx, host, holder)
            ]

        return self._transact(dead)


@dataclass
class Piece:
    """A [start, end) of the range, exported as one job."""

    index: tuple[int, ...]  # its place in the range (halves of a truncated piece sort after it)
    start: datetime
    end: datetime
    attempt: int = 1
    slot: int | None = None
    job_id: int | None = None
    files: list[dict] = field(default_factory=list)


@dataclass
class JobsReport:
    jobs_started: int = 0
    jobs_failed: int = 0
    jobs_truncated: int = 0
    files: int = 0
    files_requests: int = 0


@dataclass
class ExportJobs:
    """Exports of one project through jobs. `client` is extract.client.IterableClient."""

    client: object
    ledger: JobLedger
    poll_seconds: float  # the first wait between polls of a job's files; it grows to 30 times this
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = print
    spool_dir: str | None = None  # where files are downloaded; default: the temp folder

    def export(self, data_type: str, start: datetime, end: datetime, into, pieces: int | None = None) -> JobsReport:
        """Every record of `data_type` in [start, end) into `into` (a sink: reset, write, close), file
        after file in range order, as `pieces` jobs (default: one per slot)."""
        report = JobsReport()
        self.cancel_orphans()
        cut = _cut(start, end, pieces or self.ledger.jobs_max)
        with tempfile.TemporaryDirectory(prefix="iterable-jobs-", dir=self.spool_dir) as folder:
            done = self._run(data_type, cut, Path(folder), report)
            into.reset()
            try:
                for piece in sorted(done, key=lambda p: p.index):
                    for part in piece.files:
                        with open(part["path"], "rb") as f:
                            shutil.copyfileobj(f, _Writer(into), 1 << 20)
            finally:
                into.close()
        return report

    def cancel_orphans(self) -> int:
        """Cancel the jobs this project started in runs that died; returns how many."""
        cancelled = 0
        for slot, job_id in self.ledger.orphans():
            if job_id is not None:
                try:
                    self.client.send_json("DELETE", f"export/{job_id}", family=JOB_CANCEL_FAMILY)
                    cancelled += 1
                    self.log(f"cancelled export job {job_id}, left running by a run that died")
                except Exception as exc:  # already finished (400) or gone: nothing left to stop
                    if getattr(exc, "status", None) not in (400, 404):
                        raise
            self.ledger.release(slot)
        return cancelled

    def _run(self, data_type: str, pieces: list[Piece], folder: Path, report: JobsReport) -> list[Piece]:
        pending, active, done = list(pieces), [], []
        downloads: list[tuple[Piece, Future]] = []
        wait = self.poll_seconds
        with ThreadPoolExecutor(PARALLEL_DOWNLOADS, thread_name_prefix="export-file") as pool:
            try:
                while pending or active:
                    progressed = False
                    while pending and (slot := self.ledger.claim(data_type)) is not None:
                        piece = pending.pop(0)
                        piece.slot = slot
                        try:
                            piece.job_id = self._start(data_type, piece)
                        except BaseException:
                            self.ledger.release(slot)
                            raise
                        self.ledger.started(slot, piece.job_id)
                        report.jobs_started += 1
                        active.append(piece)
                        progressed = True
                    for piece in list(active):
                        state, truncated, files = self._files(piece, report)
                        self.ledger.beat(piece.slot)
                        if state in IN_FLIGHT:
                            continue
                        active.remove(piece)
                        self.ledger.release(piece.slot)
                        progressed = True
                        if state == "completed" and not truncated:
                            piece.files = files
                            downloads += [(piece, pool.submit(self._download, piece, f, folder)) for f in files]
                            done.append(piece)
                        elif state == "completed":  # Iterable's 100 GB cap: halve the range
                            report.jobs_truncated += 1
                            pending[:0] = self._halves(data_type, piece)
                        elif state == "failed" and piece.attempt < FAILED_JOB_ATTEMPTS:
                            report.jobs_failed += 1
                            self.log(f"export job {piece.job_id} ({data_type}) failed; starting it again")
                            pending.insert(0, Piece(piece.index, piece.start, piece.end, piece.attempt + 1))
                        else:
                            raise ExportJobError(
                                f"the export job of {data_type} [{piece.start:%Y-%m-%d %H:%M:%S}, "
                                f"{piece.end:%Y-%m-%d %H:%M:%S}) ended {state}"
                                + (f" {piece.attempt} times" if state == "failed" else " (cancelled by someone else)")
                            )
                    if pending and not active:  # every slot is another run's: free those of dead runs
                        self.cancel_orphans()
                    if pending or active:
                        wait = self.poll_seconds if progressed else min(wait * 1.5, self.poll_seconds * 30)
                        self.sleep(wait)
                for piece, future in downloads:
                    future.result()
            except BaseException:
                for piece in active:  # ours, unfinished: cancel rather than leave them running
                    self._cancel(piece)
                for future in (f for _, f in downloads):
                    future.cancel()
                raise
        report.files = sum(len(p.files) for p in done)
        return done

    def _halves(self, data_type: str, piece: Piece) -> list[Piece]:
        if piece.end - piece.start <= SHORTEST_PIECE:
            raise ExportJobError(f"the export job of {data_type} is truncated even for {SHORTEST_PIECE} of data")
        middle = piece.start + (piece.end - piece.start) / 2
        self.log(f"export job {piece.job_id} ({data_type}) was truncated; exporting its range in two halves")
        return [Piece((*piece.index, 0), piece.start, middle), Piece((*piece.index, 1), middle, piece.end)]

    def _start(self, data_type: str, piece: Piece) -> int:
        body = {
            "dataTypeName": data_type,
            "outputFormat": JSON_STREAM,
            "startDateTime": utc(piece.start).strftime(REQUEST_FORMAT),
            "endDateTime": utc(piece.end).strftime(REQUEST_FORMAT),
        }
        return int(self.client.send_json("POST", "export/start", body, JOB_START_FAMILY)["jobId"])

    def _files(self, piece: Piece, report: JobsReport, after: str | None = None) -> tuple[str, bool, list[dict]]:
        """The job's state, its truncation flag, and its files (every page after `after`)."""
        files: list[dict] = []
        while True:
            params = {"startAfter": after} if after else {}
            page = self.client.get_json(f"export/{piece.job_id}/files", JOB_FILES_FAMILY, **params)
            report.files_requests += 1
            listed = page.get("files") or []
            files += listed
            state = str(page.get("jobState", "")).lower()
            if state != "completed" or len(listed) < FILES_PER_PAGE:
                return state, bool(page.get("exportTruncated")), files
            after = page["files"][-1]["file"]

    def _download(self, piece: Piece, file: dict, folder: Path) -> None:
        """One file into its own part. An expired URL is asked for again (a fresh `files` page)."""
        path = folder / f"{piece.job_id}-{file['file']}"
        for _ in range(3):
            try:
                self.client.download_file(file["url"], TextFile(path), f"export/{piece.job_id}/files/{file['file']}")
                file["path"] = path
                return
            except Exception as exc:
                if getattr(exc, "status", None) != 403:
                    raise
                previous = [f["file"] for f in piece.files if f["file"] < file["file"]]
                fresh = self._refetch(piece, previous[-1] if previous else None, file["file"])
                self.log(f"the URL of {file['file']} had expired; fetched a fresh one")
                file["url"] = fresh
        raise ExportJobError(f"the URL of export file {file['file']} kept expiring")

    def _refetch(self, piece: Piece, after: str | None, name: str) -> str:
        params = {"startAfter": after} if after else {}
        page = self.client.get_json(f"export/{piece.job_id}/files", JOB_FILES_FAMILY, **params)
        return next(f["url"] for f in page.get("files") or [] if f["file"] == name)

    def _cancel(self, piece: Piece) -> None:
        try:
            if piece.job_id is not None:
                self.client.send_json("DELETE", f"export/{piece.job_id}", family=JOB_CANCEL_FAMILY)
        except Exception:  # the next run cancels it (the ledger still holds it)
            return
        self.ledger.release(piece.slot)


class _Writer:
    """A file-like face for a sink's write, for shutil.copyfileobj."""

    def __init__(self, sink):
        self.write = sink.write


def _cut(start: datetime, end: datetime, count: int) -> list[Piece]:
    """[start, end) in at most `count` pieces of whole seconds."""
    seconds = int((end - start).total_seconds())
    count = max(1, min(count, seconds))
    bounds = [start + timedelta(seconds=seconds * k // count) for k in range(count)] + [end]
    return [Piece((k,), bounds[k], bounds[k + 1]) for k in range(count)]
