"""Every number a user gives, read once: config keys, environment variables and flags, typed and bounded.

A value is finite, inside its range, and a whole number where one is meant, written in ASCII digits
(`int("²")` and `float("١")` accept other scripts' digits; torchrun and the shell do not). Each problem is
one line naming the key and the range it accepts. The upper bounds keep any single number from sizing a
list or a loop by its value (a `--gpus 10000000000` planned ten billion GPU records).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

_WHOLE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)
# More digits than any bound below has: the text is out of range without converting it.
_MAX_DIGITS = 30


@dataclass(frozen=True)
class Bound:
    """What a number may be: whole or not, and its range (`low` excluded when `above`)."""

    low: float
    high: float
    whole: bool = True
    above: bool = False

    def describe(self) -> str:
        """The accepted range in words, for the error line."""
        kind = "a whole number" if self.whole else "a number"
        low, high = _show(self.low), _show(self.high)
        if self.above:
            return f"{kind} above {low} and at most {high}"
        return f"{kind} from {low} to {high}"

    def admits(self, value: float) -> bool:
        """Whether a finite `value` of the right kind lies in the range."""
        lowest = value > self.low if self.above else value >= self.low
        return lowest and value <= self.high


def _show(number: float) -> str:
    return f"{int(number):,}" if float(number).is_integer() else f"{number:g}"


# Launch sizes. A node has at most this many ranks (the largest GPU nodes have 16 GPUs; CPU demo ranks are
# bounded by the cores); a job at most this many nodes, and so at most RANKS_MAX ranks in all.
RANKS_PER_NODE_MAX = 1024
NODES_MAX = 100_000
RANKS_MAX = 1_000_000
PORT = Bound(1, 65535)
SECONDS = Bound(1, 31_536_000)  # a year: torch's timeouts are milliseconds in an int64, far above it
GPU_MEM_GIB = Bound(0, 1_048_576, whole=False, above=True)  # up to 1 PiB a GPU
# A step count: transformers reads a value below 1 as a share of the run's steps, from 1 on as steps.
_STEPS = Bound(0, 10**12, whole=False, above=True)

# Every numeric training key preflight's values row bounds, with its range (ddp_timeout has its own row). transformers and LLaMA-Factory accept any
# float here, NaN and inf included, and fail (or train on non-finite weights) only once the ranks run.
CONFIG_KEYS: dict[str, Bound] = {
    "learning_rate": Bound(0, 1, whole=False, above=True),
    "per_device_train_batch_size": Bound(1, 65_536),
    "per_device_eval_batch_size": Bound(1, 65_536),
    "gradient_accumulation_steps": Bound(1, 1_000_000),
    # The estimate's advice lists a cutoff per 1024 tokens below this one: 2**20 keeps that list short.
    "cutoff_len": Bound(1, 1_048_576),
    "max_samples": Bound(1, 10**12),
    "preprocessing_num_workers": Bound(1, 4096),
    "dataloader_num_workers": Bound(0, 4096),
    "save_total_limit": Bound(1, 1_000_000),
    "save_steps": _STEPS,
    "logging_steps": _STEPS,
    "eval_steps": _STEPS,
    "num_train_epochs": Bound(0, 1_000_000, whole=False, above=True),
    # warmup_ratio replaces warmup_steps, and 1.0 there means one step, not the whole run: below 1 only.
    "warmup_ratio": Bound(0, 0.999999, whole=False),
    "warmup_steps": Bound(0, 10**12, whole=False),
    "weight_decay": Bound(0, 1, whole=False),
    "max_grad_norm": Bound(0, 1_000_000, whole=False),
    "adam_beta1": Bound(0, 0.999999, whole=False),
    "adam_beta2": Bound(0, 0.999999, whole=False),
    "adam_epsilon": Bound(0, 1, whole=False, above=True),
    "seed": Bound(0, 2**32 - 1),  # numpy's seed range: transformers seeds numpy with it
    "data_seed": Bound(0, 2**32 - 1),
}
# max_steps: -1 (train by epochs) or a step count.
MAX_STEPS = Bound(1, 10**12)


def is_number(value: Any) -> bool:
    """Whether a parsed YAML value is a number (a bool is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def words(value: float, bound: Bound) -> str:
    """What is wrong with a finite `value` of the right kind outside `bound`: 'must be at least 1'."""
    if bound.above and value <= bound.low:
        return f"must be above {_show(bound.low)}"
    if value < bound.low:
        return f"must be at least {_show(bound.low)}"
    return f"must be at most {_show(bound.high)}"


def parse_number(name: str, text: str, bound: Bound) -> int | float:
    """`text` (an environment variable's or a flag's value) as a number inside `bound`; else one UserError line."""
    stripped = text.strip()
    sep = " " if name.startswith("-") else "="
    pattern = _WHOLE if bound.whole else _DECIMAL
    if not pattern.fullmatch(stripped) or len(stripped) > _MAX_DIGITS + 8:
        raise UserError(f"{name}{sep}{text!r}: expected {bound.describe()}, in ASCII digits")
    value = int(stripped) if bound.whole else float(stripped)
    if not math.isfinite(value):
        raise UserError(f"{name}{sep}{stripped}: not a finite number; expected {bound.describe()}")
    if not bound.admits(value):
        raise UserError(f"{name}{sep}{stripped}: {words(value, bound)}; expected {bound.describe()}")
    return value


def value_problem(key: str, value: Any, bound: Bound) -> str | None:
    """The problem with a config value (already typed by YAML) against `bound`, or None.

    Strings, bools and floats where a whole number is meant are the type check's to name (LLaMA-Factory's
    declared types): this says nothing about them, so no value gets two lines.
    """
    if not is_number(value) or (bound.whole and isinstance(value, float)):
        return None
    if not math.isfinite(value):
        return f"{key}: {value} is not a finite number"
    if not bound.admits(value):
        return f"{key}: {value} {words(value, bound)}"
    return None


def config_problems(values: dict[str, Any]) -> list[tuple[str, str]]:
    """(found, fix) for every numeric training key that is not finite or not in its range."""
    problems = []
    for key, bound in CONFIG_KEYS.items():
        problem = value_problem(key, values.get(key), bound)
        if problem:
            problems.append((problem, f"set {key} to {bound.describe()}"))
    steps = values.get("max_steps", -1)
    if steps != -1:
        problem = value_problem("max_steps", steps, MAX_STEPS)
        if problem:
            problems.append((problem, f"set max_steps to -1 (train by epochs) or {MAX_STEPS.describe()}"))
    warmup = values.get("warmup_steps")
    if is_number(warmup) and math.isfinite(warmup) and warmup >= 1 and not float(warmup).is_integer():
        # transformers truncates it: 1.5 warms up for 1 step, not a share of the run.
        found = f"warmup_steps: {warmup} is neither a share below 1 nor a whole number of steps"
        problems.append(
            (found, "set warmup_steps to a share of the run (e.g. 0.1) or a whole number of steps")
        )
    return problems


def config_int(key: str, value: Any, default: int) -> int:
    """A whole-number config key the estimate needs: its value inside CONFIG_KEYS' range; else one UserError."""
    value = default if value is None else value
    bound = CONFIG_KEYS[key]
    if not is_number(value) or isinstance(value, float) or not bound.admits(value):
        raise UserError(f"key '{key}' is {value!r}; expected {bound.describe()}")
    return value


def json_number(where: str, value: Any, bound: Bound) -> int | float:
    """A number from a JSON file (e.g. a DeepSpeed config): a number or numeric string inside `bound`."""
    if isinstance(value, str):
        # DeepSpeed's JSONs often write sizes as "5e8": read as a decimal, then held to a whole number.
        try:
            value = parse_number(where, value, Bound(bound.low, bound.high, whole=False, above=bound.above))
        except UserError:
            raise UserError(f"{where}={value!r}: expected {bound.describe()}") from None
    if not is_number(value) or (bound.whole and isinstance(value, float) and not value.is_integer()):
        raise UserError(f"{where}={value!r}: expected {bound.describe()}")
    if not math.isfinite(value) or not bound.admits(value):
        raise UserError(f"{where}={value}: expected {bound.describe()}")
    return int(value) if bound.whole else value
