"""One consumer process and its threads.

- `process`: what the pool spawns (`ConsumerSpec`, `consumer_main`);
- `loop`: the `Consumer`, its start-up and its receive loop, cut into named steps;
- `batches`: received batches split by message group onto the processing threads, each group
  run in order, the last one settling the batch;
- `keeper`: the thread that extends held messages' visibility and watches the parent;
- `signals`, `breaker`, `queue_depth`: the main loop's flags, its pause while whole batches
  fail, and the queue depths it samples;
- `internal_errors`: the one way a consumer thread ends the process on a bug.
"""
