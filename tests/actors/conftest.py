"""Offline model kit fixtures: each tiny model is built once per test session into a temp folder."""
import pytest


@pytest.fixture(scope="session")
def kit_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("offline_kit")


@pytest.fixture(scope="session")
def t2i_section(kit_dir) -> dict:
    from actors.offline_kit import t2i

    return t2i.build(kit_dir, seed=0)


@pytest.fixture(scope="session")
def clip_section(kit_dir) -> dict:
    from actors.offline_kit import clip

    return clip.build(kit_dir, seed=0)


@pytest.fixture(scope="session")
def captioner_section(kit_dir) -> dict:
    from actors.offline_kit import captioner

    return captioner.build(kit_dir, seed=0)


@pytest.fixture(scope="session")
def t2i_target_sections(kit_dir) -> dict:
    """The SDXL, SD3.5, FLUX.1 and PixArt-α twins (actors/offline_kit/t2i_targets.py), built once."""
    from actors.offline_kit import t2i_targets

    out = kit_dir / "t2i_targets"
    return {target: t2i_targets.build(out, target, seed=0) for target in t2i_targets.TARGETS}
