"""Test-wide environment: everything offline and on loopback."""
import os

# No hub access here: loaders must read the local folders the tests build.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Ray started by tests talks over 127.0.0.1 only (read by Ray when first imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Fixtures postgres_url / postgres_db_url: a throwaway Postgres server (unix socket only).
from tests.postgres_server import postgres_db_url, postgres_url  # noqa: E402,F401
# Fixture mlflow_server_uri: a throwaway MLflow tracking server on loopback (one per session).
from tests.mlflow_server import mlflow_server_uri  # noqa: E402,F401
# Fixture ray_local: a local Ray for one test module.
from tests.ray_local import ray_local  # noqa: E402,F401
