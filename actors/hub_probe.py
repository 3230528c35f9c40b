"""Ask the model hub one question with a short deadline: does this repository have this file?

huggingface_hub's own download retries a failed connection for ~20 s per file and reports an
unreachable hub with ``LocalEntryNotFoundError``, a subclass of ``EntryNotFoundError`` — the
error that also means "the repository has no such file". A planner that must answer in seconds
on a cluster without egress asks here first: one HEAD request, no retries, and an answer that
keeps "the hub said no such file" apart from "the hub could not be asked". An endpoint found
unreachable is remembered for the process, so a plan of five models waits once, not five times.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

#: Seconds to wait for the hub's answer (connect and read) before calling it unreachable.
HUB_TIMEOUT_S = 4.0

Verdict = Literal["found", "missing", "refused", "unreachable"]

# endpoint -> why it could not be asked; an unreachable endpoint stays so for this process
_UNREACHABLE: dict[str, str] = {}


@dataclass(frozen=True)
class HubAnswer:
    """``found``: the file exists; ``missing``: the hub answered that the repository has no such file;
    ``refused``: the hub answered but will not say (unknown or gated repository, no permission);
    ``unreachable``: no answer from the hub (DNS, refused connection, timeout, a proxy's refusal)."""
    verdict: Verdict
    detail: str = ""


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def ask_hub(repo_id: str, filename: str, *, timeout_s: Optional[float] = None,
            hub: Optional[str] = None) -> HubAnswer:
    """One HEAD request for ``filename`` in model repository ``repo_id`` at ``hub`` (default: HF_ENDPOINT),
    answered within ``timeout_s`` (default: HUB_TIMEOUT_S)."""
    timeout_s = HUB_TIMEOUT_S if timeout_s is None else timeout_s
    from urllib.parse import quote

    import httpx
    from huggingface_hub.utils import build_hf_headers

    hub = (hub or endpoint()).rstrip("/")
    if hub in _UNREACHABLE:
        return HubAnswer("unreachable", _UNREACHABLE[hub])
    # The hub's resolve URL, built here: huggingface_hub's template is fixed when it is imported.
    url = f"{hub}/{repo_id}/resolve/main/{quote(filename)}"
    try:
        # Redirects are not followed: a 3xx from the hub (a renamed repository, a file kept on the CDN)
        # already says the file exists, and the CDN may be blocked where the hub is not.
        resp = httpx.head(url, headers=build_hf_headers(), timeout=timeout_s, follow_redirects=False)
    except httpx.HTTPError as exc:  # DNS failure, refused connection, timeout, proxy error
        return _unreachable(hub, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else 'no answer'}"
                            f" (within {timeout_s:g} s)")
    code = resp.headers.get("X-Error-Code", "")
    if resp.status_code < 400:
        return HubAnswer("found")
    if code == "EntryNotFound":
        return HubAnswer("missing", f"{repo_id} has no {filename}")
    if code in ("RepoNotFound", "GatedRepo", "RevisionNotFound") or resp.status_code == 401:
        return HubAnswer("refused", f"HTTP {resp.status_code} {code or resp.reason_phrase}".strip())
    # An answer without the hub's error code is not the hub's answer: a proxy's or firewall's refusal
    # page (403, 407, 502, ...). The hub cannot be asked through it.
    return _unreachable(hub, f"HTTP {resp.status_code} {resp.reason_phrase} from {hub} without the hub's error code "
                             f"(a proxy or firewall?)")


def _unreachable(hub: str, why: str) -> HubAnswer:
    _UNREACHABLE[hub] = why
    return HubAnswer("unreachable", why)


def forget_unreachable() -> None:
    """Ask every endpoint again (a long-lived process whose network came back; tests)."""
    _UNREACHABLE.clear()
