"""All architecture knowledge lives in models/families.py: no other module names a family, a layer
path, a weight layout, a soft-cap or the config keys that hold depth and context."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "inheritune"
TABLE = SRC / "models" / "families.py"
FORBIDDEN = {
    "a model_type name": r"""["'](llama|mistral|qwen2|qwen3|phi3|gemma3_text|gpt2|opt|gpt_neox)["']""",
    "a layer path": r"""["'][\w.]*(model\.layers|transformer\.h|decoder\.layers|gpt_neox\.layers|self_attn|o_proj|c_proj|down_proj|dense_4h_to_h|embed_tokens|wte|wpe)\b""",
    "a weight layout": r"\bConv1D\b|isinstance\([^)]*nn\.Linear\)",
    "a logit soft-cap key": r"final_logit_softcapping",
    "a depth or context config key": r"\bnum_hidden_layers\b|\bmax_position_embeddings\b",
}


def _sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p != TABLE)


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_no_architecture_knowledge_outside_the_family_table(what):
    pattern = re.compile(FORBIDDEN[what])
    hits = [f"{p.relative_to(SRC)}:{n}: {line.strip()}" for p in _sources()
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1) if pattern.search(line)]
    assert not hits, f"{what} outside models/families.py:\n" + "\n".join(hits)


def test_the_table_itself_is_what_the_patterns_look_for():
    """The patterns are not vacuous: the table holds what they forbid elsewhere."""
    text = TABLE.read_text(encoding="utf-8")
    for what, pattern in FORBIDDEN.items():
        assert re.search(pattern, text), what
