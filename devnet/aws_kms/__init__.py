"""Local AWS KMS (+ Secrets Manager) for tests: moto server mode, extended to sign like AWS.

Usage::

    from devnet.aws_kms import run_aws_kms

    with run_aws_kms(host="127.0.0.1", port=0) as srv:
        kms = boto3.client("kms", endpoint_url=srv.endpoint_url, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        srv.set_faults({"Sign": {"error": "ThrottlingException", "count": 2}})

Importing this package does not import or patch moto; the patches are applied only in
the server subprocess (:mod:`devnet.aws_kms.server`).
"""

from .faults import AWS_ERRORS, CONTROL_PATH
from .launcher import AwsKmsServer, run_aws_kms

__all__ = ["AWS_ERRORS", "CONTROL_PATH", "AwsKmsServer", "run_aws_kms"]
