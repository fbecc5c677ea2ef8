"""Prompt files (moved from test_worker.py: no model needed)."""

from __future__ import annotations

import pytest

from anubis_tui.inference.workload import WorkloadError, load_prompts


def test_prompt_file_forms(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text('first prompt\n\n{"prompt": "second"}\n')
    assert load_prompts(str(p)) == ["first prompt", "second"]
    p.write_text('{"text": 1}\n')
    with pytest.raises(WorkloadError, match="prompt"):
        load_prompts(str(p))
    with pytest.raises(WorkloadError, match="cannot read"):
        load_prompts(str(tmp_path / "none.txt"))
