"""``thermolog broker init``: a production Mosquitto configuration with TLS, passwords and per-device ACLs.

It writes, into one directory: a CA, a server certificate, two password files (hashed: devices, services), an
ACL, a ready-to-run ``mosquitto.conf`` and one credentials file per user (``credentials/<user>.env``, mode 0600)
holding the ``THERMOLOG_MQTT_*`` settings that user needs. Devices are users named after their device id:

- device X may publish only ``thermostats/X/telemetry|status|state|cmd/ack`` and subscribe only ``thermostats/X/cmd``;
- ``ingest`` may only read (``thermostats/#``, ``edge/#``);
- ``app`` may only publish commands (``thermostats/+/cmd``), its refusals (``thermostats/+/cmd/refused``) and alert
  events (``thermostats/+/alert``, also used by ``thermolog automation``),
  and read acks, state and status;
- ``edge`` (the IoT Edge modules) reads telemetry, acks, state and status, publishes commands and host metrics.

Devices and services log in on separate TLS listeners (``per_listener_settings``), each with its own password
file. On the devices' listener Mosquitto replaces the client id by the user name (``use_username_as_clientid``),
so no device can take over another client's session; the services get unguessable client ids in their
credentials. Anonymous clients are refused. Secrets are never printed or logged.
``deploy/mosquitto/mosquitto.conf`` is this module's rendering for ``--out /etc/mosquitto/thermolog`` and a test
keeps the two identical.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import ipaddress
import logging
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from thermolog import contract
from thermolog.broker_conf import DEFAULT_BROKER_USER, BrokerLayout, render_conf

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Create a production Mosquitto configuration: CA, server certificate, one credential per device, "
    "users for ingest and app, password file, ACL and mosquitto.conf (TLS only, no anonymous access)."
)

INGEST_USER = "ingest"
APP_USER = "app"
EDGE_USER = "edge"
"""The IoT Edge modules: ``thermostat_reader`` (telemetry to edgeHub, commands from direct methods) and the host
metrics on ``edge/{host}/system``."""
SERVICE_USERS = (INGEST_USER, APP_USER, EDGE_USER)
HA_DISCOVERY_PREFIX = "homeassistant"
"""Home Assistant's MQTT discovery prefix (the firmware's ``home_assistant.prefix`` default)."""
DEVICE_WRITE_KINDS = (contract.TELEMETRY, contract.STATUS, contract.STATE, contract.CMD_ACK)

PBKDF2_ITERATIONS = 101
"""mosquitto_passwd's own default for ``$7$`` (PBKDF2-SHA512) hashes in Mosquitto 2.0."""
PBKDF2_SALT_BYTES = 12
SECRET_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


@dataclass
class BrokerPlan:
    """What to create: devices, hostnames, listener and options."""

    out: Path
    devices: list[str]
    hostnames: list[str] = field(default_factory=list)
    port: int = 8883
    bind: str = "0.0.0.0"
    service_port: int = 8884
    service_bind: str | None = None
    """Address of the services' listener (None: the same as ``bind``)."""
    topic_prefix: str = contract.DEFAULT_TOPIC_PREFIX
    client_certs: bool = False
    days: int = 825
    persistence: bool = True
    broker_user: str = DEFAULT_BROKER_USER


# --- passwords -------------------------------------------------------------------------------------------------


def new_password() -> str:
    """A random password (32 URL-safe characters, ~190 bits)."""
    return secrets.token_urlsafe(24)


def mosquitto_hash(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """The ``$7$`` PBKDF2-SHA512 hash Mosquitto 2.x reads from a password file."""
    salt = salt if salt is not None else os.urandom(PBKDF2_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_mosquitto_hash(password: str, hashed: str) -> bool:
    """True if ``hashed`` (a ``$7$`` entry) is the hash of ``password``."""
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
    except ValueError:
        return False
    if kind != "7":
        return False
    again = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), base64.b64decode(salt), int(iterations))
    return secrets.compare_digest(again, base64.b64decode(digest))


def write_password_file(path: Path, users: dict[str, str], use_binary: bool = True) -> str:
    """Write ``user:hash`` lines for ``users`` (name -> password); returns which tool hashed them.

    With ``mosquitto_passwd`` on PATH the file is written in plain text (0600) and hashed in place with
    ``mosquitto_passwd -U``, so no password ever appears on a command line; otherwise the hashes are computed here.
    """
    binary = shutil.which("mosquitto_passwd") if use_binary else None
    if binary:
        _write_secret(path, "".join(f"{user}:{password}\n" for user, password in users.items()))
        done = subprocess.run([binary, "-U", str(path)], capture_output=True, text=True, check=False)
        if done.returncode == 0 and all(":$" in line for line in path.read_text().splitlines()):
            os.chmod(path, SECRET_MODE)
            return "mosquitto_passwd"
        log.warning("mosquitto_passwd -U failed (%s); hashing in Python instead", done.stderr.strip()[:200])
    _write_secret(path, "".join(f"{user}:{mosquitto_hash(password)}\n" for user, password in users.items()))
    return "python"


# --- ACL and configuration -----------------------------------------------------------------------------------


PROFILE_READ = ("iot/+/status", "zigbee2mqtt/#")
"""Topics of the built-in device profiles at their default roots (docs/devices.md): ingest and the app read them."""
PROFILE_WRITE = ("iot/+/cmd", "zigbee2mqtt/+/set", "zigbee2mqtt/+/+/set", "zigbee2mqtt/+/+/+/set")
"""Where the app sends those devices' commands (Zigbee2MQTT friendly names of up to three levels)."""


def render_acl(devices: list[str], prefix: str = contract.DEFAULT_TOPIC_PREFIX) -> str:
    """The ACL: explicit blocks per user (no ``pattern`` lines, which would apply to the service users too)."""
    lines = [
        "# thermolog broker ACL (generated by `thermolog broker init`). Anything not listed is denied.",
        "# Anonymous clients get nothing (and the listener refuses them anyway).",
        "",
        f"user {INGEST_USER}",
        f"topic read {prefix}/#",
        f"topic read {contract.EDGE_PREFIX}/#",
        *[f"topic read {topic}" for topic in PROFILE_READ],
        "",
        f"user {APP_USER}",
        f"topic write {prefix}/+/{contract.CMD}",
        f"topic write {prefix}/+/{contract.CMD_REFUSED}",
        f"topic write {prefix}/+/{contract.ALERT}",
        f"topic write {prefix}/+/{contract.CMD_AUDIT}",
        f"topic write {prefix}/+/{contract.SCHEDULE}",
        f"topic write {prefix}/+/{contract.SCHEDULE_POINTS}",
        f"topic read {prefix}/+/{contract.CMD_ACK}",
        f"topic read {prefix}/+/{contract.STATE}",
        f"topic read {prefix}/+/{contract.STATUS}",
        *[f"topic read {topic}" for topic in PROFILE_READ],
        *[f"topic write {topic}" for topic in PROFILE_WRITE],
        "",
        f"user {EDGE_USER}",
        f"topic read {prefix}/+/{contract.TELEMETRY}",
        f"topic write {prefix}/+/{contract.CMD}",
        f"topic read {prefix}/+/{contract.CMD_ACK}",
        f"topic read {prefix}/+/{contract.STATE}",
        f"topic read {prefix}/+/{contract.STATUS}",
        f"topic write {contract.EDGE_PREFIX}/+/{contract.SYSTEM}",
    ]
    for device in devices:
        lines += ["", f"user {device}"]
        lines += [f"topic write {prefix}/{device}/{kind}" for kind in DEVICE_WRITE_KINDS]
        lines.append(f"topic read {prefix}/{device}/{contract.CMD}")
        lines.append(f"topic read {prefix}/{device}/{contract.SCHEDULE_POINTS}")
        # The firmware's optional Home Assistant discovery: its own retained entity config, nothing else there.
        lines.append(f"topic write {HA_DISCOVERY_PREFIX}/climate/{device}/config")
    return "\n".join(lines) + "\n"


# --- certificates --------------------------------------------------------------------------------------------


def _private_key():  # noqa: ANN202 - cryptography's key type
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str):  # noqa: ANN202
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "thermolog"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _pem_key(key) -> bytes:  # noqa: ANN001
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert) -> bytes:  # noqa: ANN001
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(days: int = 3650):  # noqa: ANN201
    """A self-signed CA certificate and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = _private_key()
    now = dt.datetime.now(dt.UTC)
    name = _name("thermolog broker CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_cert(ca_cert, ca_key, common_name: str, days: int, server_names: list[str] | None = None):  # noqa: ANN001, ANN201
    """A leaf certificate signed by the CA: a server one when ``server_names`` is given, else a client one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = _private_key()
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server_names is not None:
        sans: list[x509.GeneralName] = []
        for host in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256()), key


# --- files ---------------------------------------------------------------------------------------------------


def _write_secret(path: Path, text: str | bytes) -> None:
    """Create ``path`` with mode 0600 from the start (never world-readable, not even briefly)."""
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_MODE)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, SECRET_MODE)  # O_CREAT's mode does not apply to a file that already existed


def _hand_to_broker_user(layout: BrokerLayout, user: str) -> str:
    """Give the broker's own secrets (server key, password file) and its data directory to ``user``.

    Only possible (and only needed) when running as root; the CA key and the clients' credentials stay with root.
    Returns the owner the broker's files have.
    """
    import pwd

    try:
        account = pwd.getpwnam(user)
    except KeyError:
        log.warning("user %r does not exist: create it or pass --broker-user; files stay with the current user", user)
        return pwd.getpwuid(os.getuid()).pw_name
    if os.getuid() != 0:
        return pwd.getpwuid(os.getuid()).pw_name
    for path in (layout.server_key, layout.password_file, layout.service_password_file, layout.data_dir,
                 layout.acl_file):
        os.chown(path, account.pw_uid, account.pw_gid)
    return user


def new_client_id(user: str) -> str:
    """An unguessable client id for a service (``thermolog-ingest-<64 random bits>``)."""
    return f"thermolog-{user}-{secrets.token_hex(8)}"


def _credentials_text(plan: BrokerPlan, layout: BrokerLayout, user: str, password: str) -> str:
    host = (plan.hostnames or ["127.0.0.1"])[0]
    service = user in SERVICE_USERS
    lines = [
        f"# MQTT credentials of {user!r} for thermolog (secret: keep mode 0600).",
        f"THERMOLOG_MQTT_URL=mqtts://{host}:{plan.service_port if service else plan.port}",
        f"THERMOLOG_MQTT_USERNAME={user}",
        f"THERMOLOG_MQTT_PASSWORD={password}",
        f"THERMOLOG_MQTT_CA_FILE={layout.ca_cert}",
        f"THERMOLOG_TOPIC_PREFIX={plan.topic_prefix}",
    ]
    if user == INGEST_USER:
        lines.append(f"THERMOLOG_INGEST_CLIENT_ID={new_client_id(user)}")
    elif service:
        lines.append(f"THERMOLOG_MQTT_CLIENT_ID_PREFIX={new_client_id(user)}")
    if plan.client_certs:
        lines += [f"THERMOLOG_MQTT_CLIENT_CERT={layout.client_cert(user)}",
                  f"THERMOLOG_MQTT_CLIENT_KEY={layout.client_key(user)}"]
    return "\n".join(lines) + "\n"


def read_credentials(path: Path) -> dict[str, str]:
    """Parse a ``credentials/<user>.env`` file into a dict of settings variables."""
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


def check_plan(plan: BrokerPlan) -> None:
    """Raise ValueError for a plan that would produce an unsafe or broken configuration."""
    if not plan.devices:
        raise ValueError("give at least one device id with --devices")
    for device in plan.devices:
        try:
            contract.check_device_id(device)
        except contract.ContractError as exc:
            raise ValueError(exc.reason) from None
        if device in SERVICE_USERS:
            raise ValueError(f"device id {device!r} collides with the service user of the same name")
    if len(set(plan.devices)) != len(plan.devices):
        raise ValueError("device ids must be unique")
    contract.check_device_id(plan.topic_prefix)
    for port in (plan.port, plan.service_port):
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is not between 1 and 65535")
    if plan.port == plan.service_port:
        raise ValueError(f"the device port and the service port must differ (both {plan.port})")


def init_broker(plan: BrokerPlan, force: bool = False, use_passwd_binary: bool = True) -> dict[str, object]:
    """Create every file of ``plan`` below ``plan.out``; returns a summary without any secret."""
    check_plan(plan)
    layout = BrokerLayout(plan.out.resolve())
    if layout.conf.exists() and not force:
        raise FileExistsError(f"{layout.conf} exists: use --force to replace the whole configuration")
    layout.root.mkdir(parents=True, exist_ok=True)
    for private in (layout.credentials_dir, layout.data_dir) + ((layout.certs_dir,) if plan.client_certs else ()):
        private.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        os.chmod(private, PRIVATE_DIR_MODE)

    ca_cert, ca_key = make_ca()
    layout.ca_cert.write_bytes(_pem_cert(ca_cert))
    from cryptography.hazmat.primitives.serialization import Encoding

    layout.ca_der.write_bytes(ca_cert.public_bytes(Encoding.DER))
    _write_secret(layout.ca_key, _pem_key(ca_key))
    server_names = list(dict.fromkeys(["localhost", "127.0.0.1", *plan.hostnames]))
    server_cert, server_key = issue_cert(ca_cert, ca_key, server_names[-1] if plan.hostnames else "localhost",
                                         plan.days, server_names)
    layout.server_cert.write_bytes(_pem_cert(server_cert))
    _write_secret(layout.server_key, _pem_key(server_key))

    users = {user: new_password() for user in (*SERVICE_USERS, *plan.devices)}
    hashed_by = write_password_file(layout.password_file, {d: users[d] for d in plan.devices},
                                    use_binary=use_passwd_binary)
    write_password_file(layout.service_password_file, {u: users[u] for u in SERVICE_USERS},
                        use_binary=use_passwd_binary)
    for user, password in users.items():
        if plan.client_certs:
            cert, key = issue_cert(ca_cert, ca_key, user, plan.days)
            layout.client_cert(user).write_bytes(_pem_cert(cert))
            _write_secret(layout.client_key(user), _pem_key(key))
        _write_secret(layout.credentials(user), _credentials_text(plan, layout, user, password))

    layout.acl_file.write_text(render_acl(plan.devices, plan.topic_prefix))
    layout.conf.write_text(
        render_conf(layout, plan.port, plan.bind, plan.client_certs, plan.persistence, plan.broker_user,
                    plan.service_port, plan.service_bind, len(plan.devices))
    )
    owner = _hand_to_broker_user(layout, plan.broker_user)
    log.info("broker configuration for %d devices written to %s (passwords hashed by %s)",
             len(plan.devices), layout.root, hashed_by)
    return {
        "root": layout.root,
        "conf": layout.conf,
        "users": list(users),
        "server_names": server_names,
        "hashed_by": hashed_by,
        "owner": owner,
        "layout": layout,
    }


# --- CLI -----------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``thermolog broker``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = sub.add_parser("init", help="create CA, certificates, users, ACL and mosquitto.conf in --out")
    init.add_argument("--out", type=Path, required=True, help="directory to create (e.g. /etc/mosquitto/thermolog)")
    init.add_argument("--devices", required=True, help="comma-separated device ids, e.g. esp32c3-01,esp32c3-02")
    init.add_argument("--hostnames", default="",
                      help="extra comma-separated names/IPs for the server certificate (localhost and 127.0.0.1 "
                      "are always included); the first is used in the credentials' THERMOLOG_MQTT_URL")
    init.add_argument("--port", type=int, default=8883, help="TLS listener port (default 8883)")
    init.add_argument("--bind", default="0.0.0.0", help="address the listeners bind to (default 0.0.0.0)")
    init.add_argument("--service-port", type=int, default=8884,
                      help="TLS listener port of the services: ingest, app, edge (default 8884)")
    init.add_argument("--service-bind", default=None,
                      help="address the services' listener binds to (default: --bind), e.g. 127.0.0.1 when every "
                      "service runs on the broker's host")
    init.add_argument("--topic-prefix", default=contract.DEFAULT_TOPIC_PREFIX,
                      help="first topic level (must match THERMOLOG_TOPIC_PREFIX)")
    init.add_argument("--client-certs", action="store_true",
                      help="also issue a client certificate per user and require one on connect (mutual TLS)")
    init.add_argument("--days", type=int, default=825, help="validity of server and client certificates (days)")
    init.add_argument("--broker-user", default=DEFAULT_BROKER_USER,
                      help="account Mosquitto runs as; when run as root its key, passwords and data are given to it "
                      "(default mosquitto; use root only for throw-away test brokers)")
    init.add_argument("--no-persistence", action="store_true", help="do not keep sessions across broker restarts")
    init.add_argument("--force", action="store_true", help="replace an existing configuration in --out")


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def run(args: argparse.Namespace) -> int:
    """Run ``thermolog broker ACTION``; prints what was created (never a secret)."""
    plan = BrokerPlan(
        out=args.out, devices=_split(args.devices), hostnames=_split(args.hostnames), port=args.port,
        bind=args.bind, service_port=args.service_port, service_bind=args.service_bind,
        topic_prefix=args.topic_prefix, client_certs=args.client_certs, days=args.days,
        persistence=not args.no_persistence, broker_user=args.broker_user,
    )
    try:
        summary = init_broker(plan, force=args.force)
    except (ValueError, FileExistsError) as exc:
        print(f"thermolog broker init: {exc}")
        return 2
    layout: BrokerLayout = summary["layout"]  # type: ignore[assignment]
    print(f"Created a TLS-only Mosquitto configuration in {layout.root}:")
    print(f"  {layout.conf.name:<16} devices on {plan.bind}:{plan.port} (client id = user name), services on "
          f"{plan.service_bind or plan.bind}:{plan.service_port}; TLS only, anonymous refused")
    print(f"  {layout.ca_cert.name:<16} CA certificate to give every client ({layout.ca_der.name}: the same in DER, "
          "for the firmware)")
    print(f"  {layout.ca_key.name:<16} CA key (0600): keep offline once devices are provisioned")
    print(f"  {layout.server_cert.name:<16} server certificate for {', '.join(summary['server_names'])}")
    print(f"  {layout.password_file.name:<16} hashed passwords ({summary['hashed_by']}) of the "
          f"{len(plan.devices)} devices; {layout.service_password_file.name} those of the services")
    print(f"  {layout.acl_file.name:<16} per-device topics; ingest read-only; app sends commands only; "
          "edge bridges to IoT Edge")
    print(f"  (server.key, both password files, acl and data/ are owned by {summary['owner']}, the broker's account)")
    print(f"  credentials/     one <user>.env per user (0600): {', '.join(summary['users'])}")
    if plan.client_certs:
        print("  clients/         one client certificate and key per user (mutual TLS required)")
    print("\nStart the broker:")
    print(f"  mosquitto -c {layout.conf}")
    print("Run a service with its credentials, e.g.:")
    print(f"  set -a; . {layout.credentials(INGEST_USER)}; set +a; thermolog ingest")
    return 0
