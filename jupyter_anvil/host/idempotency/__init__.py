"""Calls sent with an idempotency key run exactly once (offline clients replay them).

store.py    the rows of anvil_idempotency and the encoding of an outcome
service.py  run_once: claim, run, keep the outcome; replays, waits, abandoned claims
keys.py     what a key may look like, as both transports check it
"""

from .keys import KEY_SHAPE, check_key
from .service import Attempt, Idempotency, IdempotencyLimits, Replied
from .store import Scope

__all__ = ["KEY_SHAPE", "Attempt", "Idempotency", "IdempotencyLimits", "Replied", "Scope", "check_key"]
