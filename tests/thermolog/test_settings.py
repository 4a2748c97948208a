"""Settings: secrets never shown, and every documented setting is read by some code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from thermolog.settings import MASK, Settings, mask_url, masked

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("thermolog", "ingest", "app", "edge_modules", "simulator")
PASSWORD = "hunter2-Zq9"


@pytest.mark.parametrize(("url", "shown"), [
    (f"mqtts://ingest:{PASSWORD}@broker.example:8883", f"mqtts://ingest:{MASK}@broker.example:8883"),
    (f"mqtt://:{PASSWORD}@127.0.0.1:1883", f"mqtt://:{MASK}@127.0.0.1:1883"),
    (f"mqtts://user:{PASSWORD}@host", f"mqtts://user:{MASK}@host"),
    ("mqtt://user@host:1883", "mqtt://user@host:1883"),
    ("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1883"),
    (f"https://a:{PASSWORD}@idp.example/path?x=1", f"https://a:{MASK}@idp.example/path?x=1"),
])
def test_mask_url_hides_only_the_password(url: str, shown: str) -> None:
    """The user-info's password is masked; user, host, port and path stay readable."""
    assert mask_url(url) == shown


def test_masked_covers_every_secret_field_and_url_user_info() -> None:
    """Secret-named settings are masked whatever their value; URL settings lose only their password."""
    assert masked("mqtt_password", PASSWORD) == MASK
    assert masked("entra_client_secret", PASSWORD) == MASK
    assert masked("eventhub_connection_string", f"Endpoint=sb://x/;SharedAccessKey={PASSWORD}") == MASK
    assert PASSWORD not in masked("mqtt_url", f"mqtts://u:{PASSWORD}@h:8883")
    assert masked("mqtt_password", None) is None
    assert masked("app_port", 8501) == 8501


def test_settings_repr_masks_secrets() -> None:
    """A settings object in a log line or traceback shows no secret."""
    settings = Settings(mqtt_url=f"mqtts://ingest:{PASSWORD}@h:8883", mqtt_password=PASSWORD,
                        entra_client_secret=PASSWORD)
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings)


def test_settings_command_masks_the_password_in_the_broker_url(tmp_path: Path) -> None:
    """``thermolog settings`` prints the broker URL without its password (it used to print it in clear)."""
    env = {**os.environ, "THERMOLOG_MQTT_URL": f"mqtts://ingest:{PASSWORD}@broker.example:8883",
           "THERMOLOG_MQTT_PASSWORD": PASSWORD, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "thermolog.cli", "settings"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=True)
    assert PASSWORD not in done.stdout + done.stderr
    assert f"THERMOLOG_MQTT_URL=mqtts://ingest:{MASK}@broker.example:8883" in done.stdout
    assert f"THERMOLOG_MQTT_PASSWORD={MASK}" in done.stdout


def test_secret_words_are_defined_once() -> None:
    """The list of words that make a setting secret exists in one place only (``thermolog.settings``)."""
    pattern = re.compile(r"""["']connection_string["']""")
    holders = [path.relative_to(ROOT).as_posix() for folder in CODE_DIRS for path in (ROOT / folder).rglob("*.py")
               if pattern.search(path.read_text(encoding="utf-8"))]
    assert holders == ["thermolog/settings.py"]


def _code_outside_settings() -> str:
    """All code, without the settings' declarations and validators (which name a field without reading it)."""
    texts = []
    for folder in CODE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            lines = path.read_text(encoding="utf-8").splitlines()
            if path == ROOT / "thermolog" / "settings.py":
                lines = [line for line in lines if "field_validator(" not in line]
            texts.append("\n".join(lines))
    return "\n".join(texts)


def test_every_documented_setting_is_read_outside_its_declaration() -> None:
    """Each settings field is used somewhere other than thermolog/settings.py, as an attribute (``.name``), a
    keyword or a key; a documented setting that nothing reads fails here."""
    code = _code_outside_settings()
    unread = [name for name in Settings.model_fields
              if not re.search(rf"""(\.{name}\b|\b{name}=|["']{name}["'])""", code)]
    assert unread == []
