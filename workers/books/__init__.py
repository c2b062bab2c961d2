"""What a book is and where it goes, apart from how messages come and go.

- `decode`: a message body decoded and validated into a `Book` (or `InvalidBook`, with the
  dead-letter reason);
- `keys`: the key rule, where in its genre's bucket a book is filed;
- `store`: writing a book into S3 with conditional writes, never rewinding a file;
- `processor`: what should happen to one message: stored, dead-lettered, or retried.

S3 is reached through `workers.aws.s3.S3Objects`, a `Protocol`; SQS not at all.
"""
