"""Picking each token: the sampling settings and a llama.cpp sampler chain with an optional
grammar (structured output), checked on the chosen token first."""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatstep.errors import InternalServerError

if TYPE_CHECKING:
    from chatstep.backends.local.model import LocalModel

__all__ = ["GRAMMAR_SHORTLIST", "SAMPLING_TOP_K", "Sampling", "TokenSampler"]

# Sampling at temperature > 0 keeps Gemma's recommended 64 most likely tokens before top_p.
SAMPLING_TOP_K = 64
# When the sampled token breaks the grammar, the grammar is first checked on this many of the
# most likely tokens, and on the whole 262k vocabulary only when none of them fits.
GRAMMAR_SHORTLIST = 256


@dataclass(frozen=True)
class Sampling:
    """How to pick each token. ``temperature <= 0`` means greedy (deterministic)."""

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] = field(default_factory=dict)


def _grammar_dead_end() -> InternalServerError:
    message = (
        "the local model's output grammar allows no next token (a bug in chatstep or "
        "llama.cpp: please report the request; a simpler schema may avoid it)"
    )
    body = {"message": message, "type": "server_error", "param": None, "code": "grammar_dead_end"}
    return InternalServerError(message, status_code=500, code="grammar_dead_end", body=body)


class TokenSampler:
    """A llama.cpp sampler chain plus an optional grammar, checked on the chosen token first.

    Applying a grammar to all 262k tokens costs about half a second per token on a CPU, so (as
    llama.cpp's own server does) the token is sampled without the grammar and the grammar only
    checks it; when it does not fit, the token is re-sampled among grammar-valid ones.
    """

    def __init__(self, model: LocalModel, sampling: Sampling, grammar: str | None) -> None:
        c = model.c
        self._c = c
        self._model = model
        self._chain = c.llama_sampler_chain_init(c.llama_sampler_chain_default_params())
        self._grammar: Any = None
        self._shortlist: Any = None
        n_vocab = model.n_vocab
        try:
            if sampling.logit_bias:
                biases = (c.llama_logit_bias * len(sampling.logit_bias))()
                for i, (token, bias) in enumerate(sampling.logit_bias.items()):
                    biases[i].token = token
                    biases[i].bias = bias
                self._add(c.llama_sampler_init_logit_bias(n_vocab, len(biases), biases))
            penalties = sampling.presence_penalty != 0 or sampling.frequency_penalty != 0
            if sampling.temperature > 0 or penalties:
                # Penalties scan every candidate: prune to the likely ones first.
                self._add(c.llama_sampler_init_top_k(SAMPLING_TOP_K))
            if penalties:
                # Only generated tokens are accepted into the sampler, so the penalties count
                # the completion so far, as OpenAI's do.
                self._add(
                    c.llama_sampler_init_penalties(
                        n_vocab,
                        model.n_ctx,
                        1.0,
                        sampling.frequency_penalty,
                        sampling.presence_penalty,
                    )
                )
            if sampling.temperature > 0:
                if sampling.top_p < 1:
                    self._add(c.llama_sampler_init_top_p(sampling.top_p, 1))
                self._add(c.llama_sampler_init_temp(sampling.temperature))
                self._add(c.llama_sampler_init_dist(sampling.seed & 0xFFFFFFFF))
            else:
                self._add(c.llama_sampler_init_greedy())
            if grammar is not None:
                self._grammar = c.llama_sampler_init_grammar(
                    model.vocab, grammar.encode("utf-8"), b"root"
                )
                if not self._grammar:
                    raise ValueError("llama.cpp rejected the grammar built from the schema")
                self._shortlist = c.llama_sampler_init_top_k(GRAMMAR_SHORTLIST)
        except BaseException:
            self.close()
            raise

    def _add(self, sampler: Any) -> None:
        self._c.llama_sampler_chain_add(self._chain, sampler)

    def sample(self) -> int:
        """Pick the next token from the logits of the last evaluated token.

        With a grammar, the token is one the grammar allows, checked again right before it is
        accepted: llama.cpp aborts the whole process (SIGABRT) when its grammar is given a token
        it refuses. An end-of-generation token is never fed to the grammar; it ends the answer.
        Raises InternalServerError when the grammar allows no token at all.
        """
        c = self._c
        ctx = self._model.ctx
        if self._grammar is None:
            return int(c.llama_sampler_sample(self._chain, ctx, -1))
        candidates = self._model.candidates(ctx)
        c.llama_sampler_apply(self._chain, ctypes.byref(candidates))
        token = int(candidates.data[candidates.selected].id)
        if not self._grammar_allows(token):
            token = self._sample_allowed()
        if not self._model.is_end_of_generation(token):
            if not self._grammar_allows(token):  # unreachable unless llama.cpp changes
                raise _grammar_dead_end()
            c.llama_sampler_accept(self._grammar, token)
        c.llama_sampler_accept(self._chain, token)
        return token

    def _sample_allowed(self) -> int:
        """Sample among the tokens the grammar allows: the likely ones first, else all."""
        c = self._c
        ctx = self._model.ctx
        candidates = self._model.candidates(ctx)
        c.llama_sampler_apply(self._shortlist, ctypes.byref(candidates))
        c.llama_sampler_apply(self._grammar, ctypes.byref(candidates))
        candidates = self._model.keep_allowed(candidates)
        if candidates.size == 0:
            candidates = self._model.candidates(ctx)
            c.llama_sampler_apply(self._grammar, ctypes.byref(candidates))
            candidates = self._model.keep_allowed(candidates)
            if candidates.size == 0:
                raise _grammar_dead_end()
        # Only allowed tokens are left, unsorted: the grammar sampler marks refused tokens
        # -inf but keeps the array's "sorted" flag, so a top-k later in the chain used to keep
        # 64 refused tokens and sample one of them (the cause of the SIGABRT).
        c.llama_sampler_apply(self._chain, ctypes.byref(candidates))
        return int(candidates.data[candidates.selected].id)

    def _grammar_allows(self, token: int) -> bool:
        c = self._c
        single = (c.llama_token_data * 1)()
        single[0].id = token
        single[0].logit = 1.0
        array = c.llama_token_data_array(
            data=ctypes.cast(single, c.llama_token_data_p), size=1, selected=-1, sorted=False
        )
        c.llama_sampler_apply(self._grammar, ctypes.byref(array))
        return bool(single[0].logit != float("-inf"))

    def close(self) -> None:
        for attr in ("_chain", "_grammar", "_shortlist"):
            sampler = getattr(self, attr)
            if sampler:
                self._c.llama_sampler_free(sampler)
            setattr(self, attr, None)
