"""`triage mllp`: the HL7 v2 MLLP listener (asyncio, many connections, many messages each).

Each connection's messages are taken in order: the message and its transform job are committed
in PostgreSQL (in a thread, so other connections go on), then the ACK is written. Never a
dropped connection or silence in place of an ACK: a database outage answers AE (send again),
bad input AR. Idle connections are closed after `mllp_idle_timeout`. On SIGTERM the listener
stops accepting, lets every connection finish the message in hand and send its ACK, then exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.exc import InterfaceError, OperationalError

from app.mllp_frames import Frame, FrameReader, frame
from app.runtime import Runtime
from app.services import audit, hl7_intake
from app.services.organisations import ensure_organisation
from workers import hl7_metrics

log = logging.getLogger(__name__)
_READ_BYTES = 256 * 1024


class MllpListener:
    """Serves MLLP connections until stopped."""

    def __init__(self, runtime: Runtime, organisation_id: int, policy: hl7_intake.Policy, *,
                 idle_timeout: float, threads: int = 8, max_connections: int = 500) -> None:
        self.runtime = runtime
        self.organisation_id = organisation_id
        self.policy = policy
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mllp-db")
        self._idle: dict[asyncio.Task[None], bool] = {}  # open connection's task → waiting for bytes
        self._stopping = asyncio.Event()

    def take(self, received: Frame) -> str:
        """Store one message (committed before returning) and return its ACK; AE if the database fails."""
        started = time.perf_counter()
        try:
            with self.runtime.sessions.begin() as session:
                intake = hl7_intake.receive(session, received.data, organisation_id=self.organisation_id,
                                            transport="mllp", policy=self.policy, size=received.size)
                if intake.message_id is not None and not intake.duplicate:  # stored: raw HL7 is PHI
                    audit.record(session, audit.AuditEntry(
                        action="hl7_message.create", outcome={"AA": "success", "AE": "error"}.get(intake.code, "denied"),
                        actor_type="system", actor_id="mllp", organisation_id=self.organisation_id,
                        resource_type="Hl7Message", resource_id=str(intake.message_id)))
        except (OperationalError, InterfaceError) as exc:  # the database is unreachable: send it again later
            log.warning("MLLP: message not stored (%s); answering AE", type(exc).__name__)
            hl7_metrics.answered("", "mllp", "AE", "database_unavailable")
            return hl7_intake.unavailable_ack(received.data)
        except Exception as exc:  # anything else would fail again on a resend: AR, never silence
            log.exception("MLLP: message not stored (%s); answering AR", type(exc).__name__)
            hl7_metrics.answered("", "mllp", "AR", "internal_error")
            return hl7_intake.failed_ack(received.data)
        error = None if intake.code == "AA" else "rejected"
        hl7_metrics.answered(intake.message_type, "mllp", intake.code, error)
        log.info("HL7 message %s: %s %s in %.1f ms%s", intake.message_id, intake.message_type or "-", intake.code,
                 (time.perf_counter() - started) * 1000, " (duplicate)" if intake.duplicate else "")
        return intake.ack

    async def _read(self, reader: asyncio.StreamReader, task: asyncio.Task[None]) -> bytes:
        self._idle[task] = True
        try:
            return await asyncio.wait_for(reader.read(_READ_BYTES), self.idle_timeout)
        finally:
            self._idle[task] = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: frames in, ACKs out, in order."""
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        self._idle[task] = False
        frames = FrameReader(self.policy.max_bytes)
        hl7_metrics.CONNECTIONS.inc()
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping.is_set():
                chunk = await self._read(reader, task)
                if not chunk:
                    break
                for received in frames.feed(chunk):
                    ack = await loop.run_in_executor(self._executor, self.take, received)
                    writer.write(frame(ack.encode("utf-8")))
                    await writer.drain()
        except TimeoutError:
            log.info("MLLP %s: idle for %ss, closing", peer, self.idle_timeout)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if frames.stray_bytes or frames.broken_frames:
                log.warning("MLLP %s: %s stray bytes outside frames, %s broken frames dropped", peer,
                            frames.stray_bytes, frames.broken_frames)
            self._idle.pop(task, None)
            hl7_metrics.CONNECTIONS.dec()
            writer.close()

    def stop(self) -> None:
        """Stop taking messages: idle connections close now, busy ones after their ACK."""
        self._stopping.set()
        for task, idle in list(self._idle.items()):
            if idle:
                task.cancel()

    async def serve(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        """Listen until SIGTERM/SIGINT, then drain."""
        server = await asyncio.start_server(self._connection, host, port, ssl=tls, limit=_READ_BYTES)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        log.info("MLLP: listening on %s:%s%s", host, port, " (TLS)" if tls else "")
        await self._stopping.wait()
        log.info("MLLP: stopping; finishing the messages in hand")
        server.close()
        self.stop()
        busy = [t for t in self._idle]
        if busy:
            await asyncio.wait(busy, timeout=max(5.0, self.runtime.settings.drain_seconds))
        self._executor.shutdown(wait=True)
        log.info("MLLP: stopped")

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._idle) >= self.max_connections:  # bounded memory: each may buffer a large frame
            log.warning("MLLP: %s connections open; refusing %s", len(self._idle), writer.get_extra_info("peername"))
            writer.close()
            return
        await self.handle(reader, writer)


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server TLS context when a certificate and key are configured."""
    if not cert and not key:
        return None
    if not (cert and key):
        raise ValueError("TRIAGE_MLLP_TLS_CERT and TRIAGE_MLLP_TLS_KEY go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def run_listener(runtime: Runtime) -> None:
    """Run the MLLP listener with the settings' address, TLS, organisation and policy."""
    s = runtime.settings
    with runtime.sessions.begin() as session:
        organisation_id = ensure_organisation(session, s.mllp_organisation).id
    policy = hl7_intake.Policy(max_bytes=s.hl7_max_bytes, duplicate_window_seconds=s.hl7_duplicate_window,
                               reject_unsupported=s.hl7_reject_unsupported, allowed_senders=s.mllp_allowed_senders)
    listener = MllpListener(runtime.use(), organisation_id, policy, idle_timeout=s.mllp_idle_timeout,
                            max_connections=s.mllp_max_connections)
    asyncio.run(listener.serve(s.mllp_host, s.mllp_port, tls_context(s.mllp_tls_cert, s.mllp_tls_key)))
