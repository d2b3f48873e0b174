"""Greedy output of the server == greedy output of `tllm-generate` for the same prompt.

`tllm-generate --prompt P` renders P as a single user message with the model's chat template,
exactly as the server renders messages=[{"role": "user", "content": P}], and stops at EOS like
the server. Its stdout is the generated text plus one newline (stats go to stderr).
"""

from __future__ import annotations

import pytest

from tllm_server_helpers import PROMPTS, chat, stream_chat

MAX_TOKENS = 32


@pytest.mark.parametrize("prompt", PROMPTS, ids=["ascii-question", "ascii-haiku", "chinese"])
def test_greedy_equals_tllm_generate(client, model_id, generate, prompt):
    ref = generate(prompt, MAX_TOKENS)
    r = chat(client, model_id, prompt, max_tokens=MAX_TOKENS)
    got = r.choices[0].message.content
    assert got == ref.text, f"server {got!r}\n!= tllm-generate {ref.text!r}\n(stderr: {ref.stderr.strip()})"
    if ref.prompt_tokens is not None:
        assert r.usage.prompt_tokens == ref.prompt_tokens, "different prompt tokenisation / template"
    if ref.generated_tokens is not None:
        assert r.usage.completion_tokens == ref.generated_tokens, (r.usage, ref.stderr.strip())
    # Fewer tokens than asked: it stopped at EOS.
    if r.usage.completion_tokens < MAX_TOKENS:
        assert r.choices[0].finish_reason == "stop", r

    st = stream_chat(client, model_id, prompt, max_tokens=MAX_TOKENS)
    assert st.text == ref.text, f"stream {st.text!r} != tllm-generate {ref.text!r}"
