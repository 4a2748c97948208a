"""The one settings object: environment variables ``THERMOLOG_*``, an optional ``.env`` and ``thermolog.toml``.

Every setting is declared here once with its type, default and a one-line description; docs/settings.md's table
is generated from this class (``thermolog settings --markdown``) and a test checks that it is up to date.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "THERMOLOG_"
TOML_FILE = "thermolog.toml"
SECRET_FIELD_WORDS = ("password", "secret", "connection_string", "notify_urls")
"""A setting whose name contains one of these is a secret: masked in repr, logs and `thermolog settings` (Apprise
URLs carry passwords and webhook tokens)."""
MASK = "********"


def mask_url(url: str) -> str:
    """``url`` with the password of its user-info replaced by ``MASK`` (``mqtts://u:pw@h`` -> ``mqtts://u:***@h``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK  # unparseable: it might hold anything
    if "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    if ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def masked(name: str, value: Any) -> Any:
    """The value of setting ``name`` as it may be shown: secrets masked, URL passwords masked, the rest as is."""
    if value and any(word in name for word in SECRET_FIELD_WORDS):
        return MASK
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return value


def default_journal_dir(db_path: Path) -> Path:
    """The journal folder a database gets unless one is set: beside it, named after it (``x.duckdb``: ``x.journal``)."""
    return db_path.with_name(f"{db_path.stem}.journal")


class Settings(BaseSettings):
    """All thermolog settings. Environment wins over ``.env``, which wins over ``thermolog.toml``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        toml_file=TOML_FILE,
        extra="ignore",
        validate_default=True,
    )

    # --- MQTT -------------------------------------------------------------------------------------
    mqtt_url: str = Field(
        "",
        description="Broker URL, e.g. mqtt://127.0.0.1:1883 or mqtts://user:pass@host:8883. "
        "Empty: `thermolog demo` starts an embedded broker on 127.0.0.1 (port 1883, or a free one if taken).",
    )
    mqtt_ca_file: Path | None = Field(None, description="CA bundle that signs the broker's certificate (mqtts).")
    mqtt_client_cert: Path | None = Field(None, description="Client certificate for mutual TLS (optional).")
    mqtt_client_key: Path | None = Field(None, description="Private key of the client certificate (optional).")
    mqtt_username: str | None = Field(None, description="Broker user name (overrides the one in the URL).")
    mqtt_password: str | None = Field(None, description="Broker password (overrides the one in the URL).")
    topic_prefix: str = Field("thermostats", description="First topic level of every thermostat topic.")
    mqtt_keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive in seconds.")
    ingest_client_id: str = Field(
        "thermolog-ingest", description="Stable client id of the ingest worker (persistent session); `broker init` "
        "writes an unguessable one into the ingest credentials."
    )
    mqtt_client_id_prefix: str = Field(
        "thermolog", description="Start of the client ids the app (commands) and the edge module connect with; "
        "`broker init` writes an unguessable one into the app and edge credentials."
    )

    # --- Storage ----------------------------------------------------------------------------------
    db_path: Path = Field(Path("data/thermolog.duckdb"), description="DuckDB database file.")
    journal_dir: Path | None = Field(
        None, description="Directory of the ingest journal segments (empty: beside the database, named after it: "
        "data/thermolog.journal for data/thermolog.duckdb). A journal serves one database only; ingest refuses "
        "to start with a journal that belongs to another."
    )
    journal_segment_bytes: int = Field(
        16 * 1024 * 1024, ge=64 * 1024, description="Size at which the journal starts a new segment file (bytes)."
    )
    journal_fsync_interval_s: float = Field(
        0.2,
        ge=0,
        description="How often the journal is fsynced (s); 0 fsyncs every record. Process crashes lose nothing "
        "either way; this bounds loss on power failure.",
    )
    journal_resume_free_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="When the journal's disk fills, ingest stops receiving (acknowledging nothing it could not "
        "journal) and resumes by itself once this many bytes are free there.",
    )
    flush_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often journal records are flushed to DuckDB while messages keep coming "
        "(s). Each flush has a fixed cost: at 20,000 msg/s, 0.5 took a quarter more of the flusher's CPU."
    )
    flush_quiet_s: float = Field(
        0.05,
        ge=0,
        le=60,
        description="Flush before the interval once records wait and none arrived for this long (s): the end of a "
        "burst or a lone reading is stored at once. At most one such early flush per interval; 0 turns them off.",
    )
    flush_max_records: int = Field(50_000, ge=1, description="Most records moved into DuckDB in one transaction.")
    rejected_payload_max_bytes: int = Field(
        16 * 1024, ge=0, description="Rejected payloads are stored cut to this many bytes (their size is kept)."
    )
    clock_max_ahead_s: float = Field(
        3600.0, ge=0, description="Readings stamped more than this many seconds after they were received are "
        "rejected (device clock wrong; 0: no check). Older readings are kept; ones before 2020 are rejected."
    )
    reader_retry_s: float = Field(
        5.0, ge=0, description="How long readers retry opening the database while the writer holds it (s)."
    )
    raw_retention_days: int = Field(
        0, ge=0, description="Raw readings stamped more than this many days ago are deleted by the ingest worker, "
        "in batches, and later ones that old are rejected (0 keeps everything; the 1-minute and 1-hour rollups "
        "always stay)."
    )

    # --- Lake (several ingest workers; thermolog/lake.py) --------------------------------------------
    lake_catalog: str = Field(
        "", description="DuckLake metadata catalog, e.g. `postgres:dbname=thermolog host=db user=thermolog`. Empty: "
        "the local DuckDB file (THERMOLOG_DB_PATH), one ingest worker."
    )
    lake_data_path: str = Field(
        "", description="Where the lake's Parquet files live: a local directory, `az://container/path`, "
        "`abfss://...` or `s3://bucket/path` (required with THERMOLOG_LAKE_CATALOG)."
    )
    lake_postgres_password: str | None = Field(
        None, description="Password of the catalog's PostgreSQL user (or put it in PGPASSWORD / ~/.pgpass)."
    )
    lake_azure_connection_string: str | None = Field(
        None, description="Azure Storage connection string for an `az://` / `abfss://` data path (empty: the "
        "azure extension's credential chain)."
    )
    lake_s3_key_id: str | None = Field(None, description="S3 access key id for an `s3://` data path.")
    lake_s3_secret: str | None = Field(None, description="S3 secret access key for an `s3://` data path.")
    lake_s3_region: str = Field("", description="S3 region for an `s3://` data path (empty: the SDK default).")
    lake_s3_endpoint: str = Field(
        "", description="S3-compatible endpoint host:port (empty: AWS); plain HTTP when it starts with `http://`."
    )
    lake_worker_id: str = Field(
        "", description="This ingest worker's name in the lake (its journal position is stored under it). Empty: "
        "host name and journal directory."
    )
    lake_mqtt_slots: int = Field(
        8, ge=1, le=1024, description="MQTT worker slots: persistent sessions `{ingest_client_id}-slot-N` the lake's "
        "ingest workers share through leases (keep it the same on every worker; at least the number of workers)."
    )
    lake_snapshot_retention_h: float = Field(
        24.0, ge=0, description="`thermolog lake maintain` expires lake snapshots older than this (hours) and deletes "
        "the files only they used; time travel reaches back this far."
    )
    lake_maintain_interval_h: float = Field(
        6.0, ge=0, description="How often `thermolog automation` runs `thermolog lake maintain` on the lake (hours; "
        "0: never, run it yourself)."
    )
    lake_lease_s: float = Field(
        20.0, ge=2, le=600, description="A worker slot whose lease is not renewed for this long is taken over by "
        "another worker (s); leases are renewed every third of it."
    )

    # --- Commands ---------------------------------------------------------------------------------
    setpoint_min_c: float = Field(5.0, description="Lowest target temperature accepted (°C).")
    setpoint_max_c: float = Field(35.0, description="Highest target temperature accepted (°C).")
    setpoint_step_c: float = Field(0.5, gt=0, description="Target temperatures must be a multiple of this (°C).")
    command_timeout_s: float = Field(10.0, gt=0, le=300, description="How long to wait for a device's ack (s).")
    command_transport: str = Field("mqtt", description="How the app sends commands: `mqtt` or `iothub`.")
    command_rate_limit_per_min: int = Field(
        10, ge=0, description="Most commands one user may send in any 60 s (0: no limit); more are refused."
    )

    # --- Other kinds of thermostats (docs/devices.md) --------------------------------------------------
    original_topic_prefix: str = Field(
        "iot", description="Topic root of thermostats running the original firmware (`iot/<id>/status`, "
        "`iot/<id>/cmd`); empty: not ingested."
    )
    zigbee2mqtt_base_topic: str = Field(
        "zigbee2mqtt", description="Zigbee2MQTT base topic; its thermostats and radiator valves are ingested and "
        "take commands. Empty: not ingested."
    )
    device_profiles: list[dict[str, Any]] = Field(
        default_factory=list, description="Your own MQTT thermostat profiles (`[[device_profiles]]` tables in "
        "thermolog.toml; see docs/devices.md)."
    )

    # --- Azure IoT Hub / IoT Edge -----------------------------------------------------------------
    iothub_connection_string: str = Field(
        "", description="IoT Hub service connection string (policy with *service connect*) for the `iothub` "
        "command transport."
    )
    iothub_edge_device_id: str = Field(
        "", description="IoT Edge device whose `thermostat_reader` module receives `setTargetTemp` (iothub transport)."
    )
    iothub_module_id: str = Field("thermostat_reader", description="Module that handles `setTargetTemp`.")
    iothub_ca_file: Path | None = Field(
        None, description="CA bundle to verify IoT Hub's HTTPS certificate (default: the system's CAs)."
    )
    eventhub_connection_string: str = Field(
        "", description="Event Hub-compatible connection string of the IoT Hub built-in endpoint (`EntityPath=` "
        "included); set it to ingest from IoT Hub."
    )
    eventhub_consumer_group: str = Field("$Default", description="Consumer group the Event Hubs ingest reads with.")
    iothub_allowed_edge_devices: str = Field(
        "", description="Comma-separated IoT Edge device ids whose modules may send readings and host samples through "
        "IoT Hub; messages from other edge devices' modules are rejected. Empty: only "
        "`THERMOLOG_IOTHUB_EDGE_DEVICE_ID` (none when that is empty too); `*`: any edge device."
    )
    edge_system_interval_s: float = Field(
        10.0, ge=1, le=86400, description="Seconds between host samples of the `system_reader` edge module (twin "
        "`interval_s` overrides)."
    )
    edge_forward_interval_s: float = Field(
        0.0, ge=0, le=86400, description="Least seconds between two readings of one thermostat that "
        "`thermostat_reader` forwards (0: every reading; twin `interval_s` overrides)."
    )

    # --- App --------------------------------------------------------------------------------------
    app_host: str = Field("127.0.0.1", description="Address the Streamlit app binds to.")
    app_port: int = Field(8501, ge=1, le=65535, description="Port of the Streamlit app.")
    app_session_ttl_s: int = Field(
        120, ge=0, le=86400, description="Seconds the app keeps a closed browser tab's session (widget choices) "
        "for a reconnect; Streamlit drops the session after that."
    )
    display_timezone: str = Field("UTC", description="Default display time zone (IANA name) in the app.")
    stale_after_s: float = Field(120.0, gt=0, description="A device silent this long is shown as stale (s).")
    max_chart_points: int = Field(
        1000, ge=10, le=20000, description="Most points per series sent to a chart (1,000: about one per pixel of "
        "a full-width chart; each bucket keeps its min and max)."
    )
    live_refresh_s: float = Field(5.0, ge=1, le=3600, description="How often the Live and Health pages refresh (s).")
    export_batch_rows: int = Field(
        100_000, ge=1000, description="Rows per chunk when exporting (bounds memory; one progress step per chunk)."
    )

    # --- Alerts -----------------------------------------------------------------------------------
    alert_offline_min: float = Field(
        10.0, gt=0, description="Alert when a device has been offline or silent longer than this (minutes)."
    )
    alert_temp_low_c: float = Field(10.0, description="Alert when a device's temperature is below this (°C).")
    alert_temp_high_c: float = Field(30.0, description="Alert when a device's temperature is above this (°C).")
    alert_heating_no_rise_min: float = Field(
        30.0, gt=0, description="Alert when heating has been ON this long without the temperature rising (minutes)."
    )
    alert_heating_min_rise_c: float = Field(
        0.2, ge=0, description="Smallest rise over that window that counts as rising (°C)."
    )
    notify_urls: str = Field(
        "", description="Where `thermolog automation` sends alert notices: comma-separated Apprise URLs "
        "(mailto://, json://host:port/path, ntfy://, slack://, msteams://, ...); empty: history only."
    )
    alert_cooldown_min: float = Field(
        30.0, ge=0, description="After a notice about a device and rule, further notices about it wait this long "
        "(minutes); one still active afterwards is sent then."
    )
    alert_check_interval_s: float = Field(
        30.0, ge=1, le=3600, description="How often `thermolog automation` evaluates the alert rules and re-reads "
        "the schedules it follows for devices that cannot (s)."
    )

    # --- Sign-in (Microsoft Entra ID through MSAL) --------------------------------------------------
    entra_tenant_id: str = Field(
        "", description="Entra tenant id or domain; gives the authority https://login.microsoftonline.com/{tenant}."
    )
    entra_authority: str = Field(
        "", description="OpenID Connect authority URL (overrides the tenant id), e.g. https://idp.example/tenant."
    )
    entra_client_id: str = Field("", description="Application (client) id of the app registration. Empty: local mode.")
    entra_client_secret: str | None = Field(None, description="Client secret of the app registration.")
    entra_redirect_uri: str = Field(
        "", description="Redirect URI registered for the app (empty: http://{app_host}:{app_port}/)."
    )
    entra_logout_url: str = Field(
        "", description="Identity-provider sign-out URL (empty: end_session_endpoint of its discovery document)."
    )
    entra_ca_bundle: Path | None = Field(
        None, description="CA bundle that signs the identity provider's certificate (empty: the system default)."
    )
    entra_role_viewer: str = Field("Thermostat.Viewer", description="App role (token `roles` claim) that may look.")
    entra_role_operator: str = Field(
        "Thermostat.Operator", description="App role (token `roles` claim) that may also send commands."
    )
    entra_flow_ttl_s: float = Field(
        600.0, gt=0, le=3600, description="How long a started sign-in may take before it is refused (s)."
    )
    entra_allow_multi_tenant: bool = Field(
        False, description="Accept a multi-tenant authority (common, organizations): any tenant's accounts may sign in."
    )
    entra_session_ttl_s: float = Field(
        8 * 3600.0, gt=0, le=7 * 86400, description="How long a sign-in lasts in a browser (reloads, new tabs) (s)."
    )
    entra_role_recheck_s: float = Field(
        300.0, ge=10, le=3600, description="How often signed-in roles are asked again (s); always before a command."
    )
    app_allow_insecure_bind: bool = Field(
        False, description="Allow the app without sign-in to bind to an address other than 127.0.0.1 (unsafe)."
    )

    # --- Simulator --------------------------------------------------------------------------------
    sim_devices: int = Field(3, ge=1, le=10000, description="Simulated thermostats started by `demo`/`simulate`.")
    sim_interval_s: float = Field(5.0, gt=0, description="Seconds between simulated readings (simulated time).")
    sim_ha_discovery: bool = Field(
        False, description="Simulated thermostats publish Home Assistant MQTT discovery (`thermolog demo` turns it "
        "on)."
    )
    ha_discovery_prefix: str = Field("homeassistant", description="Home Assistant's MQTT discovery prefix.")

    @field_validator("mqtt_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value and urlparse(value).scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError("THERMOLOG_MQTT_URL must start with mqtt:// or mqtts://, e.g. mqtt://127.0.0.1:1883")
        return value

    @field_validator("device_profiles")
    @classmethod
    def _check_profiles(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from thermolog.profiles import load_profiles  # profiles import the contract, not settings: no cycle

        load_profiles("", "", value)  # raises ValueError naming the profile and the key
        return value

    @field_validator("command_transport")
    @classmethod
    def _check_transport(cls, value: str) -> str:
        if value not in ("mqtt", "iothub"):
            raise ValueError("THERMOLOG_COMMAND_TRANSPORT must be 'mqtt' or 'iothub'")
        return value

    @model_validator(mode="after")
    def _journal_beside_database(self) -> Settings:
        if self.journal_dir is None:
            self.journal_dir = default_journal_dir(self.db_path)
        return self

    @model_validator(mode="after")
    def _check_setpoints(self) -> Settings:
        if self.setpoint_min_c >= self.setpoint_max_c:
            raise ValueError(
                f"THERMOLOG_SETPOINT_MIN_C ({self.setpoint_min_c}) must be below "
                f"THERMOLOG_SETPOINT_MAX_C ({self.setpoint_max_c})"
            )
        return self

    @model_validator(mode="after")
    def _check_lake(self) -> Settings:
        if self.lake_catalog and not self.lake_data_path:
            raise ValueError("THERMOLOG_LAKE_CATALOG is set: set THERMOLOG_LAKE_DATA_PATH too (a directory, az://, "
                             "abfss:// or s3:// path for the lake's Parquet files)")
        return self

    def __repr_args__(self):  # noqa: ANN204 - pydantic's signature
        """Mask secrets in repr/str, so a settings object in a log line or traceback shows no password."""
        for name, value in super().__repr_args__():
            yield name, masked(name, value) if name else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, dotenv_settings, TomlConfigSettingsSource(settings_cls))

    def mqtt_endpoint(self) -> MqttEndpoint:
        """The broker to connect to (defaults to 127.0.0.1:1883 when ``mqtt_url`` is empty)."""
        return MqttEndpoint.from_settings(self)


class MqttEndpoint:
    """Host, port, TLS and credentials parsed from the MQTT settings."""

    def __init__(self, host: str, port: int, tls: bool, username: str | None, password: str | None,
                 ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.username, self.password = username, password
        self.ca_file, self.cert_file, self.key_file = ca_file, cert_file, key_file

    @classmethod
    def from_settings(cls, settings: Settings) -> MqttEndpoint:
        url = urlparse(settings.mqtt_url or "mqtt://127.0.0.1:1883")
        tls = url.scheme in ("mqtts", "ssl")
        return cls(
            host=url.hostname or "127.0.0.1",
            port=url.port or (8883 if tls else 1883),
            tls=tls,
            username=settings.mqtt_username or url.username,
            password=settings.mqtt_password or url.password,
            ca_file=settings.mqtt_ca_file,
            cert_file=settings.mqtt_client_cert,
            key_file=settings.mqtt_client_key,
        )

    def __repr__(self) -> str:  # never print the password
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


def settings_markdown() -> str:
    """A Markdown table of every setting with its environment variable, default and description."""
    rows = ["| variable | default | description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "" if default is None else str(default)
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | `{shown}` | {field.description} |")
    return "\n".join(rows) + "\n"
