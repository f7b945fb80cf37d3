"""SigV4 as boto3 sees it: orc's access keys authenticate, and a wrong
secret, a skewed clock, an unknown key on a secure server and a replayed
request with an altered body are refused with AWS's error codes; roles
limit what a key may do.

Run by tests/aws_door.rs with AWS_ENDPOINT_URL pointing at an orc server
and the keys in ADMIN_KEY/ADMIN_SECRET, OPERATOR_KEY/OPERATOR_SECRET and
READONLY_KEY/READONLY_SECRET."""

import datetime
import json
import os
import urllib.error
import urllib.request

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials

from expect import expect

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
REGION = "orc"


def client(service, key, secret):
    return boto3.client(
        service,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=REGION,
        endpoint_url=ENDPOINT,
    )


def keys(role):
    return os.environ[f"{role}_KEY"], os.environ[f"{role}_SECRET"]


admin_ecs = client("ecs", *keys("ADMIN"))
admin_iam = client("iam", *keys("ADMIN"))

# A valid key: ECS (awsJson1_1) and IAM (query) both answer.
assert "clusterArns" in admin_ecs.list_clusters()
users = {u["UserName"] for u in admin_iam.list_users()["Users"]}
assert {"ada", "olga", "rita"} <= users, users
created = admin_iam.create_user(
    UserName="boto-made", Tags=[{"Key": "orc:role", "Value": "readonly"}]
)
assert created["User"]["UserName"] == "boto-made", created
fresh = admin_iam.create_access_key(UserName="boto-made")["AccessKey"]
assert len(fresh["SecretAccessKey"]) == 40, fresh
listed = admin_iam.list_access_keys(UserName="boto-made")["AccessKeyMetadata"]
assert [k["AccessKeyId"] for k in listed] == [fresh["AccessKeyId"]], listed
assert "SecretAccessKey" not in json.dumps(listed, default=str)
expect(
    "EntityAlreadyExists",
    lambda: admin_iam.create_user(
        UserName="boto-made", Tags=[{"Key": "orc:role", "Value": "admin"}]
    ),
)
expect("DeleteConflict", lambda: admin_iam.delete_user(UserName="boto-made"))
# The fresh key works at once.
client("ecs", fresh["AccessKeyId"], fresh["SecretAccessKey"]).list_clusters()
admin_iam.delete_access_key(UserName="boto-made", AccessKeyId=fresh["AccessKeyId"])
admin_iam.delete_user(UserName="boto-made")
expect("NoSuchEntity", lambda: admin_iam.delete_user(UserName="boto-made"))

# A wrong secret.
admin_key, _ = keys("ADMIN")
expect(
    "InvalidSignatureException",
    lambda: client("ecs", admin_key, "not-the-secret").list_clusters(),
    "signature",
    status=403,
)
expect(
    "SignatureDoesNotMatch",
    lambda: client("iam", admin_key, "not-the-secret").list_users(),
    status=403,
)

# A clock more than 5 minutes off, either way.
real_now = botocore.auth.get_current_datetime
for skew in (datetime.timedelta(minutes=-6), datetime.timedelta(minutes=7)):
    botocore.auth.get_current_datetime = lambda skew=skew: real_now() + skew
    try:
        expect(
            "InvalidSignatureException",
            lambda: admin_ecs.list_clusters(),
            "Signature expired",
        )
        expect("SignatureDoesNotMatch", lambda: admin_iam.list_users(), "Signature expired")
    finally:
        botocore.auth.get_current_datetime = real_now
# Four minutes is within the limit.
botocore.auth.get_current_datetime = lambda: real_now() - datetime.timedelta(minutes=4)
try:
    admin_ecs.list_clusters()
finally:
    botocore.auth.get_current_datetime = real_now


# A request signed once, sent twice: unchanged it is served (as AWS does
# within the time limit), with an altered body it is refused.
def signed(body):
    request = botocore.awsrequest.AWSRequest(
        method="POST",
        url=ENDPOINT + "/",
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "AmazonEC2ContainerServiceV20141113.CreateCluster",
        },
    )
    credentials = botocore.credentials.Credentials(*keys("ADMIN"))
    botocore.auth.SigV4Auth(credentials, "ecs", REGION).add_auth(request)
    return request


def send(request, body):
    headers = {k: v for k, v in request.headers.items()}
    raw = urllib.request.Request(ENDPOINT + "/", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(raw, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


original = json.dumps({"clusterName": "replayed"}).encode()
request = signed(original)
assert send(request, original)[0] == 200
assert send(request, original)[0] == 200
altered = json.dumps({"clusterName": "hijacked"}).encode()
status, answer = send(request, altered)
assert status == 403 and answer["__type"] == "InvalidSignatureException", (status, answer)
print(f"altered body: {answer['__type']}: {answer['message']}")
clusters = json.dumps(admin_ecs.list_clusters())
assert "replayed" in clusters and "hijacked" not in clusters, clusters

# Roles: readonly reads but may not write; operator writes but may not
# touch users or keys.
readonly_ecs = client("ecs", *keys("READONLY"))
readonly_ecs.list_clusters()
readonly_ecs.describe_clusters(clusters=["default"])
expect(
    "AccessDeniedException",
    lambda: readonly_ecs.create_cluster(clusterName="nope"),
    "rita",
    "ecs:CreateCluster",
)
operator_ecs = client("ecs", *keys("OPERATOR"))
operator_ecs.create_cluster(clusterName="by-operator")
operator_iam = client("iam", *keys("OPERATOR"))
expect(
    "AccessDenied",
    lambda: operator_iam.create_user(
        UserName="sneaky", Tags=[{"Key": "orc:role", "Value": "admin"}]
    ),
    "iam:CreateUser",
)
expect("AccessDenied", lambda: operator_iam.list_users())

# A student limited to cluster lab1 sees and changes only lab1.
student = client("ecs", *keys("STUDENT"))
student.create_cluster(clusterName="lab1")
admin_ecs.create_cluster(clusterName="lab2")
arns = student.list_clusters()["clusterArns"]
assert [a.rsplit("/", 1)[1] for a in arns] == ["lab1"], arns
student.list_tasks(cluster="lab1")
expect("AccessDeniedException", lambda: student.list_tasks(cluster="lab2"), '"lab2"')
expect("AccessDeniedException", lambda: student.delete_cluster(cluster="lab2"), '"lab2"')
expect("AccessDeniedException", lambda: student.list_tasks(), '"default"')
users = {u["UserName"]: u for u in admin_iam.list_users()["Users"]}
assert {"Key": "orc:clusters", "Value": "lab1"} in users["stu"]["Tags"], users["stu"]

# ECR's login token follows the role: an operator's pushes, a readonly
# user's only pulls.
import base64


def upload_status(role):
    data = client("ecr", *keys(role)).get_authorization_token()["authorizationData"][0]
    basic = data["authorizationToken"]
    assert base64.b64decode(basic).startswith(b"AWS:")
    raw = urllib.request.Request(
        ENDPOINT + "/v2/orc-test/roles/blobs/uploads/",
        data=b"",
        headers={"Authorization": f"Basic {basic}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(raw, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


assert upload_status("OPERATOR") == 202
assert upload_status("READONLY") == 401

# Secrets Manager over awsJson1_1: values go in, never come out.
secrets = client("secretsmanager", *keys("OPERATOR"))
made = secrets.create_secret(Name="lab/boto", SecretString="boto-value-123")
assert made["Name"] == "lab/boto" and "secret:lab/boto" in made["ARN"], made
put = secrets.put_secret_value(SecretId=made["ARN"], SecretString="boto-value-456")
assert put["VersionId"] != made["VersionId"], put
described = client("secretsmanager", *keys("READONLY")).describe_secret(SecretId="lab/boto")
listed = secrets.list_secrets()["SecretList"]
assert "boto-value" not in json.dumps([described, listed], default=str)
expect(
    "AccessDeniedException",
    lambda: client("secretsmanager", *keys("READONLY")).put_secret_value(
        SecretId="lab/boto", SecretString="x"
    ),
)
expect("ResourceExistsException", lambda: secrets.create_secret(Name="lab/boto", SecretString="x"))
secrets.delete_secret(SecretId="lab/boto", ForceDeleteWithoutRecovery=True)
expect("ResourceNotFoundException", lambda: secrets.describe_secret(SecretId="lab/boto"))
print("ok")
