"""On every rank, before LLaMA-Factory reads its arguments: take global rank 0's resume decision.

Each node's launcher decides the resume before torchrun (checkpoint/resume.py) and passes it as
`resume_from_checkpoint=...`. In a static job node 0's decision already reached every node through the
handshake; under c10d rendezvous, nodes start in any order and no launcher knows which node will be
first, so each decided alone. Here global rank 0 publishes the resume argument it was given on torchrun's
own store (the one its rendezvous runs on, at MASTER_ADDR:MASTER_PORT) and every rank uses that one, so
no two ranks can load different checkpoints.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping

_RESUME = "resume_from_checkpoint="
# Rank 0 publishes within seconds of the others starting; this only bounds a rank 0 that died at import.
_WAIT_S = 600


def resume_args(argv: list[str]) -> list[str]:
    return [arg for arg in argv if arg.startswith(_RESUME)]


def agree_on_resume(argv: list[str], env: Mapping[str, str] = os.environ) -> list[str]:
    """`argv` with its resume argument replaced by global rank 0's (unchanged on a single process)."""
    if int(env.get("WORLD_SIZE", "1")) <= 1 or not env.get("MASTER_ADDR"):
        return argv
    from torch.distributed import TCPStore

    rank = int(env.get("RANK", "0"))
    key = f"arpo-sft/resume/{env.get('TORCHELASTIC_RUN_ID', '')}/{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    store = TCPStore(
        env["MASTER_ADDR"],
        int(env["MASTER_PORT"]),
        is_master=False,
        timeout=datetime.timedelta(seconds=_WAIT_S),
    )
    mine = resume_args(argv)
    if rank == 0:
        store.set(key, json.dumps(mine))
        return argv
    chosen = json.loads(store.get(key))
    del store
    if chosen == mine:
        return argv
    print(
        f"[arpo-sft] rank {rank}: this node's launcher chose {mine or 'no resume'}, global rank 0's chose "
        f"{chosen or 'no resume'}; using rank 0's, as every rank does",
        flush=True,
    )
    return [arg for arg in argv if not arg.startswith(_RESUME)] + chosen
