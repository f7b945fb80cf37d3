"""ELBv2 over the query protocol through boto3: a load balancer and a
target group with typed settings (integers, booleans, a nested matcher, a
list of tags) make the round trip, and ELB's errors arrive as ClientErrors
with ELB's codes (DuplicateLoadBalancerName, LoadBalancerNotFound,
TargetGroupNotFound).

Run by tests/aws_door.rs with AWS_ENDPOINT_URL pointing at an orc server."""

import botocore.exceptions
import boto3

elbv2 = boto3.client("elbv2")

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


def expect(code, call, *words):
    try:
        call()
    except botocore.exceptions.ClientError as error:
        got = error.response["Error"]["Code"]
        message = error.response["Error"]["Message"]
        assert got == code, f"expected {code}, got {got}: {message}"
        for word in words:
            assert word in message, f"{word!r} not in {message!r}"
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert error.response["ResponseMetadata"].get("RequestId")
        print(f"{code}: {message}")
        return
    raise AssertionError(f"expected {code}, but the call succeeded")


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
