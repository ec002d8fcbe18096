"""The official Python client, `kurrentdbclient`, unmodified and through its public API
only, against `concord serve`: what an application written for KurrentDB does most, each
test one behaviour it relies on.

One server (a fresh store) serves the module; every test writes its own streams.
"""

from __future__ import annotations

import json
import unittest
import uuid

from kurrentdbclient import KurrentDBClient, NewEvent, NewEvents, StreamState
from kurrentdbclient.exceptions import (
    FailedPreconditionError,
    MultiAppendToSameStreamError,
    NotFoundError,
    RecordMaxSizeExceededError,
    StreamIsDeletedError,
    StreamTombstonedError,
    WrongCurrentVersionError,
)

from concord_server import ConcordServer

# How long one call (a subscription included) may take before the test calls it hung:
# the gRPC deadline the client sets on every call.
CALL_SECONDS = 30

_server: ConcordServer | None = None


def setUpModule() -> None:
    global _server
    _server = ConcordServer()


def tearDownModule() -> None:
    if _server is not None:
        _server.stop()


def deposit(amount: int) -> NewEvent:
    return NewEvent(type="Deposited", data=f'{{"amount": {amount}}}'.encode())


def fresh_stream(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


class TestKurrentDBClient(unittest.TestCase):
    client: KurrentDBClient

    @classmethod
    def setUpClass(cls) -> None:
        assert _server is not None
        cls.client = KurrentDBClient(f"{_server.uri}&DefaultDeadline={CALL_SECONDS}")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.client.close()

    def test_append_with_expected_positions(self) -> None:
        stream = fresh_stream("account")
        # One event goes through Streams.Append, a list through Streams.BatchAppend.
        first = self.client.append_to_stream(
            stream, events=deposit(1), current_version=StreamState.NO_STREAM
        )
        second = self.client.append_to_stream(
            stream, events=[deposit(2), deposit(3)], current_version=0
        )
        third = self.client.append_to_stream(
            stream, events=deposit(4), current_version=StreamState.EXISTS
        )
        fourth = self.client.append_to_stream(
            stream, events=[deposit(5)], current_version=StreamState.ANY
        )
        # Commit positions are the store's global positions: they grow with each append.
        self.assertLess(first, second)
        self.assertLess(second, third)
        self.assertLess(third, fourth)
        self.assertEqual(self.client.get_current_version(stream), 4)
        events = self.client.get_stream(stream)
        self.assertEqual([e.stream_position for e in events], [0, 1, 2, 3, 4])
        self.assertEqual(
            [e.data for e in events],
            [f'{{"amount": {n}}}'.encode() for n in range(1, 6)],
        )
        self.assertEqual({e.type for e in events}, {"Deposited"})
        self.assertEqual(events[-1].commit_position, fourth)

    def test_a_stale_expected_version_is_refused_with_the_actual_one(self) -> None:
        stream = fresh_stream("account")
        self.client.append_to_stream(
            stream, events=[deposit(1), deposit(2)], current_version=StreamState.NO_STREAM
        )
        # Both append paths: Streams.Append (one event) and Streams.BatchAppend (a list).
        for events in (deposit(3), [deposit(3)]):
            with self.assertRaises(WrongCurrentVersionError) as refused:
                self.client.append_to_stream(stream, events=events, current_version=0)
            self.assertEqual(refused.exception.actual_version, 1)
            with self.assertRaises(WrongCurrentVersionError) as refused:
                self.client.append_to_stream(
                    stream, events=events, current_version=StreamState.NO_STREAM
                )
            self.assertEqual(refused.exception.actual_version, 1)
        for events in (deposit(1), [deposit(1)]):
            with self.assertRaises(WrongCurrentVersionError) as refused:
                self.client.append_to_stream(
                    fresh_stream("missing"), events=events, current_version=StreamState.EXISTS
                )
            self.assertIs(refused.exception.actual_version, StreamState.NO_STREAM)
        self.assertEqual(len(self.client.get_stream(stream)), 2)

    def test_a_retried_append_is_recorded_once(self) -> None:
        stream = fresh_stream("account")
        event = deposit(7)
        position = self.client.append_to_stream(
            stream, events=event, current_version=StreamState.NO_STREAM
        )
        # The client retries a failed call once; the same event id must not be written twice.
        again = self.client.append_to_stream(
            stream, events=event, current_version=StreamState.NO_STREAM
        )
        self.assertEqual(again, position)
        events = self.client.get_stream(stream)
        self.assertEqual([e.id for e in events], [event.id])

    def test_read_a_stream_both_ways_and_from_a_revision(self) -> None:
        stream = fresh_stream("account")
        self.client.append_to_stream(
            stream,
            events=[deposit(n) for n in range(5)],
            current_version=StreamState.NO_STREAM,
        )
        forwards = self.client.get_stream(stream, stream_position=2)
        self.assertEqual([e.stream_position for e in forwards], [2, 3, 4])
        backwards = self.client.get_stream(stream, backwards=True, limit=2)
        self.assertEqual([e.stream_position for e in backwards], [4, 3])
        self.assertIsNotNone(forwards[0].recorded_at)
        with self.assertRaises(NotFoundError):
            self.client.get_stream(fresh_stream("missing"))
        self.assertIs(
            self.client.get_current_version(fresh_stream("missing")), StreamState.NO_STREAM
        )

    def test_read_all_forwards_backwards_and_filtered(self) -> None:
        stream = fresh_stream("ledger")
        event_type = f"Audited{uuid.uuid4().hex}"
        events = [NewEvent(type=event_type, data=b"{}") for _ in range(3)]
        last = self.client.append_to_stream(
            stream, events=events, current_version=StreamState.NO_STREAM
        )
        # Forwards from a commit position includes the event at that position.
        first = last - 2
        read = list(self.client.read_all(commit_position=first, limit=3))
        self.assertEqual([e.id for e in read], [e.id for e in events])
        self.assertEqual([e.commit_position for e in read], [first, first + 1, last])
        # Backwards from the end: the newest first.
        newest = list(self.client.read_all(backwards=True, limit=1))
        self.assertEqual([e.id for e in newest], [events[-1].id])
        # The client's filters are regular expressions on the event type.
        only_ours = list(self.client.read_all(filter_include=[event_type]))
        self.assertEqual([e.id for e in only_ours], [e.id for e in events])
        self.assertEqual(self.client.get_commit_position(), last)

    def test_catch_up_subscriptions_deliver_history_then_live_events(self) -> None:
        stream = fresh_stream("account")
        before = self.client.append_to_stream(
            stream, events=[deposit(1), deposit(2)], current_version=StreamState.NO_STREAM
        )
        to_stream = self.client.subscribe_to_stream(stream)
        # `commit_position` means after that position: the subscription starts at event 2.
        to_all = self.client.subscribe_to_all(
            commit_position=before - 1, filter_include=["Deposited"]
        )
        try:
            self.assertEqual(next(to_stream).stream_position, 0)
            self.assertEqual(next(to_stream).stream_position, 1)
            self.assertEqual(next(to_all).commit_position, before)
            live = deposit(3)
            self.client.append_to_stream(stream, events=live, current_version=1)
            self.assertEqual(next(to_stream).id, live.id)
            # Other tests write too: skip their events, if any, to reach ours.
            self.assertEqual(
                next(e for e in to_all if e.stream_name == stream).id, live.id
            )
        finally:
            to_stream.stop()
            to_all.stop()

    def test_a_deleted_stream_reads_as_missing(self) -> None:
        stream = fresh_stream("account")
        self.client.append_to_stream(
            stream, events=[deposit(1), deposit(2)], current_version=StreamState.NO_STREAM
        )
        # The client parses the revisions out of the status text.
        with self.assertRaises(WrongCurrentVersionError) as refused:
            self.client.delete_stream(stream, current_version=0)
        self.assertEqual(refused.exception.actual_version, 1)
        self.assertEqual(refused.exception.expected_version, 0)
        self.client.delete_stream(stream, current_version=1)
        with self.assertRaises(NotFoundError):
            self.client.get_stream(stream)
        self.assertIs(self.client.get_current_version(stream), StreamState.NO_STREAM)
        # A delete of a stream that does not exist: actual version -1, which the client
        # reports as not found.
        with self.assertRaises(NotFoundError):
            self.client.delete_stream(fresh_stream("missing"), current_version=0)

    def test_a_tombstoned_stream_refuses_appends_for_good(self) -> None:
        stream = fresh_stream("account")
        self.client.append_to_stream(
            stream, events=deposit(1), current_version=StreamState.NO_STREAM
        )
        self.client.tombstone_stream(stream, current_version=StreamState.ANY)
        # A list goes through BatchAppend, whose error detail the client maps to its own
        # exception; for one event (Streams.Append) it raises the status as it comes, as
        # against KurrentDB: FAILED_PRECONDITION "Event stream '…' is deleted."
        with self.assertRaises(StreamIsDeletedError):
            self.client.append_to_stream(
                stream, events=[deposit(2)], current_version=StreamState.ANY
            )
        with self.assertRaises(FailedPreconditionError) as refused:
            self.client.append_to_stream(
                stream, events=deposit(2), current_version=StreamState.ANY
            )
        self.assertIn(f"Event stream '{stream}' is deleted.", str(refused.exception))
        with self.assertRaises(StreamIsDeletedError):
            self.client.get_stream(stream)
        with self.assertRaises(StreamIsDeletedError):
            self.client.delete_stream(stream, current_version=StreamState.ANY)

    def test_a_multi_stream_append_writes_every_stream_at_once(self) -> None:
        # KurrentDB 25.1's v2 AppendSession: a transfer between two accounts.
        source, target = fresh_stream("account"), fresh_stream("account")
        self.client.append_to_stream(
            source, events=deposit(100), current_version=StreamState.NO_STREAM
        )
        withdrawn = NewEvent(
            type="Withdrawn", data=b'{"amount": 30}', metadata=b'{"transfer": "t-1"}'
        )
        deposited = deposit(30)
        position = self.client.multi_append_to_stream(
            [
                NewEvents(stream_name=source, events=[withdrawn], current_version=0),
                NewEvents(
                    stream_name=target,
                    events=[deposited],
                    current_version=StreamState.NO_STREAM,
                ),
            ]
        )
        source_events = self.client.get_stream(source)
        target_events = self.client.get_stream(target)
        self.assertEqual([e.type for e in source_events], ["Deposited", "Withdrawn"])
        self.assertEqual(source_events[-1].id, withdrawn.id)
        self.assertEqual(source_events[-1].data, b'{"amount": 30}')
        self.assertEqual(json.loads(source_events[-1].metadata), {"transfer": "t-1"})
        self.assertEqual([e.id for e in target_events], [deposited.id])
        # Consecutive positions in the order of the streams; the answer is the last one.
        self.assertEqual(target_events[0].commit_position, position)
        self.assertLess(source_events[-1].commit_position, position)
        # Re-sent (the client retries a failed call once): recorded once.
        again = self.client.multi_append_to_stream(
            [
                NewEvents(stream_name=source, events=[withdrawn], current_version=0),
                NewEvents(
                    stream_name=target,
                    events=[deposited],
                    current_version=StreamState.NO_STREAM,
                ),
            ]
        )
        self.assertEqual(again, position)
        self.assertEqual(len(self.client.get_stream(source)), 2)
        self.assertEqual(len(self.client.get_stream(target)), 1)

    def test_a_multi_stream_append_with_one_stale_stream_writes_nothing(self) -> None:
        fresh, stale = fresh_stream("account"), fresh_stream("account")
        self.client.append_to_stream(
            stale, events=[deposit(1), deposit(2)], current_version=StreamState.NO_STREAM
        )
        with self.assertRaises(WrongCurrentVersionError) as refused:
            self.client.multi_append_to_stream(
                [
                    NewEvents(
                        stream_name=fresh,
                        events=[deposit(3)],
                        current_version=StreamState.NO_STREAM,
                    ),
                    NewEvents(stream_name=stale, events=[deposit(4)], current_version=0),
                ]
            )
        self.assertEqual(refused.exception.actual_version, 1)
        self.assertEqual(refused.exception.expected_version, 0)
        with self.assertRaises(NotFoundError):
            self.client.get_stream(fresh)
        self.assertEqual(len(self.client.get_stream(stale)), 2)

    def test_a_multi_stream_append_refuses_what_kurrentdb_refuses(self) -> None:
        buried, stream = fresh_stream("account"), fresh_stream("account")
        self.client.append_to_stream(
            buried, events=deposit(1), current_version=StreamState.NO_STREAM
        )
        self.client.tombstone_stream(buried, current_version=StreamState.ANY)
        with self.assertRaises(StreamTombstonedError):
            self.client.multi_append_to_stream(
                NewEvents(stream_name=buried, events=[deposit(2)], current_version=StreamState.ANY)
            )
        with self.assertRaises(MultiAppendToSameStreamError):
            self.client.multi_append_to_stream(
                [
                    NewEvents(stream_name=stream, events=[deposit(1)], current_version=StreamState.ANY),
                    NewEvents(stream_name=stream, events=[deposit(2)], current_version=StreamState.ANY),
                ]
            )
        # The server's per-event limit is 1 MiB (data plus metadata).
        too_big = NewEvent(type="Blob", data=b"x" * (1024 * 1024 + 1), content_type="application/octet-stream")
        with self.assertRaises(RecordMaxSizeExceededError) as refused:
            self.client.multi_append_to_stream(
                NewEvents(stream_name=stream, events=[too_big], current_version=StreamState.ANY)
            )
        self.assertEqual(refused.exception.event_id, too_big.id)
        with self.assertRaises(NotFoundError):
            self.client.get_stream(stream)

    def test_stream_metadata_is_set_got_back_and_limits_reads(self) -> None:
        stream = fresh_stream("account")
        self.assertEqual(
            self.client.get_stream_metadata(stream), ({}, StreamState.NO_STREAM)
        )
        self.client.append_to_stream(
            stream,
            events=[deposit(n) for n in range(5)],
            current_version=StreamState.NO_STREAM,
        )
        # An append of one `$metadata` event to `$$stream`; custom keys are dropped.
        self.client.set_stream_metadata(
            stream,
            metadata={"$maxCount": 2, "$maxAge": 3600, "$tb": 1, "owner": "billing"},
            current_version=StreamState.NO_STREAM,
        )
        metadata, version = self.client.get_stream_metadata(stream)
        self.assertEqual(metadata, {"$maxCount": 2, "$maxAge": 3600, "$tb": 1})
        self.assertEqual(version, 0)
        self.assertEqual(
            [e.stream_position for e in self.client.get_stream(stream)], [3, 4]
        )
        # The read-modify-write the client's own docs show: expect the revision read.
        with self.assertRaises(WrongCurrentVersionError):
            self.client.set_stream_metadata(
                stream, metadata={"$maxCount": 1}, current_version=StreamState.NO_STREAM
            )
        self.client.set_stream_metadata(
            stream, metadata={"$maxCount": 1}, current_version=version
        )
        self.assertEqual(self.client.get_stream_metadata(stream), ({"$maxCount": 1}, 0))
        self.assertEqual([e.stream_position for e in self.client.get_stream(stream)], [4])
        # The metadata stream read forwards, and written through BatchAppend (a list).
        (shown,) = self.client.get_stream(f"$${stream}")
        self.assertEqual((shown.type, shown.stream_position), ("$metadata", 0))
        self.client.append_to_stream(
            f"$${stream}",
            events=[NewEvent(type="$metadata", data=b'{"$maxCount": 3}')],
            current_version=0,
        )
        self.assertEqual(self.client.get_stream_metadata(stream), ({"$maxCount": 3}, 0))
        # No setting left: the metadata stream is empty again.
        self.client.set_stream_metadata(stream, metadata={}, current_version=0)
        self.assertEqual(
            self.client.get_stream_metadata(stream), ({}, StreamState.NO_STREAM)
        )
        self.assertEqual(len(self.client.get_stream(stream)), 5)
        self.client.tombstone_stream(stream, current_version=StreamState.ANY)
        with self.assertRaises(StreamIsDeletedError):
            self.client.get_stream_metadata(stream)
        with self.assertRaises(FailedPreconditionError):
            self.client.set_stream_metadata(stream, metadata={"$maxCount": 3})

    def test_persistent_subscription_does_not_redeliver_acked_events(self) -> None:
        stream = fresh_stream("orders")
        group = f"billing-{uuid.uuid4().hex[:8]}"
        placed = [NewEvent(type="Placed", data=b"{}") for _ in range(2)]
        self.client.append_to_stream(
            stream, events=placed, current_version=StreamState.NO_STREAM
        )
        self.client.create_subscription_to_stream(group, stream)
        reader = self.client.read_subscription_to_stream(group, stream)
        try:
            received = [next(reader), next(reader)]
            self.assertEqual([e.id for e in received], [e.id for e in placed])
            for event in received:
                reader.ack(event)
        finally:
            # Stopping sends the pending acks before closing the call.
            reader.stop()
        later = NewEvent(type="Placed", data=b"{}")
        self.client.append_to_stream(stream, events=later, current_version=1)
        reader = self.client.read_subscription_to_stream(group, stream)
        try:
            # A new reader of the group starts after the acked events.
            self.assertEqual(next(reader).id, later.id)
        finally:
            reader.stop()
        info = self.client.get_subscription_info(group, stream)
        self.assertEqual(info.group_name, group)
        self.assertEqual(info.event_source, stream)
        self.client.delete_subscription(group, stream)
        with self.assertRaises(NotFoundError):
            self.client.get_subscription_info(group, stream)


if __name__ == "__main__":
    unittest.main()
