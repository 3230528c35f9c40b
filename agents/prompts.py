"""Every instruction the agent sends to the VLM and the LLM (thesis Appendix B).

Image 1 is always the reference image and Image 2 the image generated from the current
prompt, so "align more closely with Image 1" means "closer to the reference".

- :data:`COMPARE_IMAGES` (B.1, vanilla): the VLM sees both images and describes how they differ.
- :data:`DESCRIBE_CONTENT` / :data:`DESCRIBE_STYLE` (B.5, B.6, enhanced): the VLM describes
  one image at a time, its content and its style separately.
- :data:`LIST_DIFFERENCES` (B.8, enhanced): the LLM compares two descriptions of one aspect.
- :data:`PROPOSE_FRAGMENTS` (B.3): the LLM turns differences into candidate prompt fragments,
  given the current prompt (thesis eq. 4.4); in the enhanced framework once per aspect.
- :data:`REASK` : sent when an answer could not be read as a list.
- :data:`NEGATIVE_EXTRAS` / :data:`NEGATIVE_FRAGMENTS` (not in the thesis; agent.negative): after the
  loop, the VLM names what the best prompt's image shows that the reference lacks, and the LLM turns
  that into negative-prompt fragments. Written in the style of B.1 and B.3.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from actors.roles import Message

COMPARE_IMAGES = (
    "The first image is Image 1 and the second image is Image 2. Describe the differences between "
    "Image 1 and Image 2: their content (objects, characters, background, actions), their style "
    "(medium, art style, technique, lighting, colours) and their composition. Let's think step by step."
)

DESCRIBE_CONTENT = (
    "You are an expert in describing images. Please describe the content of the image: identify the "
    "objects, characters, environment, events, background and actions in it."
)

DESCRIBE_STYLE = (
    "You are an expert in image analysis. Please describe the style of the image: identify its medium, "
    "art style, the artist's style it resembles, the creative technique, the lighting, the colours and "
    "the resolution."
)

LIST_DIFFERENCES = (
    "I have descriptions of the {aspect} of Image 1 and Image 2.\n"
    "The description of Image 1: {image1}\n"
    "The description of Image 2: {image2}\n"
    "Please identify the differences in {aspect} between Image 1 and Image 2 based on their "
    "descriptions. Let's think step by step."
)

PROPOSE_FRAGMENTS = (
    "Generate image prompts that incorporate the following {aspect}differences between Image 1 and "
    "Image 2: {difference}\n\n"
    "Image 2 was generated from this prompt: {prompt}\n\n"
    "For the specific contrasts identified in the differences between Image 1 and Image 2, the image "
    "prompts should guide the creation of images that align more closely with Image 1.{aspect_rule} "
    "Do not repeat phrases that are already in the prompt. The prompts should be structured as a "
    "series of keywords or short phrases, separated by commas. Please list all possible prompts in a "
    "python list format. Your answer should only contain a python list. Let's think step by step."
)

ASPECT_RULE = " Each prompt should describe only the {aspect} of the image."

NEGATIVE_EXTRAS = (
    "The first image is Image 1 and the second image is Image 2. Image 2 was generated to recreate Image 1. "
    "Describe everything Image 2 shows that Image 1 does not: objects, people, text or watermarks, background "
    "elements, styles, colours, and flaws such as blur, noise, distortions or extra limbs. Name only what is "
    "in Image 2 and absent from Image 1. Let's think step by step."
)

NEGATIVE_FRAGMENTS = (
    "An image generated from a prompt shows these things that the wanted image does not have: {extras}\n\n"
    "The prompt was: {prompt}\n\n"
    "Write negative prompt fragments: short keywords or phrases naming these unwanted things, so that a "
    "text-to-image model given them as its negative prompt avoids them. Do not name anything the prompt asks "
    "for. Please list them in a python list format. Your answer should only contain a python list."
)

REASK = (
    "Your answer could not be read as a list. Answer again with only a python list of short "
    'phrases, for example: ["soft warm lighting", "oil painting", "a red scarf"].'
)


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


def _image(image: np.ndarray) -> dict:
    return {"type": "image", "image": image}


def compare_images_messages(reference: np.ndarray, generated: np.ndarray) -> list[Message]:
    """B.1: both images in one user turn, the reference first (Image 1)."""
    return [{"role": "user", "content": [_image(reference), _image(generated), _text(COMPARE_IMAGES)]}]


def describe_messages(image: np.ndarray, aspect: str) -> list[Message]:
    """B.5 (aspect 'content') or B.6 (aspect 'style') for one image."""
    template = {"content": DESCRIBE_CONTENT, "style": DESCRIBE_STYLE}[aspect]
    return [{"role": "user", "content": [_image(image), _text(template)]}]


def differences_messages(aspect: str, reference_description: str, generated_description: str) -> list[Message]:
    """B.8 for one aspect: Image 1 is the reference, Image 2 the generated image."""
    text = LIST_DIFFERENCES.format(aspect=aspect, image1=reference_description.strip(), image2=generated_description.strip())
    return [{"role": "user", "content": text}]


def propose_messages(difference: str, prompt: str, aspect: Optional[str] = None) -> list[Message]:
    """B.3 with the current prompt (eq. 4.4); with ``aspect`` the fragments are limited to it."""
    text = PROPOSE_FRAGMENTS.format(
        aspect=f"{aspect} " if aspect else "",
        difference=difference.strip(),
        prompt=prompt,
        aspect_rule=ASPECT_RULE.format(aspect=aspect) if aspect else "",
    )
    return [{"role": "user", "content": text}]


def reask_messages(previous: list[Message], answer: str) -> list[Message]:
    """The conversation so far plus the unreadable answer and the request to answer with a list."""
    return [*previous, {"role": "assistant", "content": answer}, {"role": "user", "content": REASK}]


def negative_extras_messages(reference: np.ndarray, generated: np.ndarray) -> list[Message]:
    """What the generated image (Image 2) shows that the reference (Image 1) lacks, in one VLM turn."""
    return [{"role": "user", "content": [_image(reference), _image(generated), _text(NEGATIVE_EXTRAS)]}]


def negative_fragments_messages(extras: str, prompt: str) -> list[Message]:
    """The unwanted things as negative-prompt fragments, given the prompt they must not contradict."""
    return [{"role": "user", "content": NEGATIVE_FRAGMENTS.format(extras=extras.strip(), prompt=prompt)}]
