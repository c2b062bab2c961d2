"""The AWS plumbing, a subsystem a reader of the rest can skip: nothing in it knows what a book
is.

- `clients`: a consumer's boto3 session and clients (`S3_CLIENT`, `SQS_CLIENT`);
- `sqs`: the SQS transport (receive, delete, visibility changes, dead letters, queue lookup) and
  `Message`;
- `s3`: the two S3 calls a book's write needs, on boto3 (`Boto3Objects`);
- `crt`, `s3crt`, `sqscrt`: the same calls on AWS's Common Runtime;
- `preflight`: what the settings name, asked of AWS once at start-up (and by `shelver check`);
- `errors`: `AWS_ERRORS`, the one tuple of what a failed AWS call raises, and its log fields.
"""

from workers.aws.errors import AWS_ERRORS

__all__ = ["AWS_ERRORS"]
