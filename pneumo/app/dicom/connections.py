"""The DICOM listener's connection rules, so that one peer cannot jam the port.

pynetdicom counts every open TCP connection as an association from the moment it is
accepted, before the peer has said a word; with only those rules, four idle sockets filled
all four slots and allowed X-ray units were refused ("Local Limit Exceeded") until well
after the sockets closed. Here, in front of pynetdicom's own limit:

- **Per-address cap** (``dicom_max_per_address``, default 2): a connection from an address
  that already holds that many (open associations and connections still waiting for their
  A-ASSOCIATE-RQ) is closed at once, before any thread starts. X-ray units that send in
  parallel need it raised to their number of parallel associations.
- **Request timeout** (``dicom_request_timeout_s``, default 5 s): a connection that has not
  sent its whole A-ASSOCIATE-RQ within it is closed, a half-sent one too (it is the ACSE
  timeout and the socket timeout until the request has arrived; the receiver then sets
  them to ``dicom_timeout_s`` and ``dicom_network_timeout_s``, see `accept_request`).

Threat model: a peer on the network that reopens sockets every few seconds can hold at most
``dicom_max_per_address`` of the ``dicom_max_associations`` slots from each address it uses,
each for at most the request timeout; an allowed unit on another address still gets
through. A peer with as many addresses as slots divided by the cap (4 with the defaults)
can still fill the port, as it could flood any TCP service; a firewall rule that admits
only the X-ray units' addresses is the answer to that (see the README). The AE-title
allow-list cannot help here: it is checked only once a request arrives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from pynetdicom import AE
from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger("pneumo.app.dicom.receiver")

WARN_EVERY_S = 60.0
"""One log line per refused address at most this often (a peer that retries would flood it)."""


class DropPeerTracebacks(logging.Filter):
    """Drop pynetdicom's traceback of a peer's broken PDU (the line before it says what).

    pynetdicom logs "Connection closed before the entire PDU was received" and then the
    socket exception with its traceback: a peer that half-sends PDUs could fill the server
    log with tracebacks of nothing wrong in the app.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """False for an exception record of the DUL (one line stays)."""
        return not (record.exc_info and record.name == "pynetdicom.dul")


def quiet_peer_tracebacks() -> None:
    """Install DropPeerTracebacks on pynetdicom's DUL logger (once)."""
    dul = logging.getLogger("pynetdicom.dul")
    if not any(isinstance(f, DropPeerTracebacks) for f in dul.filters):
        dul.addFilter(DropPeerTracebacks())


def _requestor_address(assoc) -> str | None:
    """The peer address of an acceptor association (None when not known)."""
    try:
        return assoc.requestor.address
    except ValueError:
        return None


class CappedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with a per-address connection cap and a socket timeout."""

    max_per_address: int = 2
    request_timeout_s: float | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._starting: dict[str, set[int]] = {}  # admitted sockets (id) not yet handed over
        self._admit = threading.Lock()
        self._refused: Counter[str] = Counter()
        self._warned_at: dict[str, float] = {}

    def held_by(self, address: str) -> int:
        """Connections this address holds now (associations and ones still starting)."""
        starting = self._starting.get(address, set())
        alive = 0
        for assoc in self.active_associations:
            if _requestor_address(assoc) != address:
                continue
            sock = getattr(getattr(assoc, "dul", None), "socket", None)
            if id(getattr(sock, "socket", None)) not in starting:  # not counted twice
                alive += 1
        return alive + len(starting)

    def verify_request(self, request, client_address) -> bool:
        """Admit a connection unless its address already holds max_per_address."""
        address = str(client_address[0])
        with self._admit:
            held = self.held_by(address)
            if held >= self.max_per_address:
                self._note_refused(address, held)
                return False  # socketserver closes it: no thread, no slot
            self._starting.setdefault(address, set()).add(id(request))
        if self.request_timeout_s is not None:  # a half-sent PDU cannot block recv() longer
            request.settimeout(self.request_timeout_s)
        return True

    def process_request_thread(self, request, client_address) -> None:
        """Start the association (pynetdicom), then stop counting it as starting."""
        try:
            super().process_request_thread(request, client_address)
        finally:  # the association thread is alive by now: active_associations counts it
            address = str(client_address[0])
            with self._admit:
                starting = self._starting.get(address, set())
                starting.discard(id(request))
                if not starting:
                    self._starting.pop(address, None)

    def _note_refused(self, address: str, held: int) -> None:
        """Log a refused connection, at most once a minute per address."""
        self._refused[address] += 1
        now = time.monotonic()
        if now - self._warned_at.get(address, -WARN_EVERY_S) < WARN_EVERY_S:
            return
        self._warned_at[address] = now
        log.warning("DICOM connection from %s refused: it already holds %d connection(s), the "
                    "most one address may (dicom_max_per_address); %d refused from it so far",
                    address, held, self._refused[address])


def accept_request(assoc, *, acse_timeout_s: float, network_timeout_s: float) -> None:
    """Once an A-ASSOCIATE-RQ has arrived: the association's own ACSE and socket timeouts."""
    assoc.acse_timeout = acse_timeout_s
    sock = getattr(assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.settimeout(network_timeout_s)


class GuardedAE(AE):
    """A pynetdicom AE whose servers apply the per-address cap and the request timeout.

    The AE's own ``acse_timeout`` is set to the request timeout: pynetdicom gives it to each
    new association, for its wait for the A-ASSOCIATE-RQ.
    """

    def __init__(self, ae_title: str, *, max_per_address: int, request_timeout_s: float):
        super().__init__(ae_title=ae_title)
        self.max_per_address = max_per_address
        self.request_timeout_s = request_timeout_s
        self.acse_timeout = request_timeout_s

    def make_server(self, address, ae_title=None, contexts=None, ssl_context=None,
                    evt_handlers=None, server_class=None, **kwargs):
        """pynetdicom's make_server with CappedServer (start_server calls it)."""
        server = super().make_server(address, ae_title=ae_title, contexts=contexts,
                                     ssl_context=ssl_context, evt_handlers=evt_handlers,
                                     server_class=CappedServer, **kwargs)
        server.max_per_address = self.max_per_address
        server.request_timeout_s = self.request_timeout_s
        return server
