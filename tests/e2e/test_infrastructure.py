"""What `osls deploy --stage local` of serverless.yml created in LocalStack: the consumer
policy and the genre buckets' protections are deployed, not only declared."""

from __future__ import annotations

from typing import Any

import boto3

from tests.support.aws import Aws

STACK = "shelver-local"


def client(aws_env: dict[str, str], service: str) -> Any:
    return boto3.client(service, endpoint_url=aws_env["AWS_ENDPOINT_URL"],
                        region_name=aws_env["AWS_REGION"],
                        aws_access_key_id=aws_env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=aws_env["AWS_SECRET_ACCESS_KEY"])


def test_the_consumer_policy_is_deployed_on_the_stacks_resources(
        aws: Aws, aws_env: dict[str, str]) -> None:
    stack = client(aws_env, "cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    iam = client(aws_env, "iam")
    policy = iam.get_policy(PolicyArn=outputs["ConsumerPolicyArn"])["Policy"]
    document = iam.get_policy_version(PolicyArn=policy["Arn"],
                                      VersionId=policy["DefaultVersionId"])["PolicyVersion"]
    resources = {resource for statement in document["Document"]["Statement"]
                 for resource in ([statement["Resource"]] if isinstance(statement["Resource"], str)
                                  else statement["Resource"])}
    assert resources == {outputs["InputQueueArn"], outputs["InputQueueDLQArn"],
                         f"arn:aws:s3:::{outputs['ScifiBucketName']}/*",
                         f"arn:aws:s3:::{outputs['RomanceBucketName']}/*"}


def test_the_genre_buckets_are_private_and_encrypted(aws: Aws) -> None:
    for bucket in ("scifi", "romance"):
        block = aws.s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert block == {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                         "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
        rules = aws.s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        assert rules["Rules"][0]["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
