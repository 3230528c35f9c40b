"""The server's own settings (the models and the agent come from the ArpoConfig file), and the Host check.

The Host check is what stops DNS rebinding: a page on ``evil.example`` whose name the attacker points
at this server's address reaches it with ``Host: evil.example``. So a request is served only when its
Host names the address the server listens on (in any spelling: ``[::1]``, ``[0:0:0:0:0:0:0:1]``), a
loopback name when the server listens on loopback, or a name given with ``--allowed-host``. Listening
on every address (``0.0.0.0``, ``::``) the server cannot know its own names: any IP literal is
accepted (an attacker cannot make a browser's origin an IP address it controls by rebinding), and
names only when allowed.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Optional

from pydantic import Field, field_validator

from core.config import StrictModel

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class ServeOptions(StrictModel):
    host: str = Field("127.0.0.1", description="Address to listen on; loopback unless another is asked for (with a warning).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port; the chosen one is printed).")
    data_dir: Path = Field(Path("outputs/serve"), description="Uploads, runs, their images and the checkpoint database.")
    batches: list[Path] = Field(default_factory=list, description="Output folders of batch jobs the page may open (read-only).")
    max_running: int = Field(4, ge=1, le=4096, description="Optimisations running at once; further uploads wait in a queue.")
    max_queued: int = Field(64, ge=0, le=1 << 16, description="Uploads waiting for a slot at most; one more is answered 429.")
    max_upload_bytes: int = Field(32 << 20, ge=1, le=1 << 34, description="Largest upload accepted (and never above job.max_file_bytes).")
    max_upload_pixels: int = Field(4096 * 4096, ge=1, le=1 << 31,
                                   description="Most pixels (width × height, read from the header before decoding) an "
                                               "upload may have (and never above job.max_image_pixels).")
    max_set_images: int = Field(16, ge=1, le=256, description="The most images one upload may hold as a set (one prompt for "
                                                               "them all, as the batch job's --group-by folder); together "
                                                               "within max_upload_bytes.")
    max_decodes: int = Field(2, ge=1, le=64, description="Uploads decoded at once; more wait (each decode holds its pixels).")
    max_steps_limit: int = Field(50, ge=1, le=1000, description="The most iterations a page user may ask for.")
    max_seeds: int = Field(8, ge=1, le=64, description="The most seeds a page user may ask for.")
    max_graphs: int = Field(8, ge=1, le=256, description="Compiled agent graphs kept (one per framework, steps and seeds "
                                                         "asked for); the least recently used is dropped.")
    allowed_hosts: list[str] = Field(default_factory=list,
                                     description="Other names the page may be reached by (e.g. behind a reverse proxy); "
                                                 "the Host header must name one of these or the bound address.")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("is empty")
        return v

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed(cls, v: list[str]) -> list[str]:
        out = []
        for name in v:
            name = name.strip().lower().rstrip(".")
            if not name or any(c in name for c in "/:@ \t"):
                raise ValueError(f"{name!r} is not a host name (give the name alone, without scheme or port)")
            out.append(name)
        return out

    def is_loopback(self) -> bool:
        if self.host in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def host_allowed(self, host_header: str) -> bool:
        """Whether a request whose Host header is ``host_header`` may be served (see the module docstring)."""
        name = host_name(host_header)
        if name is None:
            return False
        bound = _ip(self.host)
        asked = _ip(name)
        if asked is not None:
            if bound is None:  # listening on a name (e.g. localhost): its loopback addresses
                return self.is_loopback() and asked.is_loopback
            return bound.is_unspecified or asked == bound
        if name in self.allowed_hosts:
            return True
        if name == "localhost":
            return self.is_loopback() or (bound is not None and bound.is_unspecified)
        return bound is None and name == self.host.lower().rstrip(".")


def host_name(header: str) -> Optional[str]:
    """The host of a Host header without its port, lower case; IPv6 without brackets; None when malformed."""
    host = header.strip().lower()
    if not host or any(c in host for c in "/@ \t\\"):
        return None
    if host.startswith("["):
        end = host.find("]")
        if end == -1 or (host[end + 1:] and not (host[end + 1] == ":" and host[end + 2:].isdigit())):
            return None
        return host[1:end] or None
    if host.count(":") == 1:
        host, port = host.split(":")
        if not port.isdigit():
            return None
    elif ":" in host:  # a bare IPv6 address is not a valid Host header
        return None
    return host.rstrip(".") or None


def _ip(text: str) -> "Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]":
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
