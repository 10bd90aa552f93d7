"""Settings: a YAML file plus ``DRIFT_*`` environment overrides, validated once.

Environment variables win over the file; nested keys use ``__``::

    DRIFT_KAFKA__BOOTSTRAP_SERVERS=broker:9092 DRIFT_METRICS__PORT=9108

With no file and no variables every default applies: models and features are
discovered from the stream, capped by ``max_models`` / ``max_features``.

>>> s = Settings()
>>> s.kafka.predictions_topic, s.metrics.port, [d.name for d in s.detectors.feature]
('predictions', 9108, ['adwin', 'cusum'])
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

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
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

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
    """Online detectors per signal, on standardised values; parameters the user leaves
    out follow from ``detection.false_alarm_rate`` (see ``detector.calibration``).
    ``categorical`` runs on the 0/1 share stream of each top category of a
    categorical feature; ``label`` on numeric (e.g. 0/1) labels of joined pairs."""

    feature: tuple[DetectorSpec, ...] = (DetectorSpec(type="adwin"), DetectorSpec(type="cusum"))
    prediction: tuple[DetectorSpec, ...] = (DetectorSpec(type="adwin"), DetectorSpec(type="cusum"))
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
    port: int = Field(9108, ge=0, le=65535)
    detection_hold_seconds: float = Field(300.0, ge=0)
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


class DetectionSettings(_Section):
    """How online detectors see their streams and how their parameters are chosen."""

    false_alarm_rate: float = Field(1e-9, gt=0, lt=0.1, description=(
        "false alarms per value per stream on stable data; sets adwin, page_hinkley and "
        "cusum parameters the user leaves out"))
    mean_run_length: float | None = Field(None, gt=10, description="alternative: 1 / rate")
    calibrate: bool = True
    standardize: bool = True
    warmup: int = Field(1000, ge=2, description="values after which mean and sd stay fixed")
    min_samples: int = Field(5, ge=3, description="values that only teach the baseline")
    clip: float = Field(5.0, ge=1.0, description="z-scores are clipped to +-clip")
    cooldown: int = Field(500, ge=0, description="firings this close continue an episode")

    @property
    def rate(self) -> float:
        return 1.0 / self.mean_run_length if self.mean_run_length else self.false_alarm_rate


class CheckpointSettings(_Section):
    """Periodic checkpoints of the whole state and its Kafka positions (off without a path)."""

    path: Path | None = None
    topic: str | None = Field(None, description="a compacted Kafka topic instead of a file")
    name: str | None = Field(None, description="this instance's key on the topic "
                             "(default: group id and host name)")
    key: SecretStr | None = Field(None, description="HMAC key that signs checkpoints")
    interval_seconds: float = Field(30.0, gt=0)
    interval_events: int = Field(100_000, ge=1)
    on_invalid: Literal["fresh", "refuse"] = "fresh"

    @model_validator(mode="after")
    def _check(self) -> CheckpointSettings:
        if self.path is not None and self.topic is not None:
            raise ValueError("set checkpoint.path or checkpoint.topic, not both")
        if self.enabled and (self.key is None or len(self.key.get_secret_value()) < 16):
            raise ValueError("checkpoint.key (16+ characters) is required with checkpoint.path "
                             "or checkpoint.topic: checkpoints are signed and unsigned ones "
                             "are refused")
        return self

    @property
    def enabled(self) -> bool:
        return self.path is not None or self.topic is not None


class DriftEventSettings(_Section):
    """The retraining hook: one Kafka message per detection (off unless enabled)."""

    enabled: bool = False
    topic: str = "drift-events"


class DeadLetterSettings(_Section):
    """Rejected messages, unchanged, with the reason in headers (off unless enabled)."""

    enabled: bool = False
    topic: str = "drift-dead-letters"


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
    checkpoint: CheckpointSettings = CheckpointSettings()
    detectors: DetectorSets = DetectorSets()
    detection: DetectionSettings = DetectionSettings()
    reference: ReferenceSettings = ReferenceSettings()
    models: dict[str, ModelSettings] = Field(default_factory=dict)
    discover_models: bool | None = Field(
        None, description="accept models not under `models`; default: only when none is declared"
    )
    max_models: int = Field(100, ge=1)
    max_features: int = Field(200, ge=1)
    max_versions: int = Field(3, ge=1)
    max_event_bytes: int = Field(1_048_576, ge=64)
    rolling_window: int = Field(1000, ge=1)
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment overrides it.
        return env_settings, init_settings

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
            "detectors", "detection", "reference", "join", "models", "rolling_window",
            "max_features", "max_versions"})

    def model(self, name: str) -> ModelSettings:
        """Settings of one model; discovered models get the defaults."""
        return self.models.get(name) or _DEFAULT_MODEL

    def detectors_for(self, model: str) -> DetectorSets:
        return self.model(model).detectors or self.detectors


_DEFAULT_MODEL = ModelSettings()


def _format(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        secret = any(word in key for word in ("password", "secret"))
        shown = "" if secret or isinstance(value, dict | list) else f" (got {value!r})"
        lines.append(f"{key}: {msg}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read ``path`` (YAML) if given, apply ``DRIFT_*`` variables, validate.

    Raises ``ConfigError`` whose message names each bad key.
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
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format(exc)) from None
    except ValueError as exc:  # e.g. a DRIFT_* variable that is not valid JSON
        raise ConfigError(f"invalid configuration: {exc}") from None


def effective_config(settings: Settings) -> dict[str, Any]:
    """The settings as plain data, secrets masked, for ``check-config``."""
    return settings.model_dump(mode="json")
