"""The AWS door's overhead against Orc.Call, for the same actions, in one
run (bench/aws-door.sh starts orc and runs this).

Four ways to ask orc the same two questions (DescribeServices, ListTasks),
each CALLS times in a row on one kept-alive connection:
  * boto3                  what an SDK user sees (signing and boto3's own
                           parsing included)
  * door, raw HTTP         the same awsJson1_1 request boto3 sends, from
                           http.client: the door's own cost
  * Orc.Call, grpcio       the same action through orc's gRPC API
Prints requests/s, p50 and p99 per way and action, and the door's latency
over Orc.Call's (the issue's target: under 10% more).
"""
import http.client
import json
import os
import statistics
import sys
import tempfile
import time

import boto3
import grpc
from grpc_tools import protoc

ENDPOINT, PROTO_DIR, CALLS = sys.argv[1], sys.argv[2], int(sys.argv[3])
CLUSTER, SERVICE = "default", "bench"
ACTIONS = {
    "DescribeServices": {"cluster": CLUSTER, "services": [SERVICE]},
    "ListTasks": {"cluster": CLUSTER},
}

stubs = tempfile.mkdtemp()
assert protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={stubs}",
                    f"--grpc_python_out={stubs}", "orc.proto"]) == 0
sys.path.insert(0, stubs)
import orc_pb2  # noqa: E402
import orc_pb2_grpc  # noqa: E402


def timed(call):
    for _ in range(max(CALLS // 20, 10)):  # warm-up
        call()
    samples = []
    start = time.perf_counter()
    for _ in range(CALLS):
        t = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    samples.sort()
    return {
        "rps": CALLS / total,
        "p50": statistics.median(samples) * 1000,
        "p99": samples[int(len(samples) * 0.99) - 1] * 1000,
    }


sdk = boto3.client("ecs", endpoint_url=f"http://{ENDPOINT}", region_name="orc",
                   aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "orc"),
                   aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "orc"))
boto_calls = {
    "DescribeServices": lambda: sdk.describe_services(**ACTIONS["DescribeServices"]),
    "ListTasks": lambda: sdk.list_tasks(**ACTIONS["ListTasks"]),
}

host, port = ENDPOINT.rsplit(":", 1)
door = http.client.HTTPConnection(host, int(port))


def raw(action):
    body = json.dumps(ACTIONS[action])

    def call():
        door.request("POST", "/", body=body, headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"AmazonEC2ContainerServiceV20141113.{action}",
        })
        answer = door.getresponse()
        data = answer.read()
        assert answer.status == 200, (answer.status, data)
    return call


channel = grpc.insecure_channel(ENDPOINT)
orc = orc_pb2_grpc.OrcStub(channel)


def grpc_call(action):
    request = orc_pb2.ActionRequest(action=action, body_json=json.dumps(ACTIONS[action]))
    return lambda: orc.Call(request)


rows = []
for action in ACTIONS:
    results = {
        "boto3": timed(boto_calls[action]),
        "door, raw HTTP": timed(raw(action)),
        "Orc.Call, grpcio": timed(grpc_call(action)),
    }
    for way, r in results.items():
        rows.append((action, way, r))
    door_over = results["door, raw HTTP"]["p50"] / results["Orc.Call, grpcio"]["p50"] - 1
    boto_over = results["boto3"]["p50"] / results["Orc.Call, grpcio"]["p50"] - 1
    rows.append((action, "door p50 vs Orc.Call", f"{door_over * 100:+.0f}%  (boto3: {boto_over * 100:+.0f}%)"))

print(f"{CALLS} sequential calls per way and action")
print(f"{'action':<18} {'way':<22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
for action, way, r in rows:
    if isinstance(r, str):
        print(f"{action:<18} {way:<22} {r}")
    else:
        print(f"{action:<18} {way:<22} {r['rps']:>8.0f} {r['p50']:>8.2f} {r['p99']:>8.2f}")
