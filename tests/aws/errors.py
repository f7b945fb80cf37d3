"""Errors as boto3 sees them: each orc refusal arrives as a ClientError
with ECS's exception code (and its modelled exception class), status 400,
a message naming what was wrong, and a request id.

Run by tests/aws_door.rs with AWS_ENDPOINT_URL pointing at an orc server."""

import functools

import boto3

import expect as refusals

ecs = boto3.client("ecs")
# Every refusal here is a client error (400) of a class ECS models.
expect = functools.partial(refusals.expect, status=400, exceptions=ecs.exceptions)


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
