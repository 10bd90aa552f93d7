"""Settings: a YAML file plus ``DRIFT_*`` environment overrides, validated once.

``load_settings`` reads both; environment variables win over the file; nested keys
use ``__``::

    DRIFT_KAFKA__BOOTSTRAP_SERVERS=broker:9092 DRIFT_METRICS__PORT=10108

A variable that names no setting is an error, as an unknown key in the file is.
``Settings(...)`` built in code reads no variable: the demo and the tests get
exactly the settings they build.

With no file and no variables every default applies: models and features are
discovered from the stream, capped by ``max_models`` / ``max_features``.

>>> s = Settings()
>>> s.kafka.predictions_topic, s.metrics.port, [d.name for d in s.detectors.feature]
('predictions', 10108, ['adwin', 'cusum', 'jump'])
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from detector import calibration, detectors
from detector.errors import ConfigError

Task = Literal["auto", "classification", "regression"]
MetricName = Literal["accuracy", "precision", "recall", "f1", "roc_auc", "mae", "rmse", "r2"]
CLASSIFICATION_METRICS: tuple[MetricName, ...] = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS: tuple[MetricName, ...] = ("mae", "rmse", "r2")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DetectorSpec(_Section):
    """One detector to run on a stream: River class by ``type``, exported under ``name``."""

    type: detectors.DetectorType
    name: str = ""
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> DetectorSpec:
        if not self.name:
            object.__setattr__(self, "name", self.type)
        try:
            detectors.build(self.type, self.params)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        return self


def _unique_names(specs: tuple[DetectorSpec, ...]) -> tuple[DetectorSpec, ...]:
    names = [s.name for s in specs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"detector names must be unique, repeated: {duplicated}; set `name:`")
    return specs


class DetectorSets(_Section):
    """Online detectors per signal, on standardised values (``jump`` on the values as they
    came); parameters the user leaves
    out follow from ``detection.false_alarm_rate`` (see ``detector.calibration``).
    ``categorical`` runs on the 0/1 share stream of each top category of a
    categorical feature; ``label`` on numeric (e.g. 0/1) labels of joined pairs."""

    feature: tuple[DetectorSpec, ...] = (DetectorSpec(type="adwin"), DetectorSpec(type="cusum"),
                                         DetectorSpec(type="jump"))
    prediction: tuple[DetectorSpec, ...] = (DetectorSpec(type="adwin"),
                                            DetectorSpec(type="cusum"), DetectorSpec(type="jump"))
    error: tuple[DetectorSpec, ...] = (DetectorSpec(type="adwin"), DetectorSpec(type="cusum"))
    categorical: tuple[DetectorSpec, ...] = (DetectorSpec(type="adwin"),)
    label: tuple[DetectorSpec, ...] = (DetectorSpec(type="adwin"),)

    @field_validator("feature", "prediction", "label")
    @classmethod
    def _real_valued(cls, specs: tuple[DetectorSpec, ...]) -> tuple[DetectorSpec, ...]:
        binary = [s.type for s in specs if detectors.is_binary(s.type)]
        if binary:
            raise ValueError(f"{binary} take 0/1 error streams; use them under `error`")
        return _unique_names(specs)

    @field_validator("error", "categorical")
    @classmethod
    def _names(cls, specs: tuple[DetectorSpec, ...]) -> tuple[DetectorSpec, ...]:
        return _unique_names(specs)


class KafkaSettings(_Section):
    client: Literal["kafka-python", "confluent"] = Field("kafka-python", description=(
        "the consumer library: kafka-python (default), or confluent-kafka (librdkafka, "
        "faster; pip install 'drift-detector[confluent]')"))
    bootstrap_servers: str = "localhost:9092"
    group_id: str = "drift-detector"
    client_id: str = "drift-detector"
    predictions_topic: str = "predictions"
    labels_topic: str = "labels"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(6_000, ge=1_000)
    heartbeat_interval_ms: int = Field(2_000, ge=100)
    max_poll_records: int = Field(2_000, ge=1)
    poll_timeout_ms: int = Field(500, ge=10, le=10_000)
    fetch_max_wait_ms: int = Field(500, ge=0, description=(
        "how long the broker may hold a fetch for fetch_min_bytes; some brokers (Tansu) "
        "leave these gaps even with data waiting: 10 then reads several times faster"))
    fetch_min_bytes: int = Field(1, ge=1)
    max_partition_fetch_bytes: int = Field(1_048_576, ge=1024)
    fetch_max_bytes: int = Field(52_428_800, ge=1024)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None = (
        None
    )
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    #: a configured topic that does not exist: ``wait`` (not ready, looked for again
    #: every 10 s) or ``fail`` (exit 1 at start-up); topics are never created by consuming
    missing_topics: Literal["wait", "fail"] = "wait"
    topic_check_seconds: float = Field(10.0, gt=0, description=(
        "how often the topic list is read again: for configured topics that are missing, "
        "and for new topics that the `inputs` patterns match"))

    @model_validator(mode="after")
    def _check(self) -> KafkaSettings:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        needs_password = self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
        if needs_password and (not self.sasl_plain_username or self.sasl_plain_password is None):
            raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs sasl_plain_username and "
                             "sasl_plain_password")
        return self

    @property
    def topics(self) -> tuple[str, str]:
        return self.predictions_topic, self.labels_topic


class MetricsSettings(_Section):
    host: str = "0.0.0.0"
    port: int = Field(10108, ge=0, le=65535)
    detection_hold_seconds: float = Field(300.0, ge=0)
    per_detector: bool = Field(True, description=(
        "one drift_detected / drift_detections_total series per detector of a stream (and "
        "drift_detector_firings_total); false: one per stream, over all its detectors"))
    max_feature_series: int = Field(50_000, ge=0, description=(
        "series of features in one scrape at most; features beyond are left out and counted "
        "in drift_features_dropped"))
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    tls_client_cafile: Path | None = Field(None, description="require client certificates "
                                           "signed by this CA")
    basic_auth_username: str | None = None
    basic_auth_password: SecretStr | None = None

    @model_validator(mode="after")
    def _check(self) -> MetricsSettings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together")
        if self.tls_client_cafile is not None and self.tls_certfile is None:
            raise ValueError("tls_client_cafile needs tls_certfile and tls_keyfile")
        if (self.basic_auth_username is None) != (self.basic_auth_password is None):
            raise ValueError("basic_auth_username and basic_auth_password go together")
        return self


class JoinSettings(_Section):
    """Labels meet predictions here. An entry waits at most ``ttl_seconds`` (service clock)."""

    ttl_seconds: float = Field(12 * 3600.0, gt=0)
    capacity: int = Field(200_000, ge=1)


class DistanceThresholds(_Section):
    """A window counts as drifted when psi, js or ks rise above, or chi2's p-value falls below."""

    psi: float = Field(0.25, gt=0)
    js: float = Field(0.2, gt=0, le=1)
    ks: float = Field(0.15, gt=0, le=1)
    chi2: float = Field(1e-6, gt=0, lt=1)


class ReferenceSettings(_Section):
    """Comparison of recent windows with a reference (a profile, or the warm-up)."""

    enabled: bool = True
    warmup: int = Field(1000, ge=10, description="values that form the reference without a profile")
    window: int = Field(1000, ge=10)
    evaluate_every: int = Field(100, ge=1)
    bins: int = Field(10, ge=2, le=100)
    top_k: int = Field(20, ge=1, le=1000)
    share_streams: int = Field(5, ge=0, le=50, description="top categories with an online detector")
    numeric_methods: tuple[Literal["psi", "js", "ks"], ...] = ("psi", "js", "ks")
    categorical_methods: tuple[Literal["psi", "js", "chi2"], ...] = ("psi", "js", "chi2")
    thresholds: DistanceThresholds = DistanceThresholds()

    @model_validator(mode="after")
    def _check(self) -> ReferenceSettings:
        if self.evaluate_every > self.window:
            raise ValueError("evaluate_every must not exceed window")
        return self


class EstimationSettings(_Section):
    """Performance estimated before the labels arrive (``detector.estimation``)."""

    enabled: bool = True
    warmup: int = Field(1000, ge=10, description=(
        "labelled pairs of a version that fit its score calibrator (loss table) when its "
        "profile has none"))


class QualitySettings(_Section):
    """Data quality checks of the features against the reference (see data_quality.py)."""

    enabled: bool = Field(True, description=(
        "count missing values, out-of-range numbers, unseen categories, type changes and "
        "unannounced features (drift_feature_issues_total)"))
    warmup: int = Field(1000, ge=1, description=(
        "predictions of a version that form the reference without a profile"))
    max_categories: int = Field(1000, ge=1, description=(
        "a warm-up with more distinct categories does not judge unseen ones"))


class DetectionSettings(_Section):
    """How online detectors see their streams and how their parameters are chosen."""

    false_alarm_rate: float = Field(1e-9, gt=0, lt=0.1, description=(
        "false alarms per value per stream on stable data; sets adwin, page_hinkley and "
        "cusum parameters the user leaves out"))
    mean_run_length: float | None = Field(None, gt=10, description="alternative: 1 / rate")
    calibrate: bool = True
    standardize: bool = True
    warmup: int = Field(1000, ge=2, description=(
        "values after which scale and autocorrelation stay fixed (and the location tracks)"))
    min_samples: int = Field(10, ge=3, le=1000, description=(
        "values (effective: fewer when autocorrelated) that only teach the baseline; the "
        "first of them give its robust start (median, MAD)"))
    clip: float = Field(4.0, ge=1.0, description="z-scores are clipped to +-clip")
    cooldown: int = Field(500, ge=0, description=(
        "standardised: a firing this close after the last one, the same way, continues its "
        "episode (a trend); raw values: any firing this close does"))
    period: int = Field(0, ge=0, le=1_000_000, description=(
        "values per cycle (e.g. events per day) for a baseline per phase; 0: no cycle"))
    phases: int = Field(24, ge=1, le=1000, description="phase bins per period")
    track: int = Field(5000, ge=0, description=(
        "after warmup the location follows the values with weight 1/track (0: fixed)"))

    @property
    def rate(self) -> float:
        return 1.0 / self.mean_run_length if self.mean_run_length else self.false_alarm_rate


class CheckpointSettings(_Section):
    """The monitors' state, kept per source partition with the positions it covers, so
    that a restart or a rebalance neither loses nor double counts an event (on by
    default: on a compacted Kafka topic named after the consumer group)."""

    enabled: bool = Field(True, description="keep state; false: a restart starts afresh from "
                          "the group's committed offsets, committed after every batch")
    path: Path | None = Field(None, description="a directory (a volume) instead of the topic")
    topic: str | None = Field(None, description="the compacted state topic (default: "
                              "<kafka.group_id>-state, created if missing)")
    replication_factor: int | None = Field(None, ge=1, description="of the state topic "
                                           "when it is created (default: the broker's)")
    key: SecretStr | None = Field(None, description="optional HMAC key: state is then signed, "
                                  "and unsigned or wrongly signed state is refused")
    interval_seconds: float = Field(10.0, gt=0)
    interval_events: int = Field(100_000, ge=1)
    on_invalid: Literal["fresh", "refuse"] = "fresh"

    @model_validator(mode="after")
    def _check(self) -> CheckpointSettings:
        if self.path is not None and self.topic is not None:
            raise ValueError("set checkpoint.path or checkpoint.topic, not both")
        if self.key is not None and len(self.key.get_secret_value()) < 16:
            raise ValueError("checkpoint.key must have 16 or more characters")
        return self

    def topic_for(self, group_id: str) -> str:
        """The state topic of a consumer group.

        >>> CheckpointSettings().topic_for("drift-detector")
        'drift-detector-state'
        """
        return self.topic or f"{group_id}-state"


class DriftEventSettings(_Section):
    """The retraining hook: one Kafka message per detection (off unless enabled)."""

    enabled: bool = False
    topic: str = "drift-events"


class DeadLetterSettings(_Section):
    """Rejected messages, unchanged, with the reason in headers (off unless enabled)."""

    enabled: bool = False
    topic: str = "drift-dead-letters"


class IngestSettings(_Section):
    """HTTP ingest of CloudEvents (KServe's payload logger) into a Kafka topic, on the
    metrics server's port and behind its TLS and basic auth (off unless enabled)."""

    enabled: bool = False
    path: str = Field("/ingest", pattern=r"^/[A-Za-z0-9._~/-]*$", description=(
        "the path events are POSTed to"))
    topic: str = Field("inference-events", description=(
        "where each event is written, in Kafka binary content mode"))
    max_body_bytes: int = Field(1_000_000, ge=1024, description=(
        "larger request bodies are refused (413); keep the topic's max.message.bytes above "
        "this plus the headers"))
    rate_per_second: float = Field(5000.0, gt=0, description=(
        "events accepted per second on average; more are refused (429 with Retry-After)"))
    burst: int = Field(10_000, ge=1, description="events accepted at once above that rate")
    ack_timeout_seconds: float = Field(10.0, gt=0, le=300, description=(
        "how long a request waits for Kafka's acknowledgements before it is answered 503"))
    hold_seconds: float = Field(5.0, ge=0, description=(
        "after Kafka timed out, requests are answered 503 at once for this long"))

    @field_validator("path")
    @classmethod
    def _own_path(cls, path: str) -> str:
        if path in ("/metrics", "/healthz", "/readyz", "/detections", "/report"):
            raise ValueError(f"{path} is served by the metrics server already")
        return path


class ReportSettings(_Section):
    """The HTML report of the running service (``/report``): a recorder samples each batch
    (values, distances, metrics, detections) in bounded memory. Off by default: it costs
    a few per cent of the engine's CPU."""

    enabled: bool = False
    points: int = Field(400, ge=10, le=10_000, description="points per chart at most")
    max_detections: int = Field(10_000, ge=0, description="detections listed at most")


class ModelSettings(_Section):
    task: Task = "auto"
    features: tuple[str, ...] | None = None
    thresholds: dict[MetricName, float] = Field(default_factory=dict)
    positive_label: str | int | bool = 1
    detectors: DetectorSets | None = None
    profile: Path | None = None
    profiles: dict[str, Path] = Field(default_factory=dict, description="per model version")

    @model_validator(mode="after")
    def _check(self) -> ModelSettings:
        allowed = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}
        if self.task in allowed:
            wrong = sorted(set(self.thresholds) - set(allowed[self.task]))
            if wrong:
                raise ValueError(f"thresholds {wrong} do not apply to task {self.task}")
        return self


InputFormat = Literal["oip", "cloudevents"]


class InputSettings(_Section):
    """Topics a model server writes in its own format, turned into prediction events
    (see ``detector.formats`` and the README's section per server).

    ``format: oip`` reads Open Inference Protocol (V2) requests and responses, JSON or
    protobuf, from the topics that ``requests`` and ``responses`` match;
    ``format: cloudevents`` reads KServe's payload logger events (binary or structured
    mode, V1 or V2 bodies) from the topics that ``topics`` matches. Each is a regular
    expression that must match a whole topic name; a named group ``model`` in it names
    the model."""

    format: InputFormat
    topics: str | None = Field(None, description="cloudevents: topics holding both halves")
    requests: str | None = Field(None, description="oip: topics holding requests")
    responses: str | None = Field(None, description="oip: topics holding responses")
    model: str | None = Field(None, description=(
        "the model's name; default: the topic's `model` group, the event's "
        "inferenceservicename, the response's model_name, the mlserver-model header"))
    version: str | None = Field(None, description=(
        "the model's version; default: the response's model_version"))
    feature_names: tuple[str, ...] | None = Field(None, description=(
        "names of the input columns in order (all input tensors' columns, or a V1 "
        "instance's items); default: a tensor of one column is named after the tensor, "
        "column j of a wider one <tensor>_<j>"))
    prediction_output: str | None = Field(None, description=(
        "the output tensor holding the prediction; default: the first"))
    score_output: str | None = Field(None, description=(
        "the output tensor holding the score, if any (a probability per class: column "
        "score_column)"))
    score_column: int = Field(-1, description="column of a score (or V1 prediction) "
                              "row with several; negative counts from the end")

    @model_validator(mode="after")
    def _check(self) -> InputSettings:
        wanted = ("topics",) if self.format == "cloudevents" else ("requests", "responses")
        other = ("requests", "responses") if self.format == "cloudevents" else ("topics",)
        for key in wanted:
            if getattr(self, key) is None:
                raise ValueError(f"format {self.format} needs {' and '.join(wanted)}")
        for key in other:
            if getattr(self, key) is not None:
                raise ValueError(f"format {self.format} takes {' and '.join(wanted)}, "
                                 f"not {key}")
        for key in wanted:
            try:
                re.compile(getattr(self, key))
            except re.error as exc:
                raise ValueError(f"{key} is not a regular expression: {exc}") from None
        return self

    @property
    def patterns(self) -> tuple[str, ...]:
        """The regular expressions of the topics this input reads."""
        return tuple(p for p in (self.topics, self.requests, self.responses) if p is not None)


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Settings(BaseSettings):
    """Every setting of the service. Frozen: read it, never change it."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFT_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    kafka: KafkaSettings = KafkaSettings()
    metrics: MetricsSettings = MetricsSettings()
    join: JoinSettings = JoinSettings()
    drift_events: DriftEventSettings = DriftEventSettings()
    dead_letter: DeadLetterSettings = DeadLetterSettings()
    ingest: IngestSettings = IngestSettings()
    inputs: tuple[InputSettings, ...] = Field((), description=(
        "model servers' topics read in their own format (OIP, CloudEvents)"))
    input_join: JoinSettings = Field(JoinSettings(ttl_seconds=300.0, capacity=100_000),
                                     description="where a request meets its response")
    checkpoint: CheckpointSettings = CheckpointSettings()
    detectors: DetectorSets = DetectorSets()
    detection: DetectionSettings = DetectionSettings()
    reference: ReferenceSettings = ReferenceSettings()
    estimation: EstimationSettings = EstimationSettings()
    quality: QualitySettings = QualitySettings()
    models: dict[str, ModelSettings] = Field(default_factory=dict)
    discover_models: bool | None = Field(
        None, description="accept models not under `models`; default: only when none is declared"
    )
    max_models: int = Field(100, ge=1)
    max_features: int = Field(200, ge=1)
    max_versions: int = Field(3, ge=1)
    idle_events: int = Field(1000, ge=1, description=(
        "a version (a feature) that received none of the last idle_events events of its "
        "model (version) may make room for a new one"))
    version_idle_seconds: float = Field(600.0, ge=0, description=(
        "or, for versions: this long without events on the service clock"))
    max_classes: int = Field(100, ge=2, description="distinct classes scored per model version")
    max_clock_skew_seconds: float = Field(300.0, ge=0, description=(
        "timestamps further ahead of the service clock are ignored (counted)"))
    max_event_bytes: int = Field(1_048_576, ge=64)
    rolling_window: int = Field(1000, ge=1)
    log: LogSettings = LogSettings()
    report: ReportSettings = ReportSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what the caller passes: settings built in code (the demo's, a test's) are
        # exactly what the code says. load_settings merges the file and DRIFT_* variables.
        return (init_settings,)

    @model_validator(mode="after")
    def _calibrate(self) -> Settings:
        """Fill in the parameters the false-alarm budget sets (explicit ones win), so
        that the effective config shows every detector's real parameters."""
        if not self.detection.calibrate:
            return self
        rate = self.detection.rate
        warmup = self.detection.warmup if self.detection.standardize else None

        def resolve(sets: DetectorSets) -> DetectorSets:
            def spec(s: DetectorSpec) -> DetectorSpec:
                derived = calibration.derive(s.type, rate, warmup)
                return s.model_copy(update={"params": {**derived, **s.params}}) if derived else s
            return sets.model_copy(update={
                name: tuple(spec(s) for s in getattr(sets, name))
                for name in DetectorSets.model_fields})

        object.__setattr__(self, "detectors", resolve(self.detectors))
        object.__setattr__(self, "models", {
            name: m.model_copy(update={"detectors": resolve(m.detectors)}) if m.detectors else m
            for name, m in self.models.items()})
        return self

    @property
    def discovers_models(self) -> bool:
        return self.discover_models if self.discover_models is not None else not self.models

    def state_shape(self) -> dict[str, Any]:
        """The settings a checkpoint's state depends on (its fingerprint)."""
        return self.model_dump(mode="json", include={
            "detectors", "detection", "reference", "estimation", "quality", "join",
            "models",
            "rolling_window", "max_features", "max_versions", "max_classes", "idle_events"})

    @property
    def input_patterns(self) -> tuple[str, ...]:
        """The topic regular expressions of every input (what the source reads too)."""
        return tuple(p for cfg in self.inputs for p in cfg.patterns)

    def model(self, name: str) -> ModelSettings:
        """Settings of one model; discovered models get the defaults."""
        return self.models.get(name) or _DEFAULT_MODEL

    def detectors_for(self, model: str) -> DetectorSets:
        return self.model(model).detectors or self.detectors


_DEFAULT_MODEL = ModelSettings()


def _secret_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()
                   ) -> Iterator[tuple[str, ...]]:
    """Paths of the ``SecretStr`` fields under ``model``, however deeply nested;
    ``*`` stands for any mapping key or sequence index.

    >>> for path in sorted(_secret_fields(Settings)):
    ...     print(".".join(path))
    checkpoint.key
    kafka.sasl_plain_password
    kafka.ssl_password
    metrics.basic_auth_password
    """
    for name, field in model.model_fields.items():
        yield from _secrets_in(field.annotation, (*prefix, name))


def _secrets_in(annotation: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    if isinstance(annotation, type) and issubclass(annotation, SecretStr):
        yield path
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _secret_fields(annotation, path)
    else:  # X | None, dict[str, X], tuple[X, ...], Annotated[X, ...]; Literal's args are values
        origin = get_origin(annotation)
        step = ("*",) if isinstance(origin, type) and issubclass(origin, Collection) else ()
        for arg in get_args(annotation):
            yield from _secrets_in(arg, (*path, *step))


#: every secret setting; a validation error never shows the value it got at one of
#: these paths, nor at a path above one (a section given as a scalar may hold the secret)
SECRET_FIELDS: tuple[tuple[str, ...], ...] = tuple(_secret_fields(Settings))


def _is_secret(loc: tuple[int | str, ...]) -> bool:
    return any(all(part == "*" or part == str(at) for part, at in zip(path, loc))
               for path in SECRET_FIELDS)


def _format(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        # an unknown key may be a misspelt secret: name the key, never echo its value
        hidden = (_is_secret(e["loc"]) or e["type"] == "extra_forbidden"
                  or isinstance(value, dict | list))
        shown = "" if hidden else f" (got {value!r})"
        lines.append(f"{key}: {msg}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


ENV_PREFIX = "DRIFT_"
_NESTED = "__"
#: Kubernetes' service links: for each Service of the namespace whose name starts with
#: "drift" (the shipped drift-detector, say) every container gets SVC_SERVICE_HOST,
#: SVC_SERVICE_PORT[_NAME], SVC_PORT[_10108_TCP[_PROTO|_PORT|_ADDR]] with SVC =
#: DRIFT_DETECTOR. One "_" between words: "__" nests settings.
_SERVICE = re.compile(r"DRIFT(_[A-Z0-9]+)*")
_SERVICE_LINK = re.compile(r"SERVICE_HOST|SERVICE_PORT(_[A-Z0-9]+)*"
                           r"|PORT(_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?")


def _service_links(environ: Mapping[str, str]) -> set[str]:
    """The variables of ``environ`` that Kubernetes' service links made: not settings.
    A link comes with its Service's ``_SERVICE_HOST``, so ``DRIFT_METRICS_PORT`` alone
    is a typo of ``DRIFT_METRICS__PORT``, not a link.

    >>> sorted(_service_links({"DRIFT_DETECTOR_SERVICE_HOST": "10.0.0.1",
    ...     "DRIFT_DETECTOR_PORT_10108_TCP_PORT": "10108", "DRIFT_METRICS_PORT": "9200"}))
    ['DRIFT_DETECTOR_PORT_10108_TCP_PORT', 'DRIFT_DETECTOR_SERVICE_HOST']
    """
    services = {name.removesuffix("_SERVICE_HOST") for name in environ
                if name.endswith("_SERVICE_HOST")
                and _SERVICE.fullmatch(name.removesuffix("_SERVICE_HOST"))}
    return {name for name in environ for svc in services
            if name.startswith(svc + "_") and _SERVICE_LINK.fullmatch(name[len(svc) + 1:])}


def _environment() -> dict[str, Any]:
    """The ``DRIFT_*`` variables as settings data, read as pydantic-settings reads them
    (names in any case, ``__`` for nesting, JSON for lists, mappings and sections).

    Raises ``ConfigError`` naming every variable that addresses no setting (Kubernetes'
    service links aside), and every variable whose setting takes JSON but whose value
    is not JSON, with an example.
    """
    links = _service_links(os.environ)
    problems = [problem for name, value in sorted(os.environ.items())
                if name.upper().startswith(ENV_PREFIX)
                and (problem := _variable_problem(name, value)) is not None
                and name not in links]
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return EnvSettingsSource(Settings)()


def _variable_problem(name: str, value: str) -> str | None:
    """What is wrong with variable ``name`` (a line that names it), or None.

    >>> print(_variable_problem("DRIFT_METRIC__PORT", "1"))
    DRIFT_METRIC__PORT: no such setting (metric); did you mean DRIFT_METRICS__PORT?
    >>> print(_variable_problem("DRIFT_DETECTORS__FEATURE", "adwin"))
    DRIFT_DETECTORS__FEATURE (detectors.feature): expected a JSON list such as ["adwin", "cusum"] (got 'adwin')
    >>> _variable_problem("DRIFT_MODELS__FRAUD__THRESHOLDS", '{"accuracy": 0.9}') is None
    True
    """
    keys = name[len(ENV_PREFIX):].split(_NESTED)
    annotation: Any = Settings
    path: list[str] = []
    for key in keys:
        below = _below(annotation, key.lower())
        if below is None:
            return f"{name}: {_unknown(keys, len(path), annotation)}"
        if any(map(_is_mapping, _members(annotation))) and key not in (key.lower(), key.upper()):
            # pydantic-settings reads names in lower case: "Fraud" would become "fraud"
            return (f"{name}: keys of {'.'.join(path)} are read in lower case from variable "
                    f"names ({key!r} would be {key.lower()!r}); for {key!r} set "
                    f"{ENV_PREFIX}{'__'.join(path).upper()} as JSON")
        annotation = below
        path.append(key.lower())
    if not _takes_json(annotation):
        return None
    try:
        json.loads(value)
    except ValueError:
        kind = "object" if _is_mapping(annotation) or _is_model(annotation) else "list"
        shown = "" if _is_secret(tuple(path)) else f" (got {value!r})"
        return (f"{name} ({'.'.join(path)}): expected a JSON {kind} such as "
                f"{json.dumps(_example(annotation))}{shown}")
    return None


def _unknown(keys: list[str], i: int, annotation: Any) -> str:
    """The message for ``keys[i]``, which names nothing in ``annotation`` (the setting
    that ``keys[:i]`` leads to)."""
    path = [k.lower() for k in keys[:i]]
    where = ".".join((*path, keys[i].lower()))
    if not keys[i]:
        return "no such setting (an empty name between or after '__')"
    if not any(_is_model(t) or _is_mapping(t) for t in _members(annotation)):
        if _takes_json(annotation):
            return (f"no such setting ({where}): {'.'.join(path)} is a list, give it whole "
                    f"as JSON in {ENV_PREFIX}{'__'.join(path).upper()}")
        return f"no such setting ({where}): {'.'.join(path)} has no keys below it"
    known = [n for t in _members(annotation) if _is_model(t) for n in t.model_fields]
    key = keys[i].lower()
    fixes = [[close] for close in difflib.get_close_matches(key, known, n=1)]
    for cut in (m.start() for m in re.finditer("_", key)):
        # one "_" where "__" was meant: DRIFT_METRICS_PORT for DRIFT_METRICS__PORT
        head, tail = key[:cut], key[cut + 1:]
        section = _below(annotation, head)
        if section is not None and any(_is_model(t) for t in _members(section)) \
                and _below(section, tail) is not None:
            fixes.insert(0, [head, tail])
    if fixes:
        fixed = [*keys[:i], *fixes[0], *keys[i + 1:]]
        return f"no such setting ({where}); did you mean {ENV_PREFIX}{'__'.join(fixed).upper()}?"
    return f"no such setting ({where}); known here: {', '.join(known)}"


def _members(annotation: Any) -> tuple[Any, ...]:
    """The types of ``X | Y | None`` other than None; ``(annotation,)`` for others."""
    if get_origin(annotation) in (Union, UnionType):
        return tuple(a for a in get_args(annotation) if a is not type(None))
    return (annotation,)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_mapping(annotation: Any) -> bool:
    origin = get_origin(annotation)
    return isinstance(origin, type) and issubclass(origin, Mapping)


def _is_sequence(annotation: Any) -> bool:
    origin = get_origin(annotation)
    return (isinstance(origin, type) and issubclass(origin, Collection)
            and not issubclass(origin, Mapping | str | bytes))


def _takes_json(annotation: Any) -> bool:
    """Whether a variable for this setting must hold JSON: sections, mappings and lists
    (pydantic-settings decodes those; a plain string could never be valid)."""
    return all(_is_model(t) or _is_mapping(t) or _is_sequence(t)
               for t in _members(annotation))


def _below(annotation: Any, key: str) -> Any | None:
    """What the setting ``key`` under ``annotation`` holds (pydantic-settings'
    ``next_field``: a field of a section, any key of a mapping), or None."""
    for t in _members(annotation):
        if _is_model(t):
            field = t.model_fields.get(key)
            if field is not None:
                return field.annotation
        elif _is_mapping(t) and key:
            return get_args(t)[-1]
    return None


def _example(annotation: Any, i: int = 0) -> Any:
    """A small valid value of ``annotation`` (the ``i``-th of two), for messages."""
    annotation = _members(annotation)[0]
    args = get_args(annotation)
    if get_origin(annotation) is Literal:
        return args[i % len(args)]
    if annotation is DetectorSpec:                       # a detector by its type
        return ("adwin", "cusum")[i % 2]
    if _is_model(annotation):
        name, field = next(iter(annotation.model_fields.items()))
        default = field.get_default(call_default_factory=True)
        simple = isinstance(default, str | int | float) and not isinstance(default, bool)
        return {name: default if simple else _example(field.annotation)}
    if _is_mapping(annotation):
        return {_example(args[0]): _example(args[-1])}
    if _is_sequence(annotation):
        return [_example(args[0], 0), _example(args[0], 1)]
    return {int: 1, float: 0.5, bool: True}.get(annotation, ("name", "other")[i % 2])


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``over``, mappings merged key by key (as pydantic-settings)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            value = _merge(out[key], value)
        out[key] = value
    return out


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read ``path`` (YAML) if given, apply ``DRIFT_*`` variables, validate.

    Raises ``ConfigError`` whose message names each bad key and never shows the
    value given for a secret setting (``SECRET_FIELDS``).
    """
    data: Mapping[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return settings_from(_merge(data, _environment()))


def settings_from(data: Mapping[str, Any]) -> Settings:
    """Validated settings from plain data (what a YAML file holds), and nothing else: no
    ``DRIFT_*`` variable. Raises ``ConfigError`` naming each bad key.

    >>> settings_from({"reference": {"window": 500}}).reference.window
    500
    >>> settings_from({"reference": {"window": 5}})
    Traceback (most recent call last):
    ...
    detector.errors.ConfigError: invalid configuration:
      reference.window: Input should be greater than or equal to 10 (got 5)
    """
    try:
        return Settings(**{str(k): v for k, v in data.items()})  # YAML keys may be numbers
    except ValidationError as exc:
        raise ConfigError(_format(exc)) from None


def effective_config(settings: Settings) -> dict[str, Any]:
    """The settings as plain data, secrets masked, for ``check-config``."""
    return settings.model_dump(mode="json")
