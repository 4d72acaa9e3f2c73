"""HTTP statuses come from one map beside the errors: by error class for errors the host
raises (a variant with a borrowed wire name has its own), by wire type for a kernel's
errors, and from the stage a kernel's error arose at when that decides whose fault it is."""

from __future__ import annotations

import pytest

from jupyter_anvil import errors

#: the statuses each wire type had before the map moved beside the errors (tests of the
#: transports assert them)
EXPECTED = {
    "anvil.server.NoServerFunctionError": 404,
    "anvil.server.SerializationError": 400,
    "anvil.server.CookieError": 400,
    "anvil.server.BackgroundTaskError": 400,
    "anvil.server.BackgroundTaskNotFound": 404,
    "anvil.server.BackgroundTaskKilled": 409,
    "anvil.server.PermissionDenied": 403,
    "anvil.server.SessionExpiredError": 401,
    "anvil.server.QuotaExceededError": 429,
    "anvil.server.RuntimeUnavailableError": 503,
    "anvil.server.UplinkDisconnectedError": 503,
    "anvil.server.InvalidResponseError": 502,
    "anvil.server.ExecutionTerminatedError": 500,
    "anvil.server.InternalError": 500,
    "anvil.server.TimeoutError": 504,
    # anything else is the function's own error, or a fault of the app's code
    "anvil.server.StackOverflow": 500,
    "anvil.server.ServiceNotAdded": 500,
    "anvil.server.AnvilWrappedError": 500,
    "ValueError": 500,
    "some.module.CustomError": 500,
}


@pytest.mark.parametrize("wire_type", sorted(EXPECTED))
def test_each_wire_type_keeps_its_status(wire_type: str) -> None:
    error = {"type": wire_type, "message": "m", "trace": []}
    assert errors.http_status(error) == EXPECTED[wire_type]
    # raised here, or rebuilt from the far side's error: the same status
    assert errors.http_status(errors.from_wire(error)) == EXPECTED[wire_type]


def test_variants_have_their_own_status_under_the_same_wire_name() -> None:
    too_big = errors.RequestTooLarge("16 MiB at most")
    unsupported = errors.UnsupportedContentType("send JSON")
    assert (errors.http_status(too_big), errors.http_status(unsupported)) == (413, 415)
    for variant in (too_big, unsupported):
        assert isinstance(variant, errors.SerializationError)  # caught as one
        assert errors.to_wire(variant)["type"] == "anvil.server.SerializationError"  # sent as one
    # a far side's SerializationError is rebuilt as the plain class, never a variant
    rebuilt = errors.from_wire({"type": "anvil.server.SerializationError", "message": "m"})
    assert type(rebuilt) is errors.SerializationError
    assert errors.http_status(errors.SerializationError("bad request")) == 400


def test_a_kernel_error_encoding_the_response_is_the_functions_fault() -> None:
    error = errors.to_wire(errors.SerializationError("Cannot serialize return value from function."))
    assert errors.http_status(error) == 400  # the caller's arguments, as far as the map knows
    error[errors.STAGE] = errors.RESPONSE_STAGE
    assert errors.http_status(error) == 500
    # a status the kernel might still send is not obeyed: the kernel no longer picks one
    assert errors.http_status({"type": "anvil.server.SerializationError", "message": "m", "status": 200}) == 400
