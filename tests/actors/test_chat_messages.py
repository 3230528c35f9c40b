"""Message validation and conversion, sampling overrides and the per-row seeded sampler (no model)."""
import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from actors.chat.base import resolve_sampling
from actors.chat.messages import (all_images, normalize_messages, shrink_to, to_openai_messages,
                                  to_template_conversation)
from actors.chat.seeded_sampling import SeededRowSampler, top_p_filter
from actors.config import SamplingConfig

IMG = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)


def test_string_and_part_content_normalise():
    msgs = normalize_messages(
        [{"role": "system", "content": "be brief"},
         {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image", "image": IMG}, {"type": "text", "text": "b"}]}],
        allow_images=True)
    assert [m.role for m in msgs] == ["system", "user"]
    assert msgs[1].text == "a\nb"
    assert len(all_images(msgs)) == 1 and all_images(msgs)[0] is IMG


@pytest.mark.parametrize("messages, fragment", [
    ([], "non-empty list"),
    ("hello", "non-empty list"),
    ([{"role": "robot", "content": "x"}], "messages[0]: role must be one of"),
    ([{"role": "user", "content": 3}], "messages[0]: content must be a string"),
    ([{"role": "user", "content": []}], "messages[0]: content must be a string"),
    ([{"role": "user", "content": "ok"}, {"role": "user", "content": [{"type": "audio"}]}], "messages[1].content[0]: unknown content part type 'audio'"),
    ([{"role": "user", "content": [{"type": "text", "text": 5}]}], "messages[0].content[0]: a text part needs a string"),
    ([{"role": "user", "content": [{"type": "image", "image": IMG.astype(np.float32)}]}], "uint8 array of shape (H, W, 3)"),
    ([{"role": "user", "content": [{"type": "image", "image": IMG[..., 0]}]}], "got dtype uint8 shape (4, 6)"),
    ([{"role": "user", "content": [{"type": "image", "image": "cat.png"}]}], "got str"),
])
def test_bad_messages_name_the_place_and_cause(messages, fragment):
    with pytest.raises(ValueError) as err:
        normalize_messages(messages, allow_images=True)
    assert fragment in str(err.value)


def test_text_role_rejects_images():
    with pytest.raises(ValueError, match=r"messages\[0\].content\[1\]: this role takes text only"):
        normalize_messages([{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image", "image": IMG}]}],
                           allow_images=False)


def test_image_size_shrinks_longer_side_only_when_larger():
    big = np.zeros((100, 50, 3), np.uint8)
    assert shrink_to(big, 40).shape == (40, 20, 3)
    assert shrink_to(IMG, 40) is IMG
    msgs = normalize_messages([{"role": "user", "content": [{"type": "image", "image": big}]}], allow_images=True, image_size=20)
    assert all_images(msgs)[0].shape == (20, 10, 3)


def test_template_conversation_text_vs_vision():
    msgs = normalize_messages([{"role": "user", "content": [{"type": "image", "image": IMG}, {"type": "text", "text": "hi"}]}],
                              allow_images=True)
    assert to_template_conversation(msgs, vision=True) == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    text_msgs = normalize_messages([{"role": "user", "content": "hi"}], allow_images=False)
    assert to_template_conversation(text_msgs, vision=False) == [{"role": "user", "content": "hi"}]


def test_openai_messages_carry_png_data_urls():
    msgs = normalize_messages([{"role": "system", "content": "s"},
                               {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image", "image": IMG}]}],
                              allow_images=True)
    out = to_openai_messages(msgs)
    assert out[0] == {"role": "system", "content": "s"}
    text_part, image_part = out[1]["content"]
    assert text_part == {"type": "text", "text": "look"}
    url = image_part["image_url"]["url"]
    assert image_part["type"] == "image_url" and url.startswith("data:image/png;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    np.testing.assert_array_equal(decoded, IMG)  # PNG is lossless


def test_sampling_overrides_validate():
    base = SamplingConfig(max_new_tokens=10, temperature=0.5, seed=1)
    assert resolve_sampling(base, None) is base
    assert resolve_sampling(base, {"temperature": 0, "seed": 7}).model_dump() == {**base.model_dump(), "temperature": 0, "seed": 7}
    with pytest.raises(ValueError, match="sampling override 'temprature': unknown key"):
        resolve_sampling(base, {"temprature": 1.0})
    with pytest.raises(ValueError, match="sampling override 'top_p'"):
        resolve_sampling(base, {"top_p": 2.0})


def test_top_p_keeps_smallest_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = torch.isfinite(top_p_filter(logits, 0.7))
    assert kept.tolist() == [True, True, False, False]
    assert torch.isfinite(top_p_filter(logits, 0.01)).tolist() == [True, False, False, False]
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_seeded_sampler_draws_from_softmax_and_rows_are_independent():
    probs = torch.tensor([0.6, 0.25, 0.1, 0.05])
    logits = torch.log(probs)[None].repeat(2, 1)
    sampler = SeededRowSampler([1.0, 0.0], [1.0, 1.0], [123, 5])
    counts = torch.zeros(4)
    for _ in range(4000):
        out = sampler(None, logits)
        counts[out[0].argmax()] += 1
        assert out[1].argmax() == 0  # temperature 0: greedy, no noise
    assert torch.allclose(counts / 4000, probs, atol=0.03)

    # A row's draws depend on its seed only, not on the other rows of the batch.
    alone = SeededRowSampler([0.8], [0.9], [42])
    batched = SeededRowSampler([1.0, 0.8, 0.3], [1.0, 0.9, 0.5], [7, 42, 9])
    for _ in range(20):
        a = alone(None, logits[:1])
        b = batched(None, logits[:1].repeat(3, 1))
        assert torch.equal(a[0], b[1])
