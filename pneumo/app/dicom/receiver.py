"""The DICOM receiver: X-ray units and PACS send images (C-STORE) and are answered (C-ECHO).

Off unless `pneumo serve --dicom-port PORT` (setting ``dicom_port``). pynetdicom listens in
its own threads; `run_server` starts it after the web server is bound and stops it first
on shutdown.

What a C-STORE does, in order:

1. Only CR, DX "for presentation" and DX "for processing" images are accepted
   (STORAGE_CLASSES), in every transfer syntax the installed decoders read
   (`pneumo.app.dicom.samples.decodable_syntaxes`): other SOP classes (CT, MR, ...) are refused at
   association time and logged. The called AE title must be ours and, with
   ``dicom_allowed_aets``, the calling AE title one of those.
2. pynetdicom writes the data set straight to a temporary file (never the whole data set in
   memory); the handler moves it into the spool folder ``<data_dir>/dicom-inbox`` and only
   then answers 0x0000 (success). A file that cannot be spooled (disk full, over
   ``max_upload_bytes``) is answered 0xA700 (out of resources): the sender keeps it.
3. One worker thread analyses the spooled files in arrival order, exactly like an upload
   (`pneumo.app.analysis.analyse`, source "dicom", patient_ref from PatientID, never the
   patient's name; StudyInstanceUID and SOPInstanceUID stored). A SOPInstanceUID already in
   the history is not analysed again. A refusal (not a chest X-ray, undecodable, ...) is
   logged with its reason and gets no diagnosis. Whatever the analysis does, the C-STORE
   status was already sent. With ``dicom_send`` the result goes back as a Secondary Capture
   (`pneumo.app.dicom.send`). The spool file is deleted once handled; files left by a crash
   are analysed at the next start. While another program holds the history locked, the
   image stays spooled and is analysed again BUSY_RETRY_S later.

Connections are admitted by `pneumo.app.dicom.connections` first (a per-address cap, a short
timeout for the association request), so that idle sockets cannot jam the port.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import sqlite3
import threading
import time
import uuid
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from pneumo.app.analysis import AppState, analyse
from pneumo.app.config import MAX_PATIENT_REF, clean_text
from pneumo.app.history.faults import StorageBusy, StorageError, is_busy

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

STORAGE_CLASSES = ("ComputedRadiographyImageStorage", "DigitalXRayImageStorageForPresentation",
                   "DigitalXRayImageStorageForProcessing")
"""The storage SOP classes received, by their `pynetdicom.sop_class` names (the for-processing
one is then refused by its header)."""


@cache
def storage_class_uids() -> frozenset[str]:
    """The UIDs of STORAGE_CLASSES (pynetdicom is loaded only once the receiver starts)."""
    from pynetdicom import sop_class

    return frozenset(getattr(sop_class, name) for name in STORAGE_CLASSES)


SPOOL_DIR = "dicom-inbox"
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
DATASET_SLACK = 1 << 20
"""Bytes allowed beyond max_upload_bytes for one data set on the wire (PDU headers, meta)."""

BUSY_RETRY_S = 5.0
"""Seconds before a spooled image is analysed again when the history was in use."""

_STOP = object()


class ListenError(OSError):
    """The DICOM port cannot be listened on (``address`` says which)."""

    def __init__(self, exc: OSError, address: str):
        super().__init__(exc.errno, exc.strerror or str(exc))
        self.address = address


def patient_ref_from(header: Dataset) -> str | None:
    """The patient reference stored for a received image: its PatientID (never the name)."""
    try:
        value = header.get("PatientID")
    except Exception:  # a badly encoded PatientID: no reference rather than no analysis
        return None
    text = clean_text(str(value or ""))
    return text[:MAX_PATIENT_REF] or None


def _uid(header: Dataset, keyword: str) -> str | None:
    """A UID attribute as text (None when absent or unreadable)."""
    try:
        value = header.get(keyword)
    except Exception:
        return None
    text = str(value or "").strip()
    return text[:64] or None


def _sync_folder(folder: Path) -> None:
    """Make a new file's name durable (POSIX: fsync the folder; Windows has no need)."""
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class DicomReceiver:
    """The C-ECHO / C-STORE SCP of one app: start(), then stop() at shutdown."""

    def __init__(self, state: AppState, config: dict | None = None):
        self.state = state
        self.config = config or state.config
        self.spool = Path(self.config["data_dir"]) / SPOOL_DIR
        self.host = self.config["dicom_host"] or self.config["host"]
        self.port = int(self.config["dicom_port"] or 0)
        self.ae_title = self.config["dicom_ae_title"]
        self._queue: queue.Queue = queue.Queue()
        self._server = None
        self._worker: threading.Thread | None = None
        self._handled = threading.Condition()
        self.handled = 0  # spool files finished (analysed, refused or duplicates)

    # --- network side ----------------------------------------------------------------------

    def _make_ae(self):
        """The pynetdicom AE: contexts, AE title rules, limits and timeouts."""
        from pynetdicom import _config, sop_class

        from pneumo.app.dicom.connections import GuardedAE
        from pneumo.app.dicom.samples import decodable_syntaxes

        _config.STORE_RECV_CHUNKED_DATASET = True  # data sets go to a file, not to memory
        ae = GuardedAE(self.ae_title, max_per_address=self.config["dicom_max_per_address"],
                       request_timeout_s=self.config["dicom_request_timeout_s"])
        syntaxes = decodable_syntaxes()
        for name in STORAGE_CLASSES:
            ae.add_supported_context(getattr(sop_class, name), syntaxes)
        ae.add_supported_context(sop_class.Verification)
        ae.require_called_aet = True
        if self.config["dicom_allowed_aets"]:
            ae.require_calling_aet = list(self.config["dicom_allowed_aets"])
        ae.maximum_associations = self.config["dicom_max_associations"]
        ae.maximum_pdu_size = self.config["dicom_max_pdu"]
        ae.dimse_timeout = self.config["dicom_timeout_s"]
        ae.network_timeout = self.config["dicom_network_timeout_s"]
        return ae

    def start(self) -> tuple[str, int]:
        """Listen (in pynetdicom's threads), start the worker; returns (host, port) bound."""
        from pynetdicom import evt

        from pneumo.app.dicom.connections import quiet_peer_tracebacks

        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # one line per event is ours
        quiet_peer_tracebacks()
        self.spool.mkdir(parents=True, exist_ok=True)
        ae = self._make_ae()
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, self._on_echo),
                    (evt.EVT_REQUESTED, self._on_requested),
                    (evt.EVT_ACCEPTED, self._on_accepted), (evt.EVT_REJECTED, self._on_rejected),
                    (evt.EVT_DATA_RECV, self._on_data)]
        try:
            self._server = ae.start_server((self.host, self.port), block=False,
                                           evt_handlers=handlers)
        except OSError as exc:
            raise ListenError(exc, f"{self.host}:{self.port} (DICOM)") from exc
        self.port = self._server.server_address[1]
        self._worker = threading.Thread(target=self._work, name="dicom-analysis", daemon=True)
        self._worker.start()
        left = sorted(self.spool.glob("*.dcm"))
        for path in left:  # received before a crash or a stop: analysed now
            self._queue.put(path)
        if left:
            log.info("DICOM: %d received image(s) from before the last stop queued for "
                     "analysis", len(left))
        log.info("DICOM receiver %s listening on %s:%d", self.ae_title, self.host, self.port)
        return self.host, self.port

    def stop(self, timeout: float = 30.0) -> None:
        """Stop listening, let the image being analysed finish; the rest stays spooled."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._worker is not None:
            self._queue.put(_STOP)
            self._worker.join(timeout)
            self._worker = None
        log.info("DICOM receiver stopped")

    @staticmethod
    def _peer(event) -> str:
        """'AET@address' of the association's requestor."""
        req = event.assoc.requestor
        return f"{req.ae_title}@{req.address}"

    def _on_requested(self, event) -> None:
        """An A-ASSOCIATE-RQ arrived in time: from now on the usual ACSE and socket timeouts."""
        from pneumo.app.dicom.connections import accept_request

        accept_request(event.assoc, acse_timeout_s=self.config["dicom_timeout_s"],
                       network_timeout_s=self.config["dicom_network_timeout_s"])

    def _on_accepted(self, event) -> None:
        """Log an association; one that offers no CR/DX image class at all says what it had."""
        assoc = event.assoc
        log.info("DICOM association from %s accepted", self._peer(event))
        if any(str(cx.abstract_syntax) in storage_class_uids()
               for cx in assoc.accepted_contexts):
            return
        offered = sorted({str(cx.abstract_syntax.name) for cx in assoc.rejected_contexts})
        if offered:
            log.warning("DICOM: %s offers no CR/DX image, refused (only chest radiographs are "
                        "analysed): %s", self._peer(event), ", ".join(offered[:8])
                        + (f" and {len(offered) - 8} more" if len(offered) > 8 else ""))

    def _on_rejected(self, event) -> None:
        """Log a refused association and why (wrong AE title, too many at once)."""
        rj = getattr(getattr(event.assoc, "acceptor", None), "primitive", None)
        why = {(0x01, 0x07): f"the called AE title is not {self.ae_title}",
               (0x01, 0x03): "its calling AE title is not among "
                             f"{', '.join(self.config['dicom_allowed_aets'] or [])}",
               (0x03, 0x02): f"{self.config['dicom_max_associations']} associations are "
                             "already open"}.get(
            (getattr(rj, "result_source", None), getattr(rj, "diagnostic", None)),
            "refused by the association rules")
        log.warning("DICOM association from %s refused: %s", self._peer(event), why)

    def _on_data(self, event) -> None:
        """Abort an association whose data set grows past the upload limit (disk, not memory).

        pynetdicom writes a data set to a temporary file as it arrives; without this a peer
        could fill the disk before any handler sees the image. Counted per data set (reset
        by each C-STORE); the partial file is removed.
        """
        assoc = event.assoc
        received = getattr(assoc, "_pneumo_bytes", 0) + len(event.data)
        assoc._pneumo_bytes = received
        if received <= self.config["max_upload_bytes"] + DATASET_SLACK:
            return
        if getattr(assoc, "_pneumo_aborted", False):
            return
        assoc._pneumo_aborted = True
        log.warning("DICOM association from %s aborted: it sent more than %d bytes for one "
                    "image (the upload limit)", self._peer(event),
                    self.config["max_upload_bytes"])
        partial = getattr(getattr(assoc.dimse, "message", None), "_data_set_file", None)
        if partial is not None:
            try:
                os.unlink(partial.name)  # freed once pynetdicom drops its handle
            except OSError:
                pass
        assoc.abort(block=False)

    def _on_echo(self, event) -> int:
        """C-ECHO: always success."""
        log.info("DICOM C-ECHO from %s", self._peer(event))
        return STATUS_SUCCESS

    def _on_store(self, event) -> int:
        """C-STORE: spool the received file, queue it; success once it is safely stored."""
        event.assoc._pneumo_bytes = 0  # the next data set starts its own count
        sop_uid = str(event.request.AffectedSOPInstanceUID or "")
        peer = self._peer(event)
        try:
            src = Path(event.dataset_path)
            size = src.stat().st_size
            if size > self.config["max_upload_bytes"]:
                log.warning("DICOM image %s from %s refused: %d bytes, over the %d-byte limit",
                            sop_uid, peer, size, self.config["max_upload_bytes"])
                return STATUS_OUT_OF_RESOURCES
            dst = self.spool / f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.dcm"
            part = dst.with_suffix(".part")
            try:
                os.replace(src, part)  # same file system: no copy
            except OSError:
                shutil.copyfile(src, part)
            with open(part, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(part, dst)
            _sync_folder(self.spool)
        except Exception as exc:  # the sender must keep the image: not safely stored here
            log.error("DICOM image %s from %s could not be stored: %s", sop_uid, peer, exc)
            return STATUS_OUT_OF_RESOURCES
        log.info("DICOM image %s received from %s (%d bytes)", sop_uid, peer, size)
        self._queue.put(dst)
        return STATUS_SUCCESS

    # --- analysis side ---------------------------------------------------------------------

    def _work(self) -> None:
        """The worker thread: analyse spooled files one at a time until stopped."""
        while True:
            path = self._queue.get()
            if path is _STOP:
                return
            try:
                keep = self.process(path)
            except Exception as exc:  # never let one image stop the worker
                if is_busy(exc):  # another program holds the history: try again shortly
                    log.warning("DICOM image %s: the history is in use by another program; "
                                "analysed again in %.0f s (the image stays in %s)", path.name,
                                BUSY_RETRY_S, self.spool)
                    self._retry_later(path)
                    continue
                log.exception("DICOM image %s: analysis failed", path.name)
                keep = False
            if not keep:
                path.unlink(missing_ok=True)
            with self._handled:
                self.handled += 1
                self._handled.notify_all()

    def _retry_later(self, path: Path) -> None:
        """Queue a spooled file again after BUSY_RETRY_S (after a stop: at the next start)."""
        timer = threading.Timer(BUSY_RETRY_S, self._queue.put, (path,))
        timer.daemon = True
        timer.start()

    def wait_handled(self, n: int, timeout: float = 60.0) -> bool:
        """Wait until `n` spool files have been handled in total (tests, shutdown)."""
        with self._handled:
            return self._handled.wait_for(lambda: self.handled >= n, timeout)

    def process(self, path: Path) -> bool:
        """Analyse one spooled file; True when it must stay spooled (retry at next start)."""
        import pydicom

        from pneumo.app.pipeline.decoded import ImageError

        data = path.read_bytes()
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception as exc:
            log.warning("DICOM file %s refused: its header cannot be read (%s)", path.name, exc)
            return False
        sop_uid = _uid(header, "SOPInstanceUID") or _uid(
            getattr(header, "file_meta", {}), "MediaStorageSOPInstanceUID")
        study_uid = _uid(header, "StudyInstanceUID")
        if sop_uid and self.state.history.find_sop(sop_uid) is not None:
            log.info("DICOM image %s already analysed: not analysed again", sop_uid)
            return False
        try:
            result, record = analyse(self.state, data, source="dicom", study_uid=study_uid,
                                     sop_uid=sop_uid, patient_ref=patient_ref_from(header),
                                     file_name=f"{sop_uid or path.stem}.dcm")
        except ImageError as exc:  # NotAChestXray and undecodable/too large images
            reasons = [r.code for r in getattr(exc, "reasons", [])] or [exc.code]
            log.warning("DICOM image %s refused, no diagnosis (%s): %s", sop_uid,
                        ", ".join(reasons), exc)
            return False
        except sqlite3.IntegrityError:  # the same SOPInstanceUID committed meanwhile
            log.info("DICOM image %s already analysed: not analysed again", sop_uid)
            return False
        except StorageBusy:  # not kept until the next start: _work tries again shortly
            raise
        except StorageError as exc:
            log.error("DICOM image %s: the result could not be saved (%s); it stays in %s "
                      "and is analysed again at the next start", sop_uid, exc, self.spool)
            return True
        del data
        log.info("DICOM image %s analysed: %s (p=%.3f, threshold %.3f), record %s", sop_uid,
                 result.label, result.probability, result.threshold, record["id"])
        if self.config["dicom_send"]:
            self._send(record, header)
        return False

    def _send(self, record: dict, header: Dataset) -> None:
        """Send the result back as a Secondary Capture; failures are logged, not raised."""
        from pneumo.app.dicom.send import send_result

        try:
            send_result(self.state, record, header, self.config["dicom_send"],
                        ae_title=self.ae_title, timeout=self.config["dicom_timeout_s"])
        except Exception as exc:
            log.error("DICOM result of %s not sent to %s: %s", record.get("sop_uid"),
                      self.config["dicom_send"], exc)
