"""Errors as boto3 sees them: each orc refusal arrives as a ClientError
with ECS's exception code (and its modelled exception class), status 400,
a message naming what was wrong, and a request id.

Run by tests/aws_door.rs with AWS_ENDPOINT_URL pointing at an orc server."""

import boto3
import botocore.exceptions

ecs = boto3.client("ecs")


def expect(code, call, *words):
    try:
        call()
    except botocore.exceptions.ClientError as error:
        got = error.response["Error"]["Code"]
        message = error.response["Error"]["Message"]
        assert got == code, f"expected {code}, got {got}: {message}"
        modelled = getattr(ecs.exceptions, code, None)
        if modelled is not None:
            assert isinstance(error, modelled), f"{type(error)} is not {modelled}"
        for word in words:
            assert word in message, f"{word!r} not in {message!r}"
        metadata = error.response["ResponseMetadata"]
        assert metadata["HTTPStatusCode"] == 400, metadata
        assert metadata.get("RequestId"), metadata
        print(f"{code}: {message}")
        return
    raise AssertionError(f"expected {code}, but the call succeeded")


expect("ClusterNotFoundException", lambda: ecs.list_tasks(cluster="nope"), '"nope"')
expect(
    "ServiceNotFoundException",
    lambda: ecs.update_service(cluster="default", service="ghost", desiredCount=1),
    '"ghost"',
)
expect(
    "InvalidParameterException",
    lambda: ecs.register_task_definition(
        family="bad",
        containerDefinitions=[{"name": "c", "image": "busybox", "memory": 1}],
    ),
    "containerDefinitions[0].memory",
)
expect(
    "UnknownOperationException",
    lambda: ecs.create_task_set(cluster="default", service="s", taskDefinition="t"),
    "CreateTaskSet",
)
print("ok")
