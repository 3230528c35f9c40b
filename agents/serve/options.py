"""The server's own settings (the models and the agent come from the ArpoConfig file)."""
from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator

from core.config import StrictModel

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class ServeOptions(StrictModel):
    host: str = Field("127.0.0.1", description="Address to listen on; loopback unless another is asked for (with a warning).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port; the chosen one is printed).")
    data_dir: Path = Field(Path("outputs/serve"), description="Uploads, runs, their images and the checkpoint database.")
    batches: list[Path] = Field(default_factory=list, description="Output folders of batch jobs the page may open (read-only).")
    max_running: int = Field(4, ge=1, le=4096, description="Optimisations running at once; further uploads wait in a queue.")
    max_upload_bytes: int = Field(32 << 20, ge=1, le=1 << 34, description="Largest upload accepted (and never above job.max_file_bytes).")
    max_steps_limit: int = Field(50, ge=1, le=1000, description="The most iterations a page user may ask for.")
    max_seeds: int = Field(8, ge=1, le=64, description="The most seeds a page user may ask for.")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("is empty")
        return v

    def is_loopback(self) -> bool:
        if self.host in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
