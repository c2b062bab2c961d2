"""Books in, files out: the mission, against LocalStack and a real gunicorn."""

from __future__ import annotations

import orjson

from tests.e2e.conftest import ShelverFactory
from tests.support.aws import Aws, Stack, book, wait_until
from tests.support.shelver import Shelver
from workers.aws.sqs import DETAIL_ATTRIBUTE, ORIGINAL_ID_ATTRIBUTE, REASON_ATTRIBUTE
from workers.books.keys import object_key


def deployed_stack(aws: Aws) -> Stack:
    return Stack("InputQueue.fifo", aws.queue_url("InputQueue.fifo"),
                 aws.queue_url("InputQueueDLQ.fifo"), {"scifi": "scifi", "romance": "romance"})


def test_200_books_over_20_groups_are_filed_verbatim(aws: Aws, shelver_factory: ShelverFactory):
    stack = deployed_stack(aws)  # the resources exactly as serverless.yml deployed them
    sent = {}
    items = []
    for n in range(200):
        genre = ("scifi", "romance")[n % 2]
        body = orjson.dumps(book(f"e2e-{n}", f"Flow Book {n} ✨", genre, pages=n))
        sent[(genre, object_key(f"Flow Book {n} ✨"))] = body
        items.append((f"g{n % 20}", body))
    shelver = shelver_factory(None)  # defaults: INPUT_QUEUE=InputQueue.fifo, scifi/romance
    shelver.wait_healthy()
    aws.send(stack.input_url, items)

    wait_until(lambda: len(aws.objects(stack)) >= 200, 90, 1.0, "200 files")
    wait_until(lambda: aws.drained(stack.input_url), 30, 0.5, "the input queue to drain")
    assert aws.objects(stack) == sent
    body, head = aws.get("scifi", object_key("Flow Book 0 ✨"))
    assert head["ContentType"] == "application/json"
    assert head["Metadata"]["book-id"] == "e2e-0"
    assert head["Metadata"]["message-id"]

    metrics = shelver.metrics()
    assert metrics['shelver_books_stored_total{genre="scifi"}'] == 100
    assert metrics['shelver_books_stored_total{genre="romance"}'] == 100
    assert metrics["shelver_messages_received_total"] == 200
    health = shelver.get("/health")
    assert health.status == 200
    assert health.body["totals"]["stored"] == 200
    assert health.body["totals"]["dead_lettered"] == 0


def test_each_file_holds_the_last_version_of_its_book(aws: Aws, stack: Stack,
                                                      shelver_factory: ShelverFactory):
    items = [(f"versions-{g}", book(f"v-{g}", f"Versioned {g}", "scifi", version=v))
             for v in range(20) for g in range(5)]
    shelver_factory(stack).wait_healthy()
    aws.send(stack.input_url, items)

    wait_until(lambda: aws.drained(stack.input_url), 90, 0.5, "the input queue to drain")
    files = aws.objects(stack)
    assert len(files) == 5
    for g in range(5):
        assert orjson.loads(files[("scifi", f"Versioned {g}.json")])["version"] == 19


def test_two_books_with_one_title_are_both_kept(aws: Aws, stack: Stack,
                                                shelver_factory: ShelverFactory):
    first = book("b-1", "Same Title", "romance", author="Ann")
    second = book("b-2", "Same Title", "romance", author="Bob")
    shelver_factory(stack).wait_healthy()
    aws.send(stack.input_url, [("one", first), ("one", second)])

    wait_until(lambda: aws.drained(stack.input_url), 30, 0.5, "the input queue to drain")
    files = aws.objects(stack)
    assert files == {
        ("romance", "Same Title.json"): orjson.dumps(first),
        ("romance", "Same Title~b-2.json"): orjson.dumps(second),
    }


def test_poison_messages_go_to_the_dlq_and_do_not_block_their_group(
        aws: Aws, stack: Stack, shelver_factory: ShelverFactory):
    poison = [b"this is not json", orjson.dumps({"id": "p2", "genre": "scifi"}),
              orjson.dumps(book("p3", "Horror Book", "horror"))]
    items: list[tuple[str, bytes | dict[str, str]]] = []
    for n, bad in enumerate(poison):
        items.append((f"pg{n}", bad))
        items.append((f"pg{n}", book(f"ok-{n}", f"Behind Poison {n}", "scifi")))
    shelver = shelver_factory(stack)
    shelver.wait_healthy()
    ids = aws.send(stack.input_url, items)

    wait_until(lambda: aws.counts(stack.dlq_url)[0] == 3, 10, 0.2, "3 messages in the DLQ")
    dead = aws.receive_all(stack.dlq_url, wait=30, expect=3)
    reasons = {m["MessageAttributes"][ORIGINAL_ID_ATTRIBUTE]["StringValue"]:
               (m["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"], m["Body"])
               for m in dead}
    assert reasons == {
        ids[0]: ("not_json", "this is not json"),
        ids[2]: ("missing_field", poison[1].decode()),
        ids[4]: ("unknown_genre", poison[2].decode()),
    }
    assert {m["Attributes"]["MessageGroupId"] for m in dead} == {"pg0", "pg1", "pg2"}
    wait_until(lambda: aws.drained(stack.input_url), 30, 0.5, "the input queue to drain")
    assert sorted(key for _, key in aws.objects(stack)) == [
        f"Behind Poison {n}.json" for n in range(3)]
    metrics = shelver.metrics()
    assert metrics['shelver_messages_dead_lettered_total{reason="not_json"}'] == 1
    assert metrics['shelver_messages_dead_lettered_total{reason="unknown_genre"}'] == 1
    assert "dead-lettered: not_json" in shelver.log()


def test_a_book_with_a_duplicate_key_is_dead_lettered_not_filed(
        aws: Aws, stack: Stack, shelver_factory: ShelverFactory):
    # orjson keeps the last "title" and "genre": once filed as B.json in romance, holding both.
    ambiguous = b'{"id":"d-1","title":"A","genre":"scifi","\\u0074itle":"B","genre":"romance"}'
    shelver = shelver_factory(stack)
    shelver.wait_healthy()
    ids = aws.send(stack.input_url, [("dg", ambiguous), ("dg", book("d-2", "After It", "scifi"))])

    wait_until(lambda: aws.drained(stack.input_url), 30, 0.5, "the input queue to drain")
    assert sorted(aws.objects(stack)) == [("scifi", "After It.json")]
    dead = aws.receive_all(stack.dlq_url, wait=30, expect=1)
    assert [(m["MessageAttributes"][ORIGINAL_ID_ATTRIBUTE]["StringValue"],
             m["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"],
             m["MessageAttributes"][DETAIL_ATTRIBUTE]["StringValue"], m["Body"]) for m in dead] == [
        (ids[0], "duplicate_key", "key 'title' appears more than once in one object",
         ambiguous.decode())]
    metrics = shelver.metrics()
    assert metrics['shelver_messages_dead_lettered_total{reason="duplicate_key"}'] == 1


def test_a_title_with_noncharacters_is_filed_under_a_key_s3_can_list(
        aws: Aws, stack: Stack, shelver_factory: ShelverFactory):
    # S3 answers ListObjects in XML, which cannot carry U+FFFE or U+FFFF. SQS refuses them in a
    # body too, but not the JSON escapes that orjson turns into them.
    body = b'{"id":"n-1","title":"Odd \\ufffe\\uffff\\ufdd0 \\udbff\\udfff Title","genre":"scifi"}'
    title = orjson.loads(body)["title"]
    assert title == "Odd \ufffe\uffff\ufdd0 \U0010ffff Title"
    shelver_factory(stack).wait_healthy()
    aws.send(stack.input_url, [("ng", body)])

    wait_until(lambda: aws.drained(stack.input_url), 30, 0.5, "the input queue to drain")
    assert sorted(aws.objects(stack)) == [("scifi", "Odd ___ _ Title.json")]
    assert object_key(title) == "Odd ___ _ Title.json"


def test_no_dead_letter_queue_means_never_deleted(aws: Aws, stack: Stack,
                                                  shelver_factory: ShelverFactory):
    aws.sqs.set_queue_attributes(QueueUrl=stack.input_url, Attributes={"RedrivePolicy": ""})
    shelver: Shelver = shelver_factory(stack)
    shelver.wait_healthy()
    aws.send(stack.input_url, [("x", b"garbage")])

    wait_until(lambda: shelver.metrics().get(
        'shelver_messages_retried_total{reason="not_json"}', 0) >= 2, 30, 0.5,
        "the invalid message to be retried twice")
    assert sum(aws.counts(stack.input_url)) == 1
    assert "has no dead-letter queue; it stays on the queue" in shelver.log()
