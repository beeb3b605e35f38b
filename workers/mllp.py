"""`triage mllp`: the HL7 v2 MLLP listener (asyncio, many connections, many messages each).

Each connection's messages are taken in order: the message and its transform job are committed
in PostgreSQL, then the ACK is written. Commits are grouped: while one transaction runs (in a
thread), the frames that arrive on other connections wait, and the next transaction takes them
all with multi-row statements and one transform job (group commit, as PostgreSQL does with its
WAL): no waiting when idle, few transactions when busy. Never a
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.exc import InterfaceError, OperationalError

from app.mllp_frames import Frame, FrameReader, frame
from app.runtime import Runtime
from app.services import audit, hl7_intake
from app.services.organisations import ensure_organisation
from workers import hl7_metrics

log = logging.getLogger(__name__)
_READ_BYTES = 256 * 1024
#: Most frames taken in one transaction.
MAX_BATCH = 50
#: How long a transaction waits for more frames when other connections are open (one sender waits not at all).
LINGER_SECONDS = 0.001


class MllpListener:
    """Serves MLLP connections until stopped."""

    def __init__(self, runtime: Runtime, organisation_id: int, policy: hl7_intake.Policy, *,
                 idle_timeout: float, max_connections: int = 500) -> None:
        self.runtime = runtime
        self.organisation_id = organisation_id
        self.policy = policy
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        # One committer: the frames that arrive while it writes form the next batch (two made smaller batches).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mllp-db")
        self._waiting: list[tuple[Frame, asyncio.Future[str]]] = []  # frames not yet taken, with their answers
        self._arrived = asyncio.Event()
        self._idle: dict[asyncio.Task[None], bool] = {}  # open connection's task → waiting for bytes
        self._stopping = asyncio.Event()

    def take(self, received: Frame) -> str:
        """Store one message (committed before returning) and return its ACK; AE if the database fails."""
        return self.take_many([received])[0]

    def take_many(self, batch: list[Frame]) -> list[str]:
        """Store messages in one transaction (committed before returning) and return their ACKs.

        AE for all when the database fails; any other error is met message by message, so only
        the message that causes it is answered AR.
        """
        started = time.perf_counter()
        try:
            with self.runtime.sessions.begin() as session:
                intakes = hl7_intake.receive_many(session, [(f.data, f.size) for f in batch],
                                                  organisation_id=self.organisation_id, transport="mllp",
                                                  policy=self.policy)
                audit.record_many(session, [self._audit_entry(i) for i in intakes
                                            if i.message_id is not None and not i.duplicate])
        except (OperationalError, InterfaceError) as exc:  # the database is unreachable: send it again later
            log.warning("MLLP: %s message(s) not stored (%s); answering AE", len(batch), type(exc).__name__)
            for _ in batch:
                hl7_metrics.answered("", "mllp", "AE", "database_unavailable")
            return [hl7_intake.unavailable_ack(f.data) for f in batch]
        except Exception as exc:  # anything else would fail again on a resend: AR, never silence
            if len(batch) > 1:
                log.warning("MLLP: a batch of %s failed (%s); taking its messages one by one", len(batch),
                            type(exc).__name__)
                return [ack for received in batch for ack in self.take_many([received])]
            log.exception("MLLP: message not stored (%s); answering AR", type(exc).__name__)
            hl7_metrics.answered("", "mllp", "AR", "internal_error")
            return [hl7_intake.failed_ack(batch[0].data)]
        elapsed = (time.perf_counter() - started) * 1000
        for intake in intakes:
            hl7_metrics.answered(intake.message_type, "mllp", intake.code, None if intake.code == "AA" else "rejected")
            log.info("HL7 message %s: %s %s in %.1f ms (%s taken together)%s", intake.message_id,
                     intake.message_type or "-", intake.code, elapsed, len(batch), " (duplicate)" if intake.duplicate else "")
        return [intake.ack for intake in intakes]

    def _audit_entry(self, intake: hl7_intake.Intake) -> audit.AuditEntry:
        """The record of a stored message (raw HL7 is PHI)."""
        return audit.AuditEntry(
            action="hl7_message.create", outcome={"AA": "success", "AE": "error"}.get(intake.code, "denied"),
            actor_type="system", actor_id="mllp", organisation_id=self.organisation_id,
            resource_type="Hl7Message", resource_id=str(intake.message_id))

    async def _answer(self, received: Frame) -> str:
        """The ACK to a frame, once it is committed together with the frames that arrived meanwhile."""
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.append((received, answer))
        self._arrived.set()
        return await answer

    async def _commit_loop(self) -> None:
        """Take what waits, up to MAX_BATCH frames, in one transaction; meanwhile more arrive (group commit)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            if len(self._idle) > len(self._waiting):  # other connections may send in a moment: let them join
                await asyncio.sleep(LINGER_SECONDS)
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            if not self._waiting:
                self._arrived.clear()
            if not batch:
                continue
            try:
                acks = await loop.run_in_executor(self._executor, self.take_many, [f for f, _ in batch])
                for (_, answer), ack in zip(batch, acks, strict=True):
                    if not answer.done():
                        answer.set_result(ack)
            except Exception as exc:  # a bug: answer AR rather than leave senders hanging (this loop goes on)
                log.exception("MLLP: %s message(s) not stored; answering AR", len(batch))
                for received, answer in batch:
                    if not answer.done():
                        _settle_failed(answer, received, exc)

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
        try:
            while not self._stopping.is_set():
                chunk = await self._read(reader, task)
                if not chunk:
                    break
                for received in frames.feed(chunk):
                    ack = await self._answer(received)
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
        committing = asyncio.create_task(self._commit_loop())
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
        committing.cancel()
        self._executor.shutdown(wait=True)
        log.info("MLLP: stopped")

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._idle) >= self.max_connections:  # bounded memory: each may buffer a large frame
            log.warning("MLLP: %s connections open; refusing %s", len(self._idle), writer.get_extra_info("peername"))
            writer.close()
            return
        await self.handle(reader, writer)


def _settle_failed(answer: asyncio.Future[str], received: Frame, exc: Exception) -> None:
    """AR for a frame that could not be taken; if even that cannot be built, the connection fails (closes)."""
    try:
        answer.set_result(hl7_intake.failed_ack(received.data))
    except Exception:  # noqa: BLE001 - the exception goes to the connection, which closes
        answer.set_exception(exc)


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
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(listener.serve(s.mllp_host, s.mllp_port, tls_context(s.mllp_tls_cert, s.mllp_tls_key)))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (not on Windows): the socket work of each message takes less CPU."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
