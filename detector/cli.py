"""Command line: ``drift-detector`` and its commands ``run``, ``check-config``,
``replay``, ``report``, ``profile``, ``calibrate`` and ``demo`` (``--help`` lists them).

Exit codes: 0 done (``run``: stopped by SIGTERM or SIGINT, at any point of start-up
too), 1 fatal runtime error (e.g. Kafka refused our settings), 2 invalid
configuration or usage.

Only light modules are imported here, so that ``run`` installs its stop handlers
within milliseconds of the interpreter starting; settings, River, Kafka and the
service are imported after that, by the functions that need them.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from detector import __version__
from detector.errors import ConfigError, DriftDetectorError

if TYPE_CHECKING:
    from types import ModuleType

    from detector.config import KafkaSettings, Settings
    from detector.service import Service, Source
    from detector.sources import TopicSink

log = logging.getLogger("detector.cli")

DESCRIPTION = ("Watch ML models in production: drift and performance from the prediction "
               "and label events on Kafka, exported as Prometheus metrics.")
EPILOG = ("Exit codes: 0 done, 1 fatal runtime error (e.g. Kafka refused the settings), "
          "2 invalid configuration or usage. 'drift-detector COMMAND --help' shows the "
          "options of a command.")


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 for any free one."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535; 0: any "
                                         "free port)")
    return port


def _number(minimum: float, inclusive: bool, what: str) -> Callable[[str], float]:
    """An argparse type: a finite number above ``minimum`` (or equal, if ``inclusive``)."""
    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            x = math.nan
        if not math.isfinite(x) or x < minimum or (x == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return x
    return parse


def _seed(text: str) -> int:
    """An argparse type: a random seed (numpy takes whole numbers >= 0)."""
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return seed


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drift-detector", description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"drift-detector {__version__}")
    sub = p.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    run = sub.add_parser("run", help="consume from Kafka and serve /metrics until SIGTERM")
    run.add_argument("--config", "-c", help="YAML settings file (DRIFT_* variables override it)")

    check = sub.add_parser("check-config", help="validate a settings file, print the result")
    check.add_argument("file", nargs="?", help="YAML settings file (omit: defaults + env)")

    replay = sub.add_parser("replay", help="run the pipeline over JSONL files, print a summary")
    replay.add_argument("files", nargs="+", help="JSONL: predictions (lines with `features`) "
                        "and labels, in order")
    replay.add_argument("--config", "-c")

    rep = sub.add_parser("report", help="self-contained HTML report of a replay of files or "
                         "of a running service")
    rep.add_argument("files", nargs="*", help="JSONL events as for replay; with --model, "
                     "tables (CSV, JSONL rows, Parquet) of one prediction per row")
    rep.add_argument("--output", "-o", required=True, help="HTML file to write")
    rep.add_argument("--config", "-c", help="settings file (DRIFT_* variables override it)")
    rep.add_argument("--profile", help="reference profile (drift-detector profile) of its "
                     "model; without one, each version's first reference.warmup values are "
                     "the reference")
    rep.add_argument("--model", help="model of the table's rows (tables only)")
    rep.add_argument("--version", help="model version of the rows (tables only)")
    for column in ("prediction", "score", "label", "id", "timestamp"):
        rep.add_argument(f"--{column}-column", help=f"the table's {column} column")
    rep.add_argument("--exclude", action="append", default=[], metavar="COLUMN",
                     help="a table column that is not a feature (repeatable)")
    rep.add_argument("--format", choices=["csv", "jsonl", "parquet"],
                     help="table format, if the file name does not tell")
    rep.add_argument("--points", type=int, help="points per chart at most (default: the "
                     "config's report.points)")
    rep.add_argument("--title", default="drift-detector report")
    rep.add_argument("--url", help="a running service instead of files: its metrics "
                     "address, e.g. https://host:10108 (serves /report with report.enabled)")
    rep.add_argument("--user", help="basic auth user of --url; the password is read from "
                     "DRIFT_REPORT_PASSWORD")
    rep.add_argument("--cafile", help="CA bundle that signed the service's certificate")
    rep.add_argument("--certfile", help="client certificate, if the service requires one")
    rep.add_argument("--keyfile", help="key of --certfile")

    prof = sub.add_parser("profile", help="reference profile of training data (CSV, JSONL, "
                          "Parquet)")
    prof.add_argument("data", help="CSV, JSONL or Parquet file")
    prof.add_argument("--model", required=True)
    prof.add_argument("--version", help="model version the profile is for (default: any)")
    prof.add_argument("--label-column")
    prof.add_argument("--prediction-column")
    prof.add_argument("--score-column", help="used for prediction drift instead of the "
                      "prediction column, as the service does when events carry a score")
    prof.add_argument("--positive-label", default="1", help="the class the score is the "
                      "probability of (models.<name>.positive_label; default 1)")
    prof.add_argument("--exclude", action="append", default=[], metavar="COLUMN",
                      help="a column that is not a feature (repeatable), e.g. an id")
    prof.add_argument("--format", choices=["csv", "jsonl", "parquet"])
    prof.add_argument("--bins", type=int, default=10)
    prof.add_argument("--top-k", type=int, default=20)
    prof.add_argument("--output", "-o", required=True, help="profile JSON to write")

    cal = sub.add_parser("calibrate", help="detector parameters for a false-alarm budget, with "
                         "measured run lengths")
    cal.add_argument("--config", "-c", help="settings file (detection.* and detectors.*)")
    cal.add_argument("--false-alarm-rate", type=float,
                     help="false alarms per value per stream (default: the config's)")
    cal.add_argument("--values", type=int, default=1_000_000,
                     help="stable N(0,1) values simulated per detector (default 10^6)")

    demo = sub.add_parser("demo", help="bundled broker + drifting model stream + live view")
    demo.add_argument("--duration", type=_number(0, True, "a number of seconds >= 0"),
                      default=60.0, help="seconds to run (0: until Ctrl-C; default 60)")
    demo.add_argument("--rate", type=_number(0, False, "a number of predictions per second "
                                             "above 0"),
                      default=2000.0, help="predictions per second (default 2000)")
    demo.add_argument("--seed", type=_seed, default=7, help="random seed (default 7)")
    demo.add_argument("--port", type=_port,
                      help="metrics port (0: any free port; default: the service's default "
                      "port, or a free one if that is taken)")
    demo.add_argument("--no-live", action="store_true", help="plain progress lines, no live view")
    demo.add_argument("--alerts", action="store_true",
                      help="also run Prometheus and Alertmanager (when installed) with the "
                      "shipped alert rules and show the alerts that fire")
    return p


def _stop_on_signals() -> threading.Event:
    """An event that SIGTERM and SIGINT set instead of ending the process."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("signal", extra={"fields": {"signal": signal.Signals(signum).name}})
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # the very first thing for `run` (the command is the first argument, options come
    # after it): from here on a stop request ends start-up cleanly, with exit code 0
    stop = _stop_on_signals() if argv[:1] == ["run"] else None
    args = _parser().parse_args(argv)
    from detector import logs

    try:
        if args.command == "check-config":
            return _check_config(args.file)
        if args.command == "profile":
            return _profile(args)
        if args.command == "calibrate":
            return _calibrate(args)
        if args.command == "report" and args.url:
            if args.files:
                print("drift-detector: report takes files or --url, not both", file=sys.stderr)
                return 2
            return _report_url(args)
        if args.command == "demo":
            from detector.alerting import AlertingUnavailable, find_programs
            from detector.demo import run_demo
            if args.alerts:
                try:
                    find_programs()
                except AlertingUnavailable as exc:
                    print(f"drift-detector demo: --alerts needs Prometheus and Alertmanager: "
                          f"{exc}", file=sys.stderr)
                    return 2
            # The demo's view shows counts; log lines would tear it (it injects bad messages).
            logs.configure("ERROR", "text")
            logging.getLogger("kafka").setLevel(logging.CRITICAL)
            return run_demo(duration=args.duration, rate=args.rate, seed=args.seed,
                            port=args.port, live=not args.no_live, alerts=args.alerts)
        from detector.config import load_settings

        settings = load_settings(args.config)
        logs.configure(settings.log.level, settings.log.format)
        if args.command == "replay":
            return _replay(settings, args.files)
        if args.command == "report":
            return _report(settings, args)
        assert stop is not None
        return _run(settings, stop)
    except ConfigError as exc:
        print(f"drift-detector: {exc}", file=sys.stderr)
        return 2
    except DriftDetectorError as exc:
        log.error("fatal", extra={"fields": {"error": str(exc)}})
        print(f"drift-detector: {exc}", file=sys.stderr)
        return 1


def program() -> NoReturn:
    """The ``drift-detector`` program: ``main``, then exit without the interpreter's
    teardown. When ``main`` returns, everything it opened is closed, committed and
    saved; what is left is freeing the modules of numba, SciPy and River one by one,
    about a second, which a stopping Pod (SIGTERM: out in under a second) cannot spare.
    An exception still ends the program the usual way, with its traceback."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _check_config(path: str | None) -> int:
    import yaml

    from detector.config import effective_config, load_settings

    settings = load_settings(path)
    yaml.safe_dump(effective_config(settings), sys.stdout, sort_keys=False)
    print(f"# valid; models {'discovered from the stream' if settings.discovers_models else 'declared only'}",
          file=sys.stderr)
    return 0


def _profile(args: argparse.Namespace) -> int:
    from pathlib import Path

    from detector.calibrate_scores import Calibrator
    from detector.profile import ProfileError, build_profile

    if not 2 <= args.bins <= 100 or args.top_k < 1:
        print("drift-detector: --bins must be 2..100 and --top-k at least 1", file=sys.stderr)
        return 2
    try:
        profile, report = build_profile(
            args.data, args.model, version=args.version, label_column=args.label_column,
            prediction_column=args.prediction_column, score_column=args.score_column,
            exclude=tuple(args.exclude), bins=args.bins, top_k=args.top_k, fmt=args.format,
            positive_label=_class(args.positive_label))
    except ProfileError as exc:
        print(f"drift-detector: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(profile.to_json()))
    tmp.replace(out)
    kinds = {n: r.kind for n, r in profile.features.items()}
    print(f"wrote {out}: {report.rows:,} rows, {len(kinds)} features "
          f"({sum(k == 'numeric' for k in kinds.values())} numeric, "
          f"{sum(k == 'categorical' for k in kinds.values())} categorical)"
          + (f", label {profile.label.kind}" if profile.label else "")
          + (f", prediction {profile.prediction.kind}" if profile.prediction else ""))
    if profile.estimation is not None:
        kind = ("score calibrator (isotonic)" if isinstance(profile.estimation, Calibrator)
                else "loss table")
        print(f"performance estimates: {kind} fitted on {profile.estimation.pairs:,} "
              "labelled rows")
    if report.skipped:
        print("skipped: " + ", ".join(f"{k} {n:,}" for k, n in sorted(report.skipped.items())))
    for name, col in profile.meta["columns"].items():
        if col["invalid"]:
            print(f"column {name}: {col['invalid']:,} values that are not finite numbers ignored")
    return 0


def _class(text: str) -> str | int:
    """A class given on the command line: an integer when it reads as one.

    >>> _class("1"), _class("fraud")
    (1, 'fraud')
    """
    return int(text) if text.lstrip("+-").isdigit() else text


def _calibrate(args: argparse.Namespace) -> int:
    from detector import calibration
    from detector.config import load_settings

    settings = load_settings(args.config)
    d = settings.detection
    rate = args.false_alarm_rate or d.rate
    if not 0 < rate < 0.1:
        print("drift-detector: --false-alarm-rate must be in (0, 0.1)", file=sys.stderr)
        return 2
    warmup = d.warmup if d.standardize else None
    print(f"false-alarm budget: {rate:.3g} per value per stream (target mean run length "
          f"{1 / rate:,.0f} values); baseline of {d.warmup} values, min_samples "
          f"{d.min_samples}, clip {d.clip}")
    print(f"measuring each detector on {args.values:,} stable N(0,1) values, standardised as "
          "the service does ...", flush=True)
    print(f"{'detector':<14}{'parameters':<58}{'false alarms':>14}{'measured run length':>22}")
    for kind in calibration.CALIBRATED:
        params = calibration.derive(kind, rate, warmup)
        m = calibration.measure(kind, params, args.values, warmup=d.warmup,
                                min_samples=d.min_samples, clip=d.clip)
        measured = f"> {m.values:,}" if not m.false_alarms else f"{m.run_length:,.0f}"
        print(f"{kind:<14}{json.dumps(params):<58}{m.false_alarms:>14,}{measured:>22}",
              flush=True)
    print("cusum: h from Siegmund's approximation, averaged over the errors of a baseline "
          "learned from warmup values, so run lengths of many streams average the target; "
          "adwin: delta from its own "
          "bound (conservative); page_hinkley: the same approximation does not hold for its "
          "running mean (run lengths fall short), which is why it is not a default.")
    return 0


def _run(settings: Settings, stop: threading.Event) -> int:
    """Serve until ``stop`` is set; a stop at any stage of start-up returns 0 at once."""
    if stop.is_set():
        return 0
    from detector.service import Service
    from detector.stores import FileStore, KafkaStore

    if stop.is_set():
        return 0
    sink = dead = store = None
    ck = settings.checkpoint
    if ck.enabled:
        store = FileStore(ck.path) if ck.path is not None else KafkaStore(
            settings.kafka, ck.topic_for(settings.kafka.group_id), ck.replication_factor)
    # the sinks connect in Service.run, after the source (none of this touches the network)
    sink_type = _sink_type(settings.kafka)
    if settings.drift_events.enabled:
        sink = sink_type(settings.kafka, settings.drift_events.topic, "drift_events")
    if settings.dead_letter.enabled:
        dead = sink_type(settings.kafka, settings.dead_letter.topic, "dead_letter")
    ingest = None
    if settings.ingest.enabled:
        # the idempotent producer: the broker drops repeats of its own retries; sizes are
        # bounded by ingest.max_body_bytes before a message is sent
        ingest = sink_type(settings.kafka, settings.ingest.topic, "ingest", idempotent=True,
                           timeout_s=settings.ingest.ack_timeout_seconds,
                           hold_s=settings.ingest.hold_seconds)
    service = Service(settings, _source(settings.kafka, settings.input_patterns), sink=sink,
                      dead_letters=dead, store=store, ingest=ingest)
    _serve_metrics(service)
    service.run(stop)
    return 0


def _source(kafka: KafkaSettings, inputs: tuple[str, ...] = ()) -> Source:
    """The consumer for ``kafka.client`` (also on the topics the ``inputs`` regular
    expressions match); confluent-kafka is an optional extra."""
    from detector.sources import KafkaSource

    if kafka.client == "kafka-python":
        return KafkaSource(kafka, inputs)
    return _confluent().ConfluentSource(kafka, inputs)


def _sink_type(kafka: KafkaSettings) -> type[TopicSink]:
    """The producer side of ``kafka.client``: dead letters, drift events, ingest."""
    from detector.sources import TopicSink

    if kafka.client == "kafka-python":
        return TopicSink
    return _confluent().ConfluentTopicSink


def _confluent() -> ModuleType:
    """``detector.sources_confluent``, or a ``ConfigError`` naming the extra."""
    try:
        from detector import sources_confluent
    except ModuleNotFoundError as exc:
        if exc.name != "confluent_kafka":
            raise
        raise ConfigError("kafka.client is confluent but confluent-kafka is not installed: "
                          "pip install 'drift-detector[confluent]'") from None
    return sources_confluent


def _serve_metrics(service: Service) -> None:
    """Start the metrics endpoint; an address that cannot be used (a port already taken,
    a host that is not ours, a TLS file that cannot be read) is a ``ConfigError`` naming
    the setting, not a traceback."""
    import ssl

    m = service.settings.metrics
    try:
        service.start_http()
    except OSError as exc:
        # the socket is bound first: these come from the bind (EACCES: a port below 1024)
        address = exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL) or (
            exc.errno == errno.EACCES and 0 < m.port < 1024)
        if isinstance(exc, ssl.SSLError) or (not address and m.tls_certfile is not None):
            raise ConfigError("cannot load the metrics TLS files (metrics.tls_certfile, "
                              "metrics.tls_keyfile, metrics.tls_client_cafile): "
                              f"{exc.strerror or exc}") from None
        if not address:
            raise
        setting = "metrics.host" if exc.errno == errno.EADDRNOTAVAIL else "metrics.port"
        raise ConfigError(f"cannot serve metrics on {m.host}:{m.port}: {exc.strerror} "
                          f"(setting {setting})") from None


def _replay(settings: Settings, files: Sequence[str]) -> int:
    from detector.detections import detection_fields
    from detector.pipeline import Pipeline
    from detector.sources import FileSource

    pipeline = Pipeline(settings)
    detections = []
    started = time.perf_counter()
    events = 0
    for batch in FileSource(files).batches():
        result = pipeline.process(batch, now=time.time())
        detections.extend(result.detections)
        events += len(batch)
    elapsed = time.perf_counter() - started
    summary = {
        "messages": events,
        "seconds": round(elapsed, 3),
        "messages_per_second": round(events / elapsed) if elapsed else None,
        "rejected": {f"{k}/{r}": n for (k, r), n in pipeline.rejected.items() if n},
        "models": {
            name: {"events": state.events, "join": state.join,
                   "versions": {v: {"metrics": {f"{m}/{w}": x for m, w, x in mon.performance.values()}}
                                for v, mon in state.versions.items()}}
            for name, state in pipeline.models.items()},
        "detections": [detection_fields(d) for d in detections],
    }
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0


def _report(settings: Settings, args: argparse.Namespace) -> int:
    """``report`` of files: the replay's pipeline with a recorder, then the page."""
    from pathlib import Path

    from detector.api import Columns, Monitor
    from detector.profile import ProfileError

    if not args.files:
        print("drift-detector: report needs files to replay, or --url of a service",
              file=sys.stderr)
        return 2
    if args.points is not None and args.points < 10:
        print("drift-detector: --points must be at least 10", file=sys.stderr)
        return 2
    columns = None
    if args.model:
        columns = Columns(model=args.model, version=args.version,
                          prediction=args.prediction_column, score=args.score_column,
                          label=args.label_column, id=args.id_column,
                          timestamp=args.timestamp_column, exclude=tuple(args.exclude))
    elif any(Path(f).suffix.lower() in (".csv", ".tsv", ".parquet", ".pq") for f in args.files):
        print("drift-detector: a table (CSV, Parquet) needs --model and --prediction-column",
              file=sys.stderr)
        return 2
    monitor = Monitor(settings, points=args.points,
                      profiles=[args.profile] if args.profile else ())
    started = time.perf_counter()
    try:
        monitor.feed_files(*args.files, columns=columns, fmt=args.format)
    except (OSError, ProfileError) as exc:
        print(f"drift-detector: {exc}", file=sys.stderr)
        return 2
    size = monitor.report(args.output, args.title).stat().st_size
    snap = monitor.snapshot()
    events = sum(sum(m["events"].values()) for m in snap["models"])
    print(f"wrote {args.output}: {size:,} bytes; {events:,} events in "
          f"{time.perf_counter() - started:.1f} s, {snap['detections_total']:,} detections")
    return 0


def _report_url(args: argparse.Namespace) -> int:
    """``report --url``: save the page a running service renders at ``/report``."""
    import base64
    import os
    import ssl
    import urllib.error
    import urllib.request
    from pathlib import Path

    request = urllib.request.Request(args.url.rstrip("/") + "/report")
    if args.user:
        password = os.environ.get("DRIFT_REPORT_PASSWORD")
        if password is None:
            print("drift-detector: --user needs the password in DRIFT_REPORT_PASSWORD",
                  file=sys.stderr)
            return 2
        token = base64.b64encode(f"{args.user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = None
    if args.url.startswith("https:"):
        context = ssl.create_default_context(cafile=args.cafile)
        if args.certfile:
            context.load_cert_chain(args.certfile, args.keyfile)
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as reply:
            body = reply.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip()
        print(f"drift-detector: {args.url}/report answered {exc.code}: {detail or exc.reason}",
              file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"drift-detector: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    out = Path(args.output)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(body)
    tmp.replace(out)
    print(f"wrote {out}: {len(body):,} bytes from {args.url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
