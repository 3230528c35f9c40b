"""actors.object_refs without Ray actors: nested references resolved, the driver's per-optimisation shelf."""
import asyncio

import numpy as np
import pytest

from actors.object_refs import GENERATED, ImageRefs, Item, resolve_nested


class FakeRef:
    """Stands in for a ray.ObjectRef in the shelf's own tests (the shelf never looks inside one)."""


def shelf(max_owners=2):
    made = []

    def put(image):
        made.append(image)
        return FakeRef()

    return ImageRefs(max_owners=max_owners, put=put), made


def test_a_reference_is_put_once_per_owner_and_name():
    refs, made = shelf()
    image = np.zeros((4, 4, 3), np.uint8)
    first = refs.put("a", "reference:x.png", image)
    assert refs.put("a", "reference:x.png", image) is first and refs.get("a", "reference:x.png") is first
    other = refs.put("b", "reference:x.png", image)  # another optimisation: its own object
    assert other is not first and len(made) == 2
    assert refs.stats() == {"owners": 2, "refs": 2, "puts": 2, "reused": 2, "dropped_owners": 0}


def test_only_the_latest_generation_is_kept_and_release_forgets_an_owner():
    refs, _ = shelf()
    ref = refs.put("a", "reference:r.png", np.zeros((1, 1, 3), np.uint8))
    refs.set_generation("a", {"iter_00/00_seed0.png": FakeRef()})
    newer = FakeRef()
    refs.set_generation("a", {"iter_01/00_seed0.png": newer})
    assert refs.generated("a", "iter_00/00_seed0.png") is None  # the previous generation's object is let go
    assert refs.generated("a", "iter_01/00_seed0.png") is newer
    assert refs.get("a", "reference:r.png") is ref  # the reference stays for the whole optimisation
    assert sorted(n for n in refs._owners["a"]) == [GENERATED + "iter_01/00_seed0.png", "reference:r.png"]
    refs.release("a")
    assert refs.stats()["owners"] == 0 and refs.get("a", "reference:r.png") is None
    refs.release("never-there")  # an image that failed before putting anything


def test_past_max_owners_the_least_recently_used_is_dropped():
    refs, _ = shelf(max_owners=2)
    img = np.zeros((1, 1, 3), np.uint8)
    refs.put("a", "r", img)
    refs.put("b", "r", img)
    refs.get("a", "r")  # a used again: b is now the oldest
    refs.put("c", "r", img)
    assert refs.get("b", "r") is None and refs.get("a", "r") is not None and refs.get("c", "r") is not None
    assert refs.stats()["dropped_owners"] == 1
    with pytest.raises(ValueError):
        ImageRefs(max_owners=0)


def test_resolve_nested_leaves_arguments_without_references_alone():
    args, kwargs = (["a", {"b": 1}],), {"c": (2, 3)}
    assert asyncio.run(resolve_nested(args, kwargs)) == (args, kwargs)


@pytest.mark.ray
def test_resolve_nested_replaces_references_and_items(ray_local):
    ray = ray_local
    a, b = np.full((2, 2, 3), 1, np.uint8), np.full((2, 2, 3), 2, np.uint8)
    ra, pair = ray.put(a), ray.put([a, b])
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image", "image": ra}]}]

    async def run():
        return await resolve_nested(([ra, Item(pair, 1)], messages), {"extra": (ra,)})

    (images, msgs), kwargs = asyncio.run(run())
    assert np.array_equal(images[0], a) and np.array_equal(images[1], b)
    assert np.array_equal(msgs[0]["content"][1]["image"], a) and msgs[0]["content"][0] == {"type": "text", "text": "hi"}
    assert np.array_equal(kwargs["extra"][0], a) and isinstance(kwargs["extra"], tuple)
