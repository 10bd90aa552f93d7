"""Consume rate of the two Kafka clients on the bundled broker (Tansu), raw and behind
the service's source interface.

    python bench/consume.py [--messages 200000] [--partitions 1] [--repeat 3]
                            [--json bench/results/consume.json]

One topic of ``--messages`` small JSON messages (~120 B, a prediction with three
features) is produced once; then each consumer reads all of it, as a member of a fresh
consumer group, in a fresh process, with the same ``KafkaSettings`` (Tansu's short
session, ``fetch_max_wait_ms: 10``; see shared/TEST_SERVICES.md):

- ``raw kafka-python``: ``KafkaConsumer.poll``, counting messages, nothing else;
- ``raw confluent``: ``Consumer.consume``/``poll`` as ``sources_confluent.take`` calls
  them (what is fetched already, else the first message to come), counting;
- ``KafkaSource.poll`` and ``ConfluentSource.poll``: the service's sources, which build
  a ``Record`` per message (no decoding, no commits).

Each is timed from its first message to its last (the group join is left out), wall
clock and ``time.process_time`` of its process (librdkafka's threads included). Runs are
interleaved, in alternating order, ``--repeat`` times; the table shows the best events/s
and the lowest CPU per event, and ratios to raw kafka-python.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detector.broker import Tansu
from detector.config import KafkaSettings
from detector.sources import create_topics, producer

#: Tansu holds the first JoinGroup for half the session timeout, and leaves ~500 ms
#: gaps between fetches with the default fetch_max_wait_ms
KAFKA = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500, "fetch_max_wait_ms": 10,
         "max_poll_records": 2000}
CLIENTS = ("raw kafka-python", "raw confluent", "KafkaSource.poll", "ConfluentSource.poll")


def produce(bootstrap: str, topic: str, n: int, partitions: int) -> int:
    """Create ``topic`` and write ``n`` small JSON predictions; their mean size."""
    k = KafkaSettings(bootstrap_servers=bootstrap)
    create_topics(k, [topic], partitions)
    prod = producer(k, linger_ms=50)
    size = 0
    for i in range(n):
        raw = json.dumps({"model": "m", "prediction_id": f"p{i:08d}", "prediction": i % 2,
                          "features": {"x": i % 97 / 7, "y": i % 13, "c": "DE"}}).encode()
        size += len(raw)
        prod.send(topic, raw)
    prod.flush()
    prod.close()
    return size // n


def _poller(client: str, k: KafkaSettings) -> tuple[Callable[[], int], Callable[[], None]]:
    """(read one batch and return its size, close) for ``client``."""
    if client == "raw kafka-python":
        from kafka import KafkaConsumer

        from detector.sources import client_options
        consumer = KafkaConsumer(
            **client_options(k), group_id=k.group_id, enable_auto_commit=False,
            auto_offset_reset=k.auto_offset_reset, session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms, max_poll_records=k.max_poll_records,
            fetch_max_wait_ms=k.fetch_max_wait_ms, fetch_min_bytes=k.fetch_min_bytes,
            max_partition_fetch_bytes=k.max_partition_fetch_bytes,
            fetch_max_bytes=k.fetch_max_bytes)
        consumer.subscribe([k.predictions_topic])
        return (lambda: sum(len(m) for m in consumer.poll(
            timeout_ms=k.poll_timeout_ms).values())), lambda: consumer.close(autocommit=False)
    if client == "raw confluent":
        from confluent_kafka import Consumer

        from detector.sources_confluent import librdkafka_config, take
        raw = Consumer(librdkafka_config(k))
        raw.subscribe([k.predictions_topic])
        timeout = k.poll_timeout_ms / 1000

        def consume() -> int:
            messages = take(raw, k.max_poll_records, timeout)
            for m in messages:
                if m.error() is not None:
                    raise RuntimeError(f"confluent-kafka: {m.error()}")
            return len(messages)
        return consume, raw.close
    if client == "KafkaSource.poll":
        from detector.sources import KafkaSource
        source: Any = KafkaSource(k)
    else:
        from detector.sources_confluent import ConfluentSource
        source = ConfluentSource(k)
    source.open()
    return (lambda: len(source.poll())), source.close


def consume(client: str, kafka: dict[str, Any], total: int, timeout: float
            ) -> tuple[float, float]:
    """Read ``total`` messages with ``client``; (wall s, CPU s) from the first message
    to the last. Runs in a fresh process."""
    poll, close = _poller(client, KafkaSettings(**kafka))
    deadline = time.monotonic() + timeout
    try:
        n = 0
        while n == 0:
            n = poll()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{client}: no message in {timeout:.0f} s")
        wall, cpu = time.perf_counter(), time.process_time()
        first = n
        while n < total:
            n += poll()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{client}: {n:,} of {total:,} messages in {timeout:.0f} s")
        assert n == total, f"{client}: {n:,} messages, {total:,} produced"
        # the first batch's messages are not in the window that starts after it
        return (time.perf_counter() - wall) * total / (total - first), \
            (time.process_time() - cpu) * total / (total - first)
    finally:
        close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    ctx = multiprocessing.get_context("spawn")
    results: dict[str, list[tuple[float, float]]] = {c: [] for c in CLIENTS}
    with Tansu() as broker:
        topic = f"bench-consume-{uuid.uuid4().hex[:8]}"
        size = produce(broker.bootstrap, topic, args.messages, args.partitions)
        base = {"bootstrap_servers": broker.bootstrap, "predictions_topic": topic,
                "labels_topic": f"{topic}-labels", **KAFKA}
        create_topics(KafkaSettings(bootstrap_servers=broker.bootstrap), [base["labels_topic"]])
        with ctx.Pool(1, maxtasksperchild=1) as pool:
            for r in range(args.repeat):
                order = CLIENTS if r % 2 == 0 else tuple(reversed(CLIENTS))
                for client in order:
                    kafka = {**base, "group_id": f"bench-{uuid.uuid4().hex[:8]}"}
                    results[client].append(pool.apply(
                        consume, (client, kafka, args.messages, args.timeout)))
    import confluent_kafka
    import kafka
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "python": platform.python_version(), "kafka-python": kafka.__version__,
               "confluent-kafka": confluent_kafka.__version__,
               "librdkafka": confluent_kafka.libversion()[0], "loadavg_end": os.getloadavg()}
    rows = []
    for client in CLIENTS:
        wall = min(w for w, _ in results[client])
        cpu = min(c for _, c in results[client])
        rows.append({"client": client, "events_per_s": args.messages / wall,
                     "cpu_us_per_event": cpu / args.messages * 1e6,
                     "runs": [{"wall_s": w, "cpu_s": c} for w, c in results[client]]})
    base_rate, base_cpu = rows[0]["events_per_s"], rows[0]["cpu_us_per_event"]
    print(f"{args.messages:,} JSON messages of ~{size} B, {args.partitions} partition(s), "
          f"Tansu, best of {args.repeat}; {machine}")
    print(f"{'consumer':<24}{'events/s':>12}{'CPU µs/event':>15}{'rate ×':>9}{'CPU ×':>8}")
    for row in rows:
        print(f"{row['client']:<24}{row['events_per_s']:>12,.0f}{row['cpu_us_per_event']:>15.2f}"
              f"{row['events_per_s'] / base_rate:>9.2f}{base_cpu / row['cpu_us_per_event']:>8.2f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"messages": args.messages, "bytes": size,
                                         "partitions": args.partitions, "machine": machine,
                                         "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
