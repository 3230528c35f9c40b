"""Images through Ray's object store by reference (issue #24 item 2).

Two halves:

- **Actor side** (:func:`resolve_nested`, applied to every role server by actors.ray_actors.remote_class): Ray
  resolves an ``ObjectRef`` passed as a top-level argument, but one inside a list or a dict (a VLM message's
  ``{"type": "image", "image": ref}`` part, a list of generated images for CLIP) arrives as a reference. These are
  awaited here, before the server's method runs, so the servers stay plain classes that take pixel arrays.
- **Driver side** (:class:`ImageRefs`): the images of each optimisation in flight, put into the object store once
  and handed to every role that needs them by reference — the reference image (captioner, CLIP on every scoring
  call, VLM) and the latest generated images (T2I's own return objects, straight to CLIP and the VLM without a
  second upload from the driver). The driver's heap holds references only; the pixels live in the store, bounded
  by the optimisations in flight (each keeps its reference and its latest generation), and are freed when the
  optimisation ends (:meth:`ImageRefs.release`) or, past ``max_owners``, the least recently used one's are
  dropped (a later node then reads the file again and puts it anew: slower, never wrong).

Nothing here is checkpointed: graph state holds paths, never references (a resumed optimisation starts with
no references and reads its files).
"""
from __future__ import annotations

import asyncio
import collections
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class Item:
    """Element ``index`` of the list stored under ``ref`` (a role's one return object holding one image per
    seed): resolved like a reference, to that element."""

    ref: Any
    index: int


def _is_ref(value: Any) -> bool:
    import ray

    return isinstance(value, ray.ObjectRef)


def _collect(value: Any, found: list) -> None:
    if isinstance(value, Item):
        found.append(value.ref)
    elif _is_ref(value):
        found.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect(v, found)
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, found)


def _replace(value: Any, got: dict) -> Any:
    if isinstance(value, Item):
        return got[value.ref][value.index]
    if _is_ref(value):
        return got[value]
    if isinstance(value, list):
        return [_replace(v, got) for v in value]
    if isinstance(value, tuple):
        return tuple(_replace(v, got) for v in value)
    if isinstance(value, dict):
        return {k: _replace(v, got) for k, v in value.items()}
    return value


async def resolve_nested(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``args`` and ``kwargs`` with every ``ObjectRef`` (and :class:`Item`) inside lists, tuples and dicts replaced
    by its value (fetched concurrently; the same reference twice is fetched once). Unchanged when they hold none."""
    found: list = []
    _collect(args, found)
    _collect(kwargs, found)
    if not found:
        return args, kwargs
    unique = list(dict.fromkeys(found))
    values = await asyncio.gather(*unique)
    got = dict(zip(unique, values))
    return _replace(args, got), _replace(kwargs, got)


class ImageRefs:
    """The driver's object-store references of each optimisation in flight, by owner (the image id) and name.

    ``put`` is ``ray.put`` once per (owner, name); ``set_generation`` files one owner's latest generated images
    (references Ray already made: T2I's return objects), replacing the previous ones.
    Thread-safe: nodes put from worker threads.
    """

    def __init__(self, max_owners: int = 64, put: Optional[Callable[[Any], Any]] = None):
        if max_owners < 1:
            raise ValueError("max_owners must be at least 1")
        self.max_owners = max_owners
        self._put = put
        self._owners: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.puts = 0  # images put by the driver (each a copy into the store)
        self.reused = 0  # handed out again without a new copy
        self.dropped_owners = 0  # owners evicted past max_owners (their next use reads the files again)

    def _owner(self, owner: str) -> dict[str, Any]:
        refs = self._owners.get(owner)
        if refs is None:
            refs = self._owners[owner] = {}
            while len(self._owners) > self.max_owners:
                self._owners.popitem(last=False)
                self.dropped_owners += 1
        else:
            self._owners.move_to_end(owner)
        return refs

    def get(self, owner: str, name: str) -> Any:
        """The reference filed under (owner, name), or None."""
        with self._lock:
            ref = self._owners.get(owner, {}).get(name)
            if ref is not None:
                self._owners.move_to_end(owner)
                self.reused += 1
            return ref

    def put(self, owner: str, name: str, image: Any) -> Any:
        """Put ``image`` into the object store under (owner, name) (blocking: call it from a worker thread);
        an existing reference is returned instead of a second copy."""
        with self._lock:
            ref = self._owners.get(owner, {}).get(name)
            if ref is not None:
                self.reused += 1
                return ref
        if self._put is None:
            import ray

            self._put = ray.put
        ref = self._put(image)
        with self._lock:
            self._owner(owner).setdefault(name, ref)
            self.puts += 1
            return self._owners[owner][name]

    def set_generation(self, owner: str, refs_by_name: dict[str, Any]) -> None:
        """Make ``refs_by_name`` the owner's latest generated images, dropping the previous generation's."""
        with self._lock:
            refs = self._owner(owner)
            for name in [n for n in refs if n.startswith(GENERATED)]:
                del refs[name]
            refs.update({GENERATED + name: ref for name, ref in refs_by_name.items()})

    def generated(self, owner: str, name: str) -> Any:
        return self.get(owner, GENERATED + name)

    def release(self, owner: str) -> None:
        """Forget the owner's references (Ray frees the objects once no one else holds them)."""
        with self._lock:
            self._owners.pop(owner, None)

    def stats(self) -> dict:
        with self._lock:
            return {"owners": len(self._owners), "refs": sum(len(r) for r in self._owners.values()),
                    "puts": self.puts, "reused": self.reused, "dropped_owners": self.dropped_owners}


#: Name prefix of an owner's latest generated images (their file paths follow it).
GENERATED = "generated:"
