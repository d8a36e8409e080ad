"""Private APIs of other libraries that chatstep relies on, pinned in pyproject.toml.

bpe-openai has no public way to load one vocabulary without building all of them (its package
``__init__`` takes ~1.6 s and 70 MB), so accounting/tokens.py loads the ``_bindings`` extension
by file path. These tests fail loudly on an upgrade that moves or reshapes it: then raise the pin
only after adapting ``_load_bindings``.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

from chatstep.accounting import tokens


def test_bpe_openai_version_is_in_the_pinned_range() -> None:
    version = metadata.version("bpe-openai")
    assert version.startswith("0.1."), f"bpe-openai {version}: re-check tokens._load_bindings"


def test_bpe_openai_bindings_load_by_file_with_the_expected_shape() -> None:
    code = (
        "import sys\n"
        "from chatstep.accounting import tokens\n"
        "b = tokens._load_bindings()\n"
        "assert b is not None, 'bpe_openai._bindings was not found by file path'\n"
        "assert 'bpe_openai' not in sys.modules, 'the package __init__ ran'\n"
        "t = b.tokenizer_for_encoding('o200k_base')\n"
        "n = t.count('hello world')\n"
        "assert isinstance(n, int), type(n)\n"
        "print(n)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"


@pytest.mark.filterwarnings("ignore:open_binary is deprecated:DeprecationWarning")
def test_private_load_counts_like_the_public_api() -> None:
    import bpe_openai

    text = "Classify this review: the product was fine, I guess. ünïcödé 12345 {json: true}"
    public = len(bpe_openai.get_encoding("o200k_base").encode(text))
    assert tokens.count_tokens(text, "gpt-4o-mini") == public
