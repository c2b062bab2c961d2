"""`make bench`: Shelver side by side with the ways people usually drain a FIFO queue into S3.

- `bench.workload`: the books every contender drains, and the check that they were all filed, in
  order (the last version of every book wins);
- `bench.contenders`: A (the tutorial loop) and B (a competent hand-written boto3 consumer);
- `bench.measure`: what is measured, from outside the contenders (queue, /proc, HTTP);
- `bench.profile`: py-spy profiles summarised by function and by library;
- `bench.report`: the table, the JSON, the chart and the generated part of docs/benchmarks.md;
- `bench.run`: `python -m bench.run`, which runs all of it against its own LocalStack;
- `bench.footprint`: `python -m bench.footprint`, one Shelver's memory, disk and stop times, the
  figures behind deploy/kubernetes/deployment.yaml.
"""
