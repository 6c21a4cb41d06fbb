"""Run the real `synthgraph` CLI with the prompt-aware fake model (for subprocess tests).

    python tests/personas_cli_script.py DELAY_SECONDS personas INPUT --out DIR ...

The kill-and-resume test starts this, kills it with SIGKILL mid-run, and runs
it again with `--resume`. Only this script (never the product) knows about
the fake: it plugs it in with `use_chat_models`, as any other model would be.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from personas_fake_models import PromptAwareFake

from synthgraph.agents.llm import use_chat_models
from synthgraph.graphs.cli import app

if __name__ == "__main__":
    delay = float(sys.argv[1])
    with use_chat_models(generator=PromptAwareFake(delay=delay)):
        app(sys.argv[2:])
