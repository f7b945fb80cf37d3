"""ELBv2 over the query protocol through boto3: a load balancer and a
target group with typed settings (integers, booleans, a nested matcher, a
list of tags) make the round trip, and ELB's errors arrive as ClientErrors
with ELB's codes (DuplicateLoadBalancerName, LoadBalancerNotFound,
TargetGroupNotFound).

Run by tests/aws_door.rs with AWS_ENDPOINT_URL pointing at an orc server."""

import functools

import boto3

import expect as refusals

elbv2 = boto3.client("elbv2")
# Every ELB error here is a client error: 400.
expect = functools.partial(refusals.expect, status=400)

lb = elbv2.create_load_balancer(
    Name="lab", Subnets=["a", "b"], Tags=[{"Key": "course", "Value": "ecs 101"}]
)["LoadBalancers"][0]
assert lb["LoadBalancerName"] == "lab", lb
assert lb["CreatedTime"].year >= 2024, lb["CreatedTime"]
print("created", lb["LoadBalancerArn"])

tg = elbv2.create_target_group(
    Name="web",
    Protocol="HTTP",
    Port=80,
    VpcId="vpc-orc",
    HealthCheckEnabled=True,
    HealthCheckPath="/",
    HealthCheckIntervalSeconds=10,
    HealthyThresholdCount=3,
    Matcher={"HttpCode": "200-299"},
)["TargetGroups"][0]
assert tg["Port"] == 80 and tg["HealthCheckIntervalSeconds"] == 10, tg
assert tg["HealthyThresholdCount"] == 3 and tg["HealthCheckEnabled"] is True, tg
assert tg["Matcher"] == {"HttpCode": "200-299"}, tg

described = elbv2.describe_target_groups(Names=["web"])["TargetGroups"]
assert [g["TargetGroupArn"] for g in described] == [tg["TargetGroupArn"]], described
listed = elbv2.describe_load_balancers()["LoadBalancers"]
assert [b["LoadBalancerArn"] for b in listed] == [lb["LoadBalancerArn"]], listed


expect(
    "DuplicateLoadBalancerName",
    lambda: elbv2.create_load_balancer(Name="lab", Type="network"),
    '"lab"',
)
expect(
    "LoadBalancerNotFound",
    lambda: elbv2.describe_load_balancers(Names=["nope"]),
    '"nope"',
)
missing = tg["TargetGroupArn"].rsplit("/", 1)[0] + "/0000000000000000"
expect(
    "TargetGroupNotFound", lambda: elbv2.describe_target_groups(TargetGroupArns=[missing])
)
expect("InvalidAction", lambda: elbv2.describe_ssl_policies(), "DescribeSSLPolicies")

elbv2.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
assert elbv2.describe_load_balancers()["LoadBalancers"] == []
print("ok")
