"""SigV4 on a secure server (TLS, no client certificate): a valid key is
served, an unknown key and an unsigned request are refused with AWS's codes.

Run by tests/aws_door.rs with AWS_ENDPOINT_URL=https://..., AWS_CA_BUNDLE
set to the cluster's CA, and the admin's key in ADMIN_KEY/ADMIN_SECRET."""

import os

import boto3
import botocore.config
from botocore import UNSIGNED

from expect import expect


def client(service, key="x", secret="x", unsigned=False):
    config = botocore.config.Config(signature_version=UNSIGNED) if unsigned else None
    return boto3.client(
        service,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="orc",
        config=config,
    )


admin = (os.environ["ADMIN_KEY"], os.environ["ADMIN_SECRET"])
assert "clusterArns" in client("ecs", *admin).list_clusters()
assert client("iam", *admin).list_users()["Users"]
expect("UnrecognizedClientException", lambda: client("ecs", "AKIANOTAKEY000000000").list_clusters())
expect("InvalidClientTokenId", lambda: client("iam", "AKIANOTAKEY000000000").list_users())
expect("MissingAuthenticationTokenException", lambda: client("ecs", unsigned=True).list_clusters())
expect("InvalidSignatureException", lambda: client("ecs", admin[0], "wrong").list_clusters())
print("ok")
