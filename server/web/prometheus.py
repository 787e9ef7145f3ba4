"""`/metrics` in Prometheus's text format: one collector that reads the live figures at
scrape time (the rooms, the media plane, the recorder, the finalizer's queue, the data
folder) instead of keeping counters of its own beside them, and the process's own
figures (CPU, memory, open files) from prometheus-client.

Each app has its own registry (tests run several servers in one process).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from storyroom.histogram import Histogram
from storyroom.readiness import free_bytes
from storyroom.seats import SEATS
from storyroom.services import Services
from storyroom.status import FinalizeStatus, RecordingState


def _buckets(histogram: Histogram, scale: float = 1.0) -> list[tuple[str, float]]:
    return [
        ("+Inf" if math.isinf(bound) else repr(bound * scale), count)
        for bound, count in histogram.at_most()
    ]


class StoryroomCollector(Collector):
    """The server's figures at the moment of the scrape. Runs on the loop (the scrape
    handler calls it): everything it reads is in memory but the free space (statvfs)."""

    def __init__(self, services: Callable[[], Services]) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        services = self.services()
        yield from self._rooms(services)
        yield from self._media(services)
        yield from self._finalizer(services)
        yield from self._shipping(services)
        yield from self._fanout(services)
        free = GaugeMetricFamily(
            "storyroom_data_free_bytes", "Bytes the server may still write in its data folder"
        )
        free.add_metric([], free_bytes(services.settings.data_dir))
        yield free

    def _rooms(self, services: Services) -> Iterator[Metric]:
        rooms = services.rooms.all()
        states = Counter(room.state for room in rooms)
        by_state = GaugeMetricFamily(
            "storyroom_rooms",
            "Rooms loaded in this process, by the state of their latest take",
            labels=["state"],
        )
        for state in RecordingState:
            by_state.add_metric([state.value], states[state])
        yield by_state
        seats = GaugeMetricFamily(
            "storyroom_seats_connected", "Seats with a live connection, by seat", labels=["seat"]
        )
        for seat in SEATS:
            seats.add_metric([seat], sum(room.connected(seat) for room in rooms))
        yield seats
        writing = GaugeMetricFamily(
            "storyroom_takes_recording", "Takes whose stems are being written now"
        )
        writing.add_metric([], len(services.recorder.active))
        yield writing

    def _media(self, services: Services) -> Iterator[Metric]:
        media = services.media
        connections = GaugeMetricFamily(
            "storyroom_peer_connections", "Audio peer connections (one per connected seat)"
        )
        connections.add_metric([], media.peer_connections())
        yield connections
        latency = media.latency
        yield HistogramMetricFamily(
            "storyroom_forward_latency_seconds",
            "Time each forwarded packet spent in the server, from arrival to its sender",
            buckets=_buckets(latency, scale=1e-3),
            sum_value=latency.sum / 1000.0,
        )
        labels = ["room", "seat"]
        loss = GaugeMetricFamily(
            "storyroom_seat_loss_ratio",
            "Fraction of a seat's packets lost on the way to the server (RTCP)",
            labels=labels,
        )
        jitter = GaugeMetricFamily(
            "storyroom_seat_jitter_seconds", "Inbound jitter of a seat's audio", labels=labels
        )
        packets = CounterMetricFamily(
            "storyroom_seat_packets",
            "Packets received from a seat on its current peer connection",
            labels=labels,
        )
        dropped = CounterMetricFamily(
            "storyroom_seat_dropped_packets",
            "Packets for a seat dropped from its outgoing queues (full, or late)",
            labels=labels,
        )
        for room_id, room_media in media.rooms.items():
            for seat, seat_media in room_media.seats.items():
                values = [room_id, seat]
                loss.add_metric(values, seat_media.stats.get("loss", 0.0))
                jitter.add_metric(values, seat_media.stats.get("jitter_ms", 0.0) / 1000.0)
                packets.add_metric(values, seat_media.packets)
                dropped.add_metric(
                    values, sum(track.dropped for track in seat_media.outgoing.values())
                )
        yield from (loss, jitter, packets, dropped)

    def _finalizer(self, services: Services) -> Iterator[Metric]:
        jobs = services.finalize_jobs
        queue = GaugeMetricFamily(
            "storyroom_finalize_queue_length",
            "Takes waiting to be finalized, and the one being finalized",
        )
        queue.add_metric([], jobs.pending)
        yield queue
        yield HistogramMetricFamily(
            "storyroom_finalize_duration_seconds",
            "How long finalization jobs took, ready or failed",
            buckets=_buckets(jobs.durations),
            sum_value=jobs.durations.sum,
        )
        outcomes = CounterMetricFamily(
            "storyroom_finalize_jobs", "Finalization jobs run, by outcome", labels=["outcome"]
        )
        for outcome in (FinalizeStatus.READY, FinalizeStatus.FAILED):
            outcomes.add_metric([outcome.value], jobs.outcomes[outcome])
        yield outcomes

    def _shipping(self, services: Services) -> Iterator[Metric]:
        shipper = services.shipper
        if shipper is None:
            return  # local files only: no shared storage to report on
        lag = GaugeMetricFamily(
            "storyroom_shipping_lag_seconds",
            "Seconds since every byte recorded was last in shared storage (0 when idle)",
        )
        lag.add_metric([], shipper.lag_s)
        recordings = GaugeMetricFamily(
            "storyroom_shipping_recordings", "Recordings being shipped to shared storage"
        )
        recordings.add_metric([], len(shipper.recordings))
        shipped = CounterMetricFamily(
            "storyroom_shipped_bytes", "Bytes of recordings shipped to shared storage"
        )
        shipped.add_metric([], shipper.bytes_shipped)
        objects = CounterMetricFamily(
            "storyroom_shipped_objects", "Objects (byte ranges) shipped to shared storage"
        )
        objects.add_metric([], shipper.objects_shipped)
        failures = CounterMetricFamily(
            "storyroom_shipping_failures", "Uploads to shared storage that failed (retried)"
        )
        failures.add_metric([], shipper.failures)
        yield from (lag, recordings, shipped, objects, failures)

    def _fanout(self, services: Services) -> Iterator[Metric]:
        fanout, feed = services.fanout, services.staff_feed
        if fanout is None or feed is None or not fanout.enabled:
            return  # one process: no Redis to report on
        up = GaugeMetricFamily(
            "storyroom_redis_up",
            "1 when Redis answered and both fan-out listeners were subscribed at the last"
            " probe (every 2 s; /readyz names the reason when 0)",
        )
        up.add_metric([], 1.0 if fanout.health.ok else 0.0)
        age = GaugeMetricFamily(
            "storyroom_redis_probe_age_seconds", "Seconds since the last Redis probe"
        )
        age.add_metric([], max(0.0, time.time() - fanout.health.at))
        staff = GaugeMetricFamily(
            "storyroom_staff_sockets", "Staff pages connected to this node (/staff)"
        )
        staff.add_metric([], len(feed.conns))
        sent = CounterMetricFamily(
            "storyroom_staff_updates", "Room summaries emitted to the staff pages (via Redis)"
        )
        sent.add_metric([], feed.sent)
        published = CounterMetricFamily(
            "storyroom_fanout_messages",
            "Messages published on the staff channel, by outcome",
            labels=["outcome"],
        )
        published.add_metric(["ok"], fanout.published)
        published.add_metric(["failed"], fanout.publish_failures)
        yield from (up, age, staff, sent, published)


def metrics_registry(services: Callable[[], Services]) -> CollectorRegistry:
    """A registry of this server's collector and the process's figures."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoryroomCollector(services))
    ProcessCollector(registry=registry)
    return registry
