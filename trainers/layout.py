"""Token layouts of one preference pair: which tokens the trainer sees and which it scores.

A pair becomes, for chosen and for rejected, a *context* (masked) and a *response* (scored).

- ``clean``: the context is the prompt as the policy saw it when sampling (its chat template with
  the assistant turn opened), the response is exactly the sampled text + EOS. A prompt longer than
  ``max_prompt_length`` is refused; responses are cut to ``max_length − len(prompt)``.
- ``official``: uclaml/SPPO at 5e61c4e, token for token. ``sppo/alignment/data.py``
  (``apply_chat_template`` with ``skip_system_message=True``) renders the prompt *without* the
  generation prompt (it passes the misspelled ``add_generate_prompt``, which the template
  ignores) and takes each response as the full conversation's text minus the prompt's, so it starts
  with the assistant header and ends with the template's end of turn. ``sppo/trainer.py``
  (``build_tokenized_answer``, ``tokenize_row``, TRL 0.8's DPO code) then tokenises prompt +
  response together (the prompt's last token may merge into the response), prepends BOS to a
  prompt that usually has one already, appends EOS after the end of turn, and truncates: when the
  prompt plus the longer response exceed ``max_length``, the prompt keeps its last
  ``max_prompt_length`` tokens; if still too long, responses keep their first
  ``max_length − max_prompt_length``.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from harness.errors import DataError
from harness.generate import chat_prompt


@dataclass
class PairTokens:
    """Context and scored response tokens of chosen and rejected (contexts differ only when a
    tokenizer merged the prompt's last token into a response, in the official layout)."""

    chosen_context: list[int]
    chosen: list[int]
    rejected_context: list[int]
    rejected: list[int]


def clean(tok: PreTrainedTokenizerBase, prompt: str, chosen: str, rejected: str,
          max_length: int, max_prompt_length: int, where: str) -> PairTokens:
    context = tok(chat_prompt(tok, prompt), add_special_tokens=False)["input_ids"]
    if len(context) > max_prompt_length:
        raise DataError(f"{where}: the prompt has {len(context)} tokens, more than "
                        f"max_prompt_length={max_prompt_length} (training.layout: official cuts it)")
    room = max_length - len(context)

    def response(text: str) -> list[int]:
        return (tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])[:room]

    return PairTokens(context, response(chosen), context, response(rejected))


def _split(tok: PreTrainedTokenizerBase, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(context, answer) ids of ``prompt + answer`` tokenised together; the boundary moves one token
    left when the prompt's last token does not survive the joint tokenisation."""
    full = tok(prompt + answer, add_special_tokens=False)["input_ids"]
    alone = tok(prompt, add_special_tokens=False)["input_ids"]
    cut = len(alone) if alone == full[: len(alone)] else len(alone) - 1
    return full[:cut], full[cut:]


def official(tok: PreTrainedTokenizerBase, prompt: str, chosen: str, rejected: str,
             max_length: int, max_prompt_length: int, where: str) -> PairTokens:
    if tok.bos_token_id is None or tok.eos_token_id is None:
        raise DataError(f"{where}: training.layout official prepends BOS and appends EOS, and this "
                        "tokenizer lacks one of them; use training.layout: clean")
    user = [{"role": "user", "content": prompt}]
    text_prompt = tok.apply_chat_template(user, tokenize=False)
    texts = []
    for answer in (chosen, rejected):
        full = tok.apply_chat_template([*user, {"role": "assistant", "content": answer}],
                                       tokenize=False)
        if not full.startswith(text_prompt):
            raise DataError(f"{where}: the chat template does not render the prompt as a prefix of "
                            "the conversation, so the official layout cannot split it; use "
                            "training.layout: clean")
        texts.append(full[len(text_prompt):])
    (c_ctx, c_ans), (r_ctx, r_ans) = (_split(tok, text_prompt, t) for t in texts)
    if sum(a != b for a, b in zip(c_ctx, r_ctx, strict=False)) > 1 or abs(len(c_ctx) - len(r_ctx)) > 1:
        raise DataError(f"{where}: chosen and rejected tokenise the prompt differently beyond its "
                        "last token")
    c_ctx, r_ctx = [tok.bos_token_id, *c_ctx], [tok.bos_token_id, *r_ctx]
    c_ans, r_ans = [*c_ans, tok.eos_token_id], [*r_ans, tok.eos_token_id]
    longer = max(len(c_ans), len(r_ans))
    if len(c_ctx) + longer > max_length:
        c_ctx = c_ctx[-max_prompt_length:]
    if len(r_ctx) + longer > max_length:
        r_ctx = r_ctx[-max_prompt_length:]
    if len(c_ctx) + longer > max_length:
        c_ans = c_ans[: max_length - max_prompt_length]
    if len(r_ctx) + longer > max_length:
        r_ans = r_ans[: max_length - max_prompt_length]
    return PairTokens(c_ctx, c_ans, r_ctx, r_ans)


LAYOUTS = {"clean": clean, "official": official}
