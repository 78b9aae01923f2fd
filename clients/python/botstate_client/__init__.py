"""botstate's Python client: `Client` and `AsyncClient`, typed results, one exception per answer."""

from ._async import AsyncClient, AsyncStateHandle
from ._sync import Client, StateHandle
from ._version import __version__
from .errors import (
    BadRequest,
    BotNotFound,
    BotStateError,
    Gone,
    IdempotencyConflict,
    InvalidKey,
    MissingKey,
    NetworkError,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    RateLimited,
    RequestInProgress,
    ServerError,
    Unavailable,
    UnexpectedAnswer,
    VersionConflict,
    WriteFailed,
)
from .models import Change, ItemResult, StateRow, StateUpdate, Summary, WriteResult

__all__ = [
    "AsyncClient",
    "AsyncStateHandle",
    "BadRequest",
    "BotNotFound",
    "BotStateError",
    "Change",
    "Client",
    "Gone",
    "IdempotencyConflict",
    "InvalidKey",
    "ItemResult",
    "MissingKey",
    "NetworkError",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "RateLimited",
    "RequestInProgress",
    "ServerError",
    "StateHandle",
    "StateRow",
    "StateUpdate",
    "Summary",
    "Unavailable",
    "UnexpectedAnswer",
    "VersionConflict",
    "WriteFailed",
    "WriteResult",
    "__version__",
]
