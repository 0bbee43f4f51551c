"""How much of the SFT data is longer than the response budget ARPO's RL stage cuts rollouts at."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..arpo.recipe import ARPO_CUTOFF_LEN
from .model import ModelDir
from .rows import PASS, WARN, Check

# data.max_response_length in ARPO's RL scripts: ARPO_7B_Reasoning_1node.sh 4096, ARPO_14b_Deepsearch 6192.
RL_RESPONSE_BUDGET = 4096
NAME = "RL response budget"


@dataclass(frozen=True)
class Budget:
    """Responses of a prepared file against an RL response budget, in tokens as training counts them."""

    budget: int
    rows: int
    over: int  # rows whose response (every assistant token, <|im_end|> included) exceeds the budget
    trained: int  # assistant tokens left after training's cutoff_len: what the loss learns from
    past: int  # of those, the ones past the budget in their row
    not_measured: int  # rows LLaMA-Factory would drop or crash on


def measure_budget(path: Path, model: ModelDir, budget: int) -> Budget:
    """Stream the prepared file once and count its responses against `budget`."""
    from ..data.conversation import blocking, normalize, problems_of, to_conversation
    from ..data.prepare import BATCH_ROWS
    from ..data.rows import iter_rows
    from ..data.tokens import batched, measure

    rows = over = trained = past = skipped = 0
    for batch in batched(iter_rows(path), BATCH_ROWS):
        readable = [row for row in batch if not blocking(problems_of(row))]
        skipped += len(batch) - len(readable)
        conversations = [to_conversation(normalize(row.data, fix=False)[0]) for row in readable]
        for tokens in measure(model.train_tokenizer, model.template, conversations, ARPO_CUTOFF_LEN):
            rows += 1
            over += tokens.total - tokens.prompt > budget
            trained += tokens.trained
            past += max(tokens.trained - budget, 0)
    return Budget(budget, rows, over, trained, past, skipped)


def budget_check(path: Path, found: Budget) -> Check:
    """A warning when any response is longer than the budget: RL cuts such rollouts, SFT trained them whole."""
    share = found.past / found.trained if found.trained else 0.0
    detail = (
        f"{found.over} of {found.rows} rows in {path.name} have responses over {found.budget} tokens; "
        f"{found.past:,} of {found.trained:,} trained tokens ({share:.1%}) lie past it"
    )
    if found.not_measured:
        detail += f"; {found.not_measured} rows not measured (run `arpo-sft data check` on the file)"
    if not found.over:
        return Check(NAME, PASS, detail)
    fix = "expected when SFT trains long trajectories; raise data.max_response_length for RL to keep them"
    return Check(NAME, WARN, detail, fix)
