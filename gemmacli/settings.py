"""Where gemmacli keeps things, read once from the environment.

The one place that reads `GEMMACLI_*` variables; Hugging Face's own variables (HF_HOME, HF_TOKEN,
HF_HUB_OFFLINE) are left to huggingface_hub, which reads them itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    home: Path  # GEMMACLI_HOME: imported models and the assembled demo files live here
    catalog_file: Path | None = None  # GEMMACLI_CATALOG: extra catalog entries (TOML)

    @property
    def models_dir(self) -> Path:
        """Imported models (GGUF, CTranslate2, demo packages) as ready-to-load HF folders."""
        return self.home / "models"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Paths:
        env = os.environ if environ is None else environ
        if home := env.get("GEMMACLI_HOME"):
            root = Path(home)
        else:
            root = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gemmacli"
        catalog = env.get("GEMMACLI_CATALOG")
        return cls(home=root.expanduser(), catalog_file=Path(catalog).expanduser() if catalog else None)


@dataclass(frozen=True)
class ObjectStoreEnv:
    """Where s3:// and gs:// requests go; credentials stay with botocore and google-auth, which read their own."""

    s3_endpoint_url: str | None = None  # GEMMACLI_S3_ENDPOINT_URL, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
    gcs_emulator_host: str | None = None  # STORAGE_EMULATOR_HOST: a local GCS emulator, used without credentials

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ObjectStoreEnv:
        env = os.environ if environ is None else environ
        endpoint = env.get("GEMMACLI_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        return cls(s3_endpoint_url=endpoint or None, gcs_emulator_host=env.get("STORAGE_EMULATOR_HOST") or None)
