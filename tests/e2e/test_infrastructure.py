"""What `osls deploy --stage local` of serverless.yml created in LocalStack: the consumer
policy, the key and the queues' limits are deployed, not only declared (the buckets'
protections LocalStack does not deploy: see below)."""

from __future__ import annotations

import uuid
from typing import Any

from tests.support.aws import DEPLOYED_DLQ, DEPLOYED_QUEUE, Aws


def test_the_consumer_policy_is_deployed_on_the_stacks_resources(aws: Aws) -> None:
    deployed = aws.stack_outputs()
    iam = aws.client("iam")
    policy = iam.get_policy(PolicyArn=deployed["ConsumerPolicyArn"])["Policy"]
    document = iam.get_policy_version(PolicyArn=policy["Arn"],
                                      VersionId=policy["DefaultVersionId"])["PolicyVersion"]
    resources = {resource for statement in document["Document"]["Statement"]
                 for resource in ([statement["Resource"]] if isinstance(statement["Resource"], str)
                                  else statement["Resource"])}
    assert resources == {deployed["InputQueueArn"], deployed["InputQueueDLQArn"],
                         f"arn:aws:s3:::{deployed['ScifiBucketName']}/*",
                         f"arn:aws:s3:::{deployed['RomanceBucketName']}/*",
                         deployed["KeyArn"],
                         f"arn:aws:s3:::{deployed['PayloadBucketName']}",
                         f"arn:aws:s3:::{deployed['PayloadBucketName']}/*"}


def test_the_key_is_deployed_but_localstack_leaves_the_buckets_at_its_defaults(aws: Aws) -> None:
    """LocalStack 2026.3.0's CloudFormation makes an AWS::S3::Bucket without its
    BucketEncryption or PublicAccessBlockConfiguration (its provider applies versioning, CORS,
    object lock, tags, website and notifications only): the deployed buckets are encrypted and
    private only as any bucket it makes is. What serverless.yml declares for them (SSE-KMS with
    the stack's key, all public access blocked) is checked on the template, in
    tests/deploy/test_iam.py; e2e tests that need SSE-KMS ask for it in the request."""
    deployed = aws.stack_outputs()
    key = aws.client("kms").describe_key(KeyId=deployed["KeyArn"])["KeyMetadata"]
    assert key["KeyState"] == "Enabled"

    def protections(bucket: str) -> tuple[Any, Any]:
        return (aws.s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"],
                aws.s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"])

    plain = aws.create_bucket(f"plain-{uuid.uuid4().hex[:8]}")
    try:
        by_default = protections(plain)
    finally:
        aws.delete_bucket(plain)
    assert by_default[1]["Rules"] == [{"ApplyServerSideEncryptionByDefault": {
        "SSEAlgorithm": "AES256"}, "BucketKeyEnabled": False}]
    for bucket in ("scifi", "romance", "payloads"):
        assert protections(bucket) == by_default


def test_both_queues_take_1_mib_messages(aws: Aws) -> None:
    for queue in (DEPLOYED_QUEUE, DEPLOYED_DLQ):
        assert aws.attributes(aws.queue_url(queue))["MaximumMessageSize"] == "1048576"
