"""A consumer's hold on the messages it received, from the receive to the action that ends it.

- `held`: the messages a consumer holds and their visibility, extended while it works on them;
- `files`: what it holds and what it is processing, kept in the state dir for its successor;
- `settle`: every final action on a message (delete, back off, release, hand back) and the
  dead-letter send, with the message lifecycle;
- `handback`: a dead consumer's messages handed back by its successor;
- `crashes`: how often a message was in processing at a consumer's death, and the gate that
  processes a suspect alone.

No thread of its own: the consumer's threads (`workers.consumer`) drive it.
"""
