"""Seed 002's walk-through through boto3: register a task definition, run
a task, run a service of 2, stop one of its tasks and see it replaced, then
clean up. The image comes from $IMAGE (built locally by the test).

Run by tests/aws_door.rs with AWS_ENDPOINT_URL pointing at an orc server."""

import os
import time

import boto3

ecs = boto3.client("ecs")
IMAGE = os.environ["IMAGE"]


def until(what, check, timeout=90):
    """Polls `check` until it returns something true, for at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


definition = ecs.register_task_definition(
    family="seed002",
    containerDefinitions=[
        {
            "name": "web",
            "image": IMAGE,
            "memory": 32,
            "essential": True,
            "portMappings": [{"containerPort": 80}],
        }
    ],
)["taskDefinition"]
assert definition["revision"] >= 1, definition
print("registered", definition["taskDefinitionArn"])

# Run a task.
task = ecs.run_task(cluster="default", taskDefinition="seed002", count=1)["tasks"][0]
task_arn = task["taskArn"]
running = until(
    "the task to run",
    lambda: [
        t
        for t in ecs.describe_tasks(cluster="default", tasks=[task_arn])["tasks"]
        if t["lastStatus"] == "RUNNING"
    ],
)
assert running[0]["createdAt"].year >= 2024, running[0]["createdAt"]
print("task running", task_arn)

# Run a service of 2.
ecs.create_service(
    cluster="default", serviceName="web", taskDefinition="seed002", desiredCount=2
)


def service():
    return ecs.describe_services(cluster="default", services=["web"])["services"][0]


def service_tasks():
    return ecs.list_tasks(cluster="default", serviceName="web")["taskArns"]


until("the service to run 2 tasks", lambda: service()["runningCount"] == 2)
before = service_tasks()
assert len(before) == 2, before
print("service running", before)

# Stop one of its tasks: the service replaces it.
ecs.stop_task(cluster="default", task=before[0], reason="seed 002: see it replaced")
until(
    "the stopped task to be replaced",
    lambda: before[0] not in service_tasks()
    and len(service_tasks()) == 2
    and service()["runningCount"] == 2,
)
stopped = ecs.describe_tasks(cluster="default", tasks=[before[0]])["tasks"][0]
assert stopped["desiredStatus"] == "STOPPED", stopped
print("replaced", before[0], "->", service_tasks())

# Clean up.
ecs.update_service(cluster="default", service="web", desiredCount=0)
ecs.delete_service(cluster="default", service="web", force=True)
ecs.stop_task(cluster="default", task=task_arn)
print("ok")
