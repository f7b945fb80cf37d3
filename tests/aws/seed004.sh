#!/usr/bin/env bash
# Seed 004's lab through the aws CLI, as a student would type it against
# orc (AWS_ENDPOINT_URL, keys and region set; $IMAGE is a local image whose
# page says "hello from <container hostname>"; $LB_PORT is a free port):
# the cluster, a task definition, a load balancer with a target group and a
# listener, a service of 3 behind it, a check that all three answer in
# turn, stop a task and see it replaced, scale to 4 and see four names, and
# clean up.
set -euo pipefail

aws ecs create-cluster --cluster-name default

cat > web.json <<JSON
{"family": "lab",
 "containerDefinitions": [{"name": "web", "image": "$IMAGE", "memory": 32,
                           "essential": true, "stopTimeout": 2,
                           "portMappings": [{"containerPort": 80}]}]}
JSON
aws ecs register-task-definition --cli-input-json file://web.json

# The load balancer, its target group (checks every 5 s, the least botocore
# allows) and a listener.
LB_ARN=$(aws elbv2 create-load-balancer --name lab-lb \
    --query 'LoadBalancers[0].LoadBalancerArn' --output text)
DNS=$(aws elbv2 describe-load-balancers --load-balancer-arns "$LB_ARN" \
    --query 'LoadBalancers[0].DNSName' --output text)
TG_ARN=$(aws elbv2 create-target-group --name lab-tg --protocol HTTP --port 80 \
    --target-type instance --health-check-path / --health-check-interval-seconds 5 \
    --health-check-timeout-seconds 2 --healthy-threshold-count 2 \
    --unhealthy-threshold-count 2 --matcher HttpCode=200-399 \
    --query 'TargetGroups[0].TargetGroupArn' --output text)
aws elbv2 modify-target-group-attributes --target-group-arn "$TG_ARN" \
    --attributes Key=deregistration_delay.timeout_seconds,Value=2
aws elbv2 modify-load-balancer-attributes --load-balancer-arn "$LB_ARN" \
    --attributes Key=idle_timeout.timeout_seconds,Value=120
IDLE=$(aws elbv2 describe-load-balancer-attributes --load-balancer-arn "$LB_ARN" \
    --query "Attributes[?Key=='idle_timeout.timeout_seconds'].Value" --output text)
[[ "$IDLE" == 120 ]] || { echo "expected idle_timeout.timeout_seconds 120, got $IDLE" >&2; exit 1; }
LISTENER_ARN=$(aws elbv2 create-listener --load-balancer-arn "$LB_ARN" \
    --protocol HTTP --port "$LB_PORT" \
    --default-actions Type=forward,TargetGroupArn="$TG_ARN" \
    --query 'Listeners[0].ListenerArn' --output text)

aws ecs create-service --cluster default --service-name lab \
    --task-definition lab --desired-count 3 \
    --load-balancers targetGroupArn="$TG_ARN",containerName=web,containerPort=80
aws ecs wait services-stable --cluster default --services lab
aws ecs describe-services --cluster default --services lab \
    --query 'services[0].[runningCount,desiredCount]' --output text

# Waits until the target group has $1 healthy targets and nothing else.
wait_healthy() {
    for attempt in $(seq 1 240); do
        STATES=$(aws elbv2 describe-target-health --target-group-arn "$TG_ARN" \
            --query 'TargetHealthDescriptions[].TargetHealth.State' --output text)
        HEALTHY=$(echo "$STATES" | tr '\t' '\n' | grep -c '^healthy$' || true)
        OTHERS=$(echo "$STATES" | tr '\t' '\n' | grep -v '^healthy$' | grep -c . || true)
        if [[ "$HEALTHY" == "$1" && "$OTHERS" == 0 ]]; then return 0; fi
        sleep 0.5
    done
    echo "expected $1 healthy targets, got: $STATES" >&2
    exit 1
}

# Sends $1 requests through the listener; prints "COUNT NAME" per name.
names() {
    for i in $(seq 1 "$1"); do
        curl -sf --max-time 10 "http://$DNS:$LB_PORT/" || echo "request failed"
    done | sort | uniq -c | sed 's/^ *//'
}

wait_healthy 3
SEEN=$(names 30)
echo "$SEEN"
[[ $(echo "$SEEN" | wc -l) == 3 ]] || { echo "expected 3 names, saw: $SEEN" >&2; exit 1; }
while read -r COUNT NAME; do
    [[ "$COUNT" == 10 ]] || { echo "expected each name 10 times, saw: $SEEN" >&2; exit 1; }
done <<< "$SEEN"
echo "balanced over 3"

# Stop one task: it drains, and the service starts another in its place.
TASK=$(aws ecs list-tasks --cluster default --service-name lab --query 'taskArns[0]' --output text)
aws ecs stop-task --cluster default --task "$TASK" --reason "seed 004: see it replaced"
for attempt in $(seq 1 240); do
    TASKS=$(aws ecs list-tasks --cluster default --service-name lab --query 'taskArns' --output text)
    RUNNING=$(aws ecs describe-services --cluster default --services lab \
        --query 'services[0].runningCount' --output text)
    if [[ "$TASKS" != *"$TASK"* && "$RUNNING" == 3 ]]; then break; fi
    if [[ $attempt == 240 ]]; then echo "the stopped task was not replaced" >&2; exit 1; fi
    sleep 0.5
done
wait_healthy 3
echo "replaced $TASK"

# Scale up to 4 tasks: four names answer.
aws ecs update-service --cluster default --service lab --desired-count 4
aws ecs wait services-stable --cluster default --services lab
COUNT=$(aws ecs list-tasks --cluster default --service-name lab --query 'length(taskArns)' --output text)
[[ "$COUNT" == 4 ]] || { echo "expected 4 tasks, got $COUNT" >&2; exit 1; }
wait_healthy 4
SEEN=$(names 40)
[[ $(echo "$SEEN" | grep -c 'hello from') == 4 ]] || { echo "expected 4 names, saw: $SEEN" >&2; exit 1; }
echo "scaled to $COUNT"

# Clean it all up.
aws ecs update-service --cluster default --service lab --desired-count 0
aws ecs delete-service --cluster default --service lab --force
aws ecs wait services-inactive --cluster default --services lab
aws elbv2 delete-listener --listener-arn "$LISTENER_ARN"
aws elbv2 delete-load-balancer --load-balancer-arn "$LB_ARN"
aws elbv2 delete-target-group --target-group-arn "$TG_ARN"
aws ecs deregister-task-definition --task-definition lab:1
echo ok
