"""The ECS verbs the walk-throughs do not use, through boto3: clusters,
task definitions, container instances and service listing. Each answer is
checked for the shape boto3 parsed.

Run by tests/aws_door.rs with AWS_ENDPOINT_URL pointing at an orc server
that has one container instance (a fake agent) in `default`."""

import boto3

ecs = boto3.client("ecs")

cluster = ecs.create_cluster(clusterName="lab")["cluster"]
assert cluster["status"] == "ACTIVE", cluster
clusters = ecs.describe_clusters(clusters=["lab"])["clusters"]
assert [c["clusterName"] for c in clusters] == ["lab"], clusters
assert cluster["clusterArn"] in ecs.list_clusters()["clusterArns"]
assert ecs.delete_cluster(cluster="lab")["cluster"]["status"] == "INACTIVE"
assert cluster["clusterArn"] not in ecs.list_clusters()["clusterArns"]

ecs.register_task_definition(
    family="verbs", containerDefinitions=[{"name": "c", "image": "x/y:1", "memory": 8}]
)
definition = ecs.describe_task_definition(taskDefinition="verbs")["taskDefinition"]
assert definition["revision"] == 1, definition
arns = ecs.list_task_definitions(familyPrefix="verbs")["taskDefinitionArns"]
assert arns == [definition["taskDefinitionArn"]], arns
ecs.deregister_task_definition(taskDefinition="verbs:1")
deleted = ecs.delete_task_definitions(taskDefinitions=["verbs:1"])
assert deleted["taskDefinitions"][0]["status"] == "DELETE_IN_PROGRESS", deleted

instances = ecs.list_container_instances(cluster="default")["containerInstanceArns"]
assert len(instances) == 1, instances
described = ecs.describe_container_instances(cluster="default", containerInstances=instances)
assert described["containerInstances"][0]["status"] == "ACTIVE", described
drained = ecs.update_container_instances_state(
    cluster="default", containerInstances=instances, status="DRAINING"
)
assert drained["containerInstances"][0]["status"] == "DRAINING", drained

ecs.register_task_definition(
    family="idle", containerDefinitions=[{"name": "c", "image": "x/y:1", "memory": 8}]
)
service = ecs.create_service(serviceName="idle", taskDefinition="idle", desiredCount=0)
assert ecs.list_services(cluster="default")["serviceArns"] == [
    service["service"]["serviceArn"]
]
print("ok")
