#!/usr/bin/env bash
# Seed 004's lab through the aws CLI, as a student would type it against
# orc (AWS_ENDPOINT_URL, keys and region set; $IMAGE is a local image):
# the cluster, a task definition, a service of 2, wait until it is stable,
# stop a task and see it replaced, scale to 4, and clean up.
set -euo pipefail

aws ecs create-cluster --cluster-name default

cat > web.json <<JSON
{"family": "lab",
 "containerDefinitions": [{"name": "web", "image": "$IMAGE", "memory": 32,
                           "essential": true,
                           "portMappings": [{"containerPort": 80}]}]}
JSON
aws ecs register-task-definition --cli-input-json file://web.json

aws ecs create-service --cluster default --service-name lab \
    --task-definition lab --desired-count 2
aws ecs wait services-stable --cluster default --services lab
aws ecs describe-services --cluster default --services lab \
    --query 'services[0].[runningCount,desiredCount]' --output text

# Stop one task: the service starts another in its place.
TASK=$(aws ecs list-tasks --cluster default --service-name lab --query 'taskArns[0]' --output text)
aws ecs stop-task --cluster default --task "$TASK" --reason "seed 004: see it replaced"
for attempt in $(seq 1 240); do
    TASKS=$(aws ecs list-tasks --cluster default --service-name lab --query 'taskArns' --output text)
    RUNNING=$(aws ecs describe-services --cluster default --services lab \
        --query 'services[0].runningCount' --output text)
    if [[ "$TASKS" != *"$TASK"* && "$RUNNING" == 2 ]]; then break; fi
    if [[ $attempt == 240 ]]; then echo "the stopped task was not replaced" >&2; exit 1; fi
    sleep 0.5
done
echo "replaced $TASK"

# Scale up to 4 tasks.
aws ecs update-service --cluster default --service lab --desired-count 4
aws ecs wait services-stable --cluster default --services lab
COUNT=$(aws ecs list-tasks --cluster default --service-name lab --query 'length(taskArns)' --output text)
[[ "$COUNT" == 4 ]] || { echo "expected 4 tasks, got $COUNT" >&2; exit 1; }
echo "scaled to $COUNT"

# Clean it all up.
aws ecs update-service --cluster default --service lab --desired-count 0
aws ecs delete-service --cluster default --service lab --force
aws ecs deregister-task-definition --task-definition lab:1
echo ok
