"""In an env process (or a shell) on a node: which credentials botocore
finds, and who STS (moto) says they are. Prints one JSON line; never a
secret (the access key id is not one). Usage: aws_identity.py STS_ENDPOINT"""
import json
import sys

import boto3

session = boto3.Session()
creds = session.get_credentials()
sts = session.client("sts", endpoint_url=sys.argv[1], region_name="us-east-1")
print(json.dumps({
    "method": creds.method if creds else None,
    "key_id": creds.access_key if creds else None,
    "arn": sts.get_caller_identity()["Arn"],
}))
