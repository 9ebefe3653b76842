"""Call sts.get_caller_identity in a loop for SECONDS through the
container provider (botocore refreshes from the agent as the credentials
near their expiry); print the calls, the failures and how many distinct
access keys were used (a refresh shows as a second key). Never prints a
credential. Usage: aws_loop.py STS_ENDPOINT SECONDS"""
import json
import sys
import time

import boto3

session = boto3.Session()
sts = session.client("sts", endpoint_url=sys.argv[1], region_name="us-east-1")
end = time.monotonic() + float(sys.argv[2])
calls, failures, keys, errors = 0, 0, set(), []
while time.monotonic() < end:
    calls += 1
    try:
        sts.get_caller_identity()
        keys.add(session.get_credentials().get_frozen_credentials().access_key)
    except Exception as e:  # noqa: BLE001 - counted, named by type
        failures += 1
        errors.append(type(e).__name__)
    time.sleep(0.2)
print(json.dumps({"calls": calls, "failures": failures, "keys": len(keys), "errors": errors[:5]}))
