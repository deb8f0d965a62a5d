"""The one handler that turns an exception raised by a step of ``POST /`` into its response.

Handlers are registered by exception class and the most specific one wins (as in Starlette's
``exception_handlers``):

``RegardError``  the operation's error in the wire format (:func:`error_response`, with the
                 modeled equivalent :func:`for_operation` picks); a refusal nobody audited yet
                 gets its audit record here.
``ClientDisconnect``  the client went away mid-request: answered (to nobody) and logged as
                 ``ClientDisconnected`` with status 499, like any refusal, without a traceback.
``Exception``    ``InternalServerError`` naming the request id; the traceback is logged, never
                 sent; a request the guard had not recorded gets a record of the failure.

Both note the status and error code for the request log. Starlette's own handlers are not used:
its catch-all for ``Exception`` re-raises to the server after answering, and these handlers need
the request's :class:`regard.api.steps.Exchange` (operation, caller) for the audit record.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from regard.accountability.guard import Guard
from regard.api.accountability import note_refusal, refuse_unauthenticated
from regard.api.refusals import RefusalLedger
from regard.api.rekognition.errors import (
    ClientDisconnected,
    InternalServerError,
    error_response,
    for_operation,
)
from regard.api.steps import Exchange
from regard.errors import RegardError

log = logging.getLogger("regard.api")

E = TypeVar("E", bound=Exception)
Handler = Callable[[E, Exchange], Awaitable[Response]]


class ErrorHandler:
    """Exceptions to responses, by class: :meth:`__call__` runs the handler registered for the
    nearest class in the exception's MRO."""

    def __init__(self, guard: Guard, refusals: RefusalLedger) -> None:
        self.guard = guard
        self.refusals = refusals
        self._handlers: dict[type[Exception], Handler[Any]] = {}
        self.register(RegardError, self.regard_error)
        self.register(ClientDisconnect, self.disconnect)
        self.register(Exception, self.unexpected)

    def register(self, cls: type[E], handler: Handler[E]) -> None:
        """Answer exceptions of ``cls`` (and subclasses without a handler of their own) with ``handler``."""
        self._handlers[cls] = handler

    async def __call__(self, exc: Exception, exchange: Exchange) -> Response:
        """The response for ``exc``, raised while ``exchange`` was being served."""
        for cls in type(exc).__mro__:
            handler = self._handlers.get(cast(type[Exception], cls))
            if handler is not None:
                return await handler(exc, exchange)
        raise exc  # unreachable while Exception has a handler

    async def regard_error(self, exc: RegardError, exchange: Exchange) -> Response:
        """``{"__type": code, "message": ...}`` with the error's status; audited unless it already
        is. A refusal before a key was verified goes through the per-source ledger
        (:mod:`regard.api.refusals`): recorded, counted in a later summary, or throttled (503)."""
        if not exc.audit_recorded and exchange.access_key_id is None:
            exchange.claimed_access_key_id = getattr(exc, "claimed_access_key_id", None)
            exc = await refuse_unauthenticated(
                self.guard, self.refusals, exchange.source, exchange.operation, exchange.request_id, exc
            )
        elif not exc.audit_recorded:
            await self._note(exchange, exc)
        error = for_operation(exc, exchange.operation)
        exchange.status = error.http_status
        exchange.error = error.code
        exchange.message = error.message
        return error_response(error, exchange.request_id)

    async def _note(self, exchange: Exchange, error: RegardError) -> None:
        """Record a refusal of a request the guard has not recorded (who, what, why)."""
        await run_in_threadpool(
            note_refusal,
            self.guard,
            exchange.operation,
            exchange.request_id,
            exchange.access_key_id,
            error,
            exchange.source,
        )

    async def disconnect(self, exc: ClientDisconnect, exchange: Exchange) -> Response:
        """A client gone mid-request (Starlette's ``ClientDisconnect``): status 499, no traceback."""
        return await self.regard_error(ClientDisconnected("Client disconnected"), exchange)

    async def unexpected(self, exc: Exception, exchange: Exchange) -> Response:
        """``InternalServerError`` (500) naming the request id; the traceback goes to the log only.
        A request the guard had not recorded gets an audit record of the failure here."""
        log.error(
            json.dumps(
                {
                    "event": "unhandled",
                    "request_id": exchange.request_id,
                    "error": type(exc).__name__,
                    "traceback": "".join(traceback.format_exception(exc)),
                }
            )
        )
        error = InternalServerError(f"Internal server error (request {exchange.request_id})")
        if not exchange.audited:
            await self._note(exchange, error)
        exchange.status = error.http_status
        exchange.error = error.code
        return error_response(error, exchange.request_id)
