"""Preflight on the machine: package versions against the pins, GPUs, and torchrun's rendezvous settings."""

from __future__ import annotations

import errno
import socket
from importlib.metadata import PackageNotFoundError, requires, version

from ...errors import UserError
from ..topology import CPU_RANKS, topology_from_env
from ..values import RANKS_PER_NODE_MAX, SECONDS, Bound, parse_number
from .rows import FAIL, OK, SKIP, WARN, Gpu, Plan, Row

DISTRIBUTION = "arpo-train-sft"
# torch is pinned by LLaMA-Factory, not by us: its requirement is the one that counts.
_CORE = {
    "llamafactory": DISTRIBUTION,
    "transformers": DISTRIBUTION,
    "deepspeed": DISTRIBUTION,
    "torch": "llamafactory",
}
_LOGGERS = {"wandb": "wandb", "tensorboard": "tensorboard"}
# Ampere (8.0) is the first generation with bf16 tensor cores and FlashAttention-2 kernels.
MIN_CAPABILITY = (8, 0)
MIN_DDP_TIMEOUT_S = 600
# How to rebuild a GPU package against the installed torch once its compiled part fails to load.
_REINSTALL = {
    "flash-attn": "reinstall it built for torch {torch}: pip install --force-reinstall --no-cache-dir "
    "--no-build-isolation flash-attn (or a wheel built for torch {torch} and this CUDA)",
    "liger-kernel": "reinstall it for torch {torch}: pip install --force-reinstall liger-kernel "
    "(it needs the triton that torch {torch} ships with)",
}


def _requirement(owner: str, name: str) -> str | None:
    """The requirement `owner` declares on `name` (e.g. 'transformers==5.5.4'), extras included."""
    from packaging.requirements import Requirement

    try:
        declared = requires(owner) or []
    except PackageNotFoundError:
        return None
    for text in declared:
        req = Requirement(text)
        if req.name.lower() == name:
            return f"{req.name}{req.specifier}"
    return None


def _version_row(name: str, owner: str, needed_for: str = "") -> Row:
    from packaging.requirements import Requirement

    pin = _requirement(owner, name) or name
    try:
        installed = version(name)
    except PackageNotFoundError:
        why = f" ({needed_for})" if needed_for else ""
        return Row("versions", FAIL, f"{name} is not installed{why}", f"pip install '{pin}'")
    if not Requirement(pin).specifier.contains(installed, prereleases=True):
        return Row("versions", FAIL, f"{name} {installed} does not match {pin}", f"pip install '{pin}'")
    return Row("versions", OK, f"{name} {installed} ({pin})")


def gpu_packages(values: dict) -> dict[str, str]:
    """The GPU packages this config uses, each with the setting that asks for it."""
    used = {}
    if str(values.get("flash_attn", "auto")) == "fa2":
        used["flash-attn"] = "flash_attn: fa2"
    if values.get("enable_liger_kernel"):
        used["liger-kernel"] = "enable_liger_kernel: true"
    return used


def installed_gpu_packages(values: dict) -> list[str]:
    """The GPU packages this config uses that are installed: preflight's child imports them for real."""
    installed = []
    for name in gpu_packages(values):
        try:
            version(name)
        except PackageNotFoundError:
            continue
        installed.append(name)
    return installed


def _import_row(row: Row, name: str, child: dict) -> Row:
    """The version row, failed when the child could not import the package's compiled part."""
    imports = child.get("imports", {})
    if row.status != OK or name not in imports:
        return row  # not installed, off the pin, or the child did not answer: the row says so already
    torch, problem = child.get("torch", "?"), imports[name]
    if problem is None:
        return Row("versions", OK, f"{row.found}, loads with torch {torch}")
    fix = _REINSTALL[name].format(torch=torch)
    return Row("versions", FAIL, f"{name} {version(name)} does not load with torch {torch}: {problem}", fix)


def check_versions(plan: Plan) -> list[Row]:
    """torch, transformers, llamafactory, deepspeed; flash-attn, liger-kernel and loggers when used."""
    values = plan.cfg.values
    rows = [_version_row(name, owner) for name, owner in _CORE.items()]
    for name, needed_for in gpu_packages(values).items():
        rows.append(_import_row(_version_row(name, DISTRIBUTION, needed_for), name, plan.child))
    report_to = values.get("report_to") or []
    for backend in [report_to] if isinstance(report_to, str) else report_to:
        if backend in _LOGGERS:
            rows.append(_version_row(_LOGGERS[backend], DISTRIBUTION, f"report_to: {backend}"))
    return rows


def detect_gpus() -> list[Gpu]:
    """The CUDA devices this process sees, read from their properties (no memory is allocated)."""
    import torch

    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(Gpu(props.name, props.total_memory / 2**30, (props.major, props.minor)))
    return gpus


def world_size(plan: Plan) -> int:
    """Ranks in the whole job, as torchrun will start them (falls back to the visible GPUs)."""
    try:
        topo = topology_from_env(plan.env, len(plan.gpus))
    except UserError:
        return len(plan.gpus) or CPU_RANKS
    return topo.nproc_per_node * topo.nnodes


def check_gpus(plan: Plan) -> list[Row]:
    """GPUs visible vs ranks requested, memory per GPU, and bf16 / FlashAttention-2 support."""
    cfg, gpus = plan.cfg, plan.gpus
    needs = cfg.gpu_only_settings()
    if not gpus:
        if needs:
            return [
                Row(
                    "gpus",
                    FAIL,
                    f"this config needs GPUs ({', '.join(needs)}) but no CUDA device is visible",
                    "run it on a GPU node, or try the CPU demo `bash sft_train.sh yaml/demo_cpu.yaml`",
                    plan.where,
                )
            ]
        return [Row("gpus", OK, f"no GPU: {CPU_RANKS} CPU ranks (gloo)")]
    source = "declared" if plan.declared else "visible"
    rows = [Row("gpus", OK, f"{len(gpus)} {source}: {gpus[0].name}, {gpus[0].mem_gib:.1f} GiB each")]
    try:
        requested = parse_number(
            "NPROC_PER_NODE", plan.env.get("NPROC_PER_NODE") or "0", Bound(0, RANKS_PER_NODE_MAX)
        )
    except UserError:
        requested = 0  # the topology row names what is wrong with it
    if requested > len(gpus):
        rows = [
            Row(
                "gpus",
                FAIL,
                f"NPROC_PER_NODE={requested} but {len(gpus)} GPUs are {source}",
                f"set NPROC_PER_NODE to {len(gpus)} or less (or unset it)",
            )
        ]
    capability = min((gpu.capability for gpu in gpus if gpu.capability), default=None)
    for key, wanted, fix in (
        ("bf16", bool(cfg.values.get("bf16")), "set bf16: false and fp16: true"),
        ("flash_attn", str(cfg.values.get("flash_attn", "auto")) == "fa2", "set flash_attn: sdpa"),
    ):
        if not wanted:
            continue
        if capability is None:
            rows.append(Row(key, SKIP, "not checked: GPUs declared with --gpus, not detected"))
        elif capability < MIN_CAPABILITY:
            found = (
                f"{key} needs compute capability 8.0+ (Ampere); this GPU has {capability[0]}.{capability[1]}"
            )
            rows.append(Row(key, FAIL, found, fix, plan.where))
        else:
            rows.append(Row(key, OK, f"supported (compute capability {capability[0]}.{capability[1]})"))
    return rows


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError as err:
            return err.errno == errno.EADDRINUSE
    return False


def check_topology(plan: Plan) -> list[Row]:
    """NPROC_PER_NODE / NNODES / NODE_RANK / MASTER_* consistent, the port free on node 0, ddp_timeout sane."""
    try:
        topo = topology_from_env(plan.env, len(plan.gpus))
    except UserError as err:
        rows = [Row("topology", FAIL, problem, "fix the environment variable") for problem in err.problems]
    else:
        if topo.elastic:
            found = (
                f"c10d rendezvous {topo.rdzv_id} at {topo.rdzv_endpoint}, {topo.min_nnodes or topo.nnodes}"
                f"-{topo.nnodes} node(s) x {topo.nproc_per_node} ranks"
            )
        else:
            found = (
                f"{topo.nnodes} node(s) x {topo.nproc_per_node} ranks, this is node {topo.node_rank}, "
                f"master {topo.master_addr}:{topo.master_port}"
            )
        rows = [Row("topology", OK, found)]
        if topo.first_node and plan.env.get("MASTER_PORT") and _port_in_use(topo.master_port):
            rows.append(
                Row(
                    "topology",
                    FAIL,
                    f"MASTER_PORT={topo.master_port} is already in use on this node",
                    "pick a free port (or unset MASTER_PORT on a single node)",
                )
            )
    timeout = plan.cfg.values.get("ddp_timeout", 1800)
    if not isinstance(timeout, int) or isinstance(timeout, bool):
        return rows  # the values row names the type problem
    if not SECONDS.admits(timeout):
        fix = f"set it in seconds, e.g. 1800 ({SECONDS.describe()})"
        rows.append(Row("ddp_timeout", FAIL, f"ddp_timeout: {timeout} s", fix, plan.where))
    elif timeout < MIN_DDP_TIMEOUT_S:
        rows.append(
            Row(
                "ddp_timeout",
                WARN,
                f"ddp_timeout: {timeout} s: ranks waiting on rank 0's tokenizing time out",
                f"set it to {MIN_DDP_TIMEOUT_S} or more",
                plan.where,
            )
        )
    else:
        rows.append(Row("ddp_timeout", OK, f"{timeout} s"))
    return rows
