"""The lake with its data on Azure Blob Storage (az://), against Azurite: flushes land as Parquet blobs under the
data path and readers read them back through the same query functions."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
from azure.storage.blob import BlobServiceClient

from ingest.parse import parse_records
from ingest.sinks.lake import LakeSink
from tests.azurite_support import azurite
from tests.lake_support import fresh_database, lake_env
from tests.thermolog.test_lake import PREFIX, _readings, _records
from thermolog import lake, queries, reader
from thermolog.settings import get_settings

pytestmark = pytest.mark.slow  # seconds per test: outside the fast loop (docs/testing.md)


def test_an_az_data_path_stores_parquet_blobs_and_reads_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with fresh_database() as conninfo, azurite(tmp_path / "azurite") as blob_conn:
        BlobServiceClient.from_connection_string(blob_conn).create_container("thermolog")
        env = lake_env(conninfo, "az://thermolog/lake/", lake_azure_connection_string=blob_conn)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        lake.close_shared()
        try:
            settings = get_settings()
            sink = LakeSink(settings, "azure-worker")
            readings = _readings(random.Random(5), 3000)
            for start in range(0, len(readings), 1000):
                records = _records(readings[start:start + 1000], offset=start)
                sink.write(parse_records(records, PREFIX), records, {}, expected=sink.committed_position())
            sink.close()
            container = BlobServiceClient.from_connection_string(blob_conn).get_container_client("thermolog")
            blobs = [blob.name for blob in container.list_blobs(name_starts_with="lake/")]
            assert any(name.startswith("lake/main/telemetry/") and name.endswith(".parquet") for name in blobs), blobs
            distinct = len({(topic, orjson.loads(payload)["timestamp"]) for topic, payload in readings})
            assert reader.query("SELECT count(*) AS n FROM telemetry")["n"][0] == distinct
            assert set(queries.devices()) == {"dev-1", "dev-2", "dev-3"}
        finally:
            lake.close_shared()
            get_settings.cache_clear()
