"""The check every boto3 script here makes of a refusal: the call fails with
a ClientError carrying AWS's error code, a message naming what was wrong,
the HTTP status the protocol gives it and a request id.

Imported by the scripts next to it (`from expect import expect`); Python
puts a script's own folder first on its path."""

import botocore.exceptions


def expect(code, call, *words, status=None, exceptions=None):
    """Calls `call` and checks it is refused with `code`, a message holding
    every one of `words`, HTTP `status` (any when None) and a request id;
    with `exceptions` (a client's `.exceptions`), the error must also be an
    instance of the class boto3 models for `code`, when it models one."""
    try:
        call()
    except botocore.exceptions.ClientError as error:
        got = error.response["Error"]["Code"]
        message = error.response["Error"]["Message"]
        assert got == code, f"expected {code}, got {got}: {message}"
        if exceptions is not None:
            modelled = getattr(exceptions, code, None)
            if modelled is not None:
                assert isinstance(error, modelled), f"{type(error)} is not {modelled}"
        for word in words:
            assert word in message, f"{word!r} not in {message!r}"
        metadata = error.response["ResponseMetadata"]
        if status is not None:
            got_status = metadata["HTTPStatusCode"]
            assert got_status == status, f"expected {status}, got {got_status}"
        assert metadata.get("RequestId"), metadata
        print(f"{code}: {message}")
        return
    raise AssertionError(f"expected {code}, but the call succeeded")
