"""Hook point names come from circuit_core/hooks.py only."""
import re
from pathlib import Path

import circuit_core
from circuit_core.hooks import every_layer, hook_layer, hook_name, hook_pattern, hook_qkv, hook_z


def test_names():
    assert hook_z(3) == "blocks.3.attn.hook_z"
    assert hook_pattern(0) == "blocks.0.attn.hook_pattern"
    assert hook_qkv(2, "k") == "blocks.2.attn.hook_k"
    assert hook_name(1, "hook_resid_pre") == "blocks.1.hook_resid_pre"
    assert every_layer(2) == ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"]
    assert hook_layer(hook_z(11)) == 11


def test_no_hand_built_names():
    """No "blocks.{...}" literal outside hooks.py: a renamed hook point is then one edit."""
    root = Path(circuit_core.__file__).parent
    literal = re.compile(r"""["']blocks\.(\{|\d)""")
    found = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") if p.name != "hooks.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if literal.search(line)]
    assert not found, found
