"""`arpo-sft data download`: fetch ARPO-SFT-54K's training file, or take a copy made by hand, and record its source."""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import re
import shutil
import textwrap
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from itertools import chain
from pathlib import Path
from typing import IO, Any

from ..atomic import STDIN, Discard, atomic_writer, check_outputs
from ..errors import EnvironmentProblem, UserError
from .inputs import open_input

REPO_ID = "dongguanting/ARPO-SFT-54K"
REPO_TYPE = "dataset"
FILE_NAME = "final_5w4_still.jsonl"
# The raw file; `arpo-sft data prepare` turns it into dataset_info/final_5w4_still.jsonl, which
# dataset_info.json registers as dataset `final_5w4_still`.
DEFAULT_OUT = "dataset_info/raw"
PROVENANCE_SUFFIX = ".source.json"
MANUAL = "`arpo-sft data download --from-file PATH`"
CACHE = "the Hugging Face cache, HF_HOME"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileFacts:
    """What identifies a data file: its hash, size and row count."""

    sha256: str
    size: int
    rows: int | None  # non-blank lines of a JSONL file; None for a JSON array, whose rows lines cannot count


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `download` to the `arpo-sft data` subcommands."""
    parser = subparsers.add_parser(
        "download",
        help=f"fetch {FILE_NAME} (ARPO-SFT-54K) from the Hugging Face hub, or take a hand-downloaded copy",
        description=f"Fetch {FILE_NAME} from the hub dataset {REPO_ID} into the Hugging Face cache\n"
        "(HF_HOME; HF_ENDPOINT, HF_HUB_OFFLINE and HF_TOKEN apply as usual), copy it into OUT and write\n"
        f"OUT/{FILE_NAME}{PROVENANCE_SUFFIX} (repo, revision, commit, sha256, size, rows), so a run\n"
        "can be traced to its data. A second run reuses the cache. Without access to the hub it fails within\n"
        "seconds and says how to bring the file in by hand with --from-file (a file, `-` for stdin, a FIFO,\n"
        "gzipped or not; read once). An input that is one of the outputs is refused before anything is written.\n\n"
        "exit status: 0 the file is in place, 2 a usage, access or input error (one line on stderr)",
        epilog="example:\n"
        "  arpo-sft data download --revision main --out dataset_info/raw\n"
        f"  arpo-sft data download --from-file ~/Downloads/{FILE_NAME}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--revision", help="hub branch, tag or commit hash to pin (default: main)")
    source.add_argument("--from-file", metavar="PATH", help="take this hand-downloaded copy instead")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder for the file (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace a different file already in OUT")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Put the data file in place, write its provenance and print a summary."""
    out = Path(args.out)
    dest = out / FILE_NAME
    provenance = dest.with_name(dest.name + PROVENANCE_SUFFIX)
    outputs = {f"--out's {FILE_NAME}": dest, f"--out's {provenance.name}": provenance}
    if args.from_file:
        src = Path(args.from_file).expanduser()
        if str(src) != STDIN and not src.exists():
            raise UserError(f"--from-file {src}: no such file; pass the path of the downloaded {FILE_NAME}")
        check_outputs({"--from-file": src}, outputs)
        origin: dict[str, Any] = {"source": str(src.resolve()) if src.is_file() else str(src)}
        described = str(src)
    else:
        check_outputs({}, outputs)
        src, origin = fetch_from_hub(args.revision or "main")
        described = f"{REPO_ID} revision {origin['revision']} (commit {origin['commit'] or 'unknown'})"
    facts, changed = install(src, dest, force=args.force)
    write_provenance(dest, facts, origin)
    print(f"{dest}: {'written' if changed else 'already up to date, left as is'}, from {described}")
    rows = f"{facts.rows:,} rows" if facts.rows is not None else "a JSON array (rows not counted)"
    print(f"  {_human(facts.size)} ({facts.size:,} bytes), {rows}, sha256 {facts.sha256}")
    print(f"  provenance: {dest}{PROVENANCE_SUFFIX}")
    print(f"  next: arpo-sft data prepare --input {dest} --model Qwen/Qwen2.5-7B-Instruct")
    return 0


def fetch_from_hub(revision: str) -> tuple[Path, dict[str, Any]]:
    """The file in the Hugging Face cache (downloaded if missing) and where it came from."""
    import httpx
    from huggingface_hub import constants, errors
    from huggingface_hub import file_download as hub

    endpoint, cache = constants.ENDPOINT, Path(constants.HF_HUB_CACHE)
    reason, refusal, size = _ask_hub(revision)
    try:
        found = hub.hf_hub_download(
            REPO_ID, FILE_NAME, repo_type=REPO_TYPE, revision=revision, local_files_only=reason is not None
        )
    except errors.LocalEntryNotFoundError:
        if refusal is not None:
            raise _explain(refusal, revision) from None
        raise UserError(
            f"{reason}, and {FILE_NAME} (revision {revision}) is not in the cache {cache}; download {FILE_NAME} "
            f"from {endpoint}/datasets/{REPO_ID} on a machine with access, then run {MANUAL}"
        ) from None
    except errors.HfHubHTTPError as err:
        raise _explain(err, revision) from None
    except httpx.TransportError as err:
        raise UserError(
            f"the download of {FILE_NAME} from {endpoint} broke off ({_brief(err)}); run the same command again, "
            f"or download the file by hand and run {MANUAL}"
        ) from None
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise _no_space(cache, size, CACHE) from None
        raise
    path = Path(found)
    if reason is not None:
        print(f"{reason}: using the copy of {FILE_NAME} (revision {revision}) already in the cache")
    # The cache keeps each file under snapshots/<commit hash>/, which names the exact data even offline.
    commit = path.parent.name if re.fullmatch(r"[0-9a-f]{40}", path.parent.name) else None
    return path, dict(repo=REPO_ID, repo_type=REPO_TYPE, endpoint=endpoint, revision=revision, commit=commit)


def _ask_hub(revision: str) -> tuple[str | None, Exception | None, int | None]:
    """One metadata request, no retries: (why the hub cannot serve the file, its HTTP refusal, file size)."""
    # Without a cached copy hf_hub_download retries a failed request for ~25 s (minutes on a network that drops
    # packets) before it gives up; this request, bounded by HF_HUB_ETAG_TIMEOUT, tells within seconds.
    import httpx
    from huggingface_hub import constants, errors
    from huggingface_hub import file_download as hub

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set", None, None
    url = hub.hf_hub_url(REPO_ID, FILE_NAME, repo_type=REPO_TYPE, revision=revision)
    try:
        meta = hub.get_hf_file_metadata(url, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except (errors.RevisionNotFoundError, errors.RemoteEntryNotFoundError) as err:
        raise _explain(err, revision) from None
    except httpx.TransportError as err:
        return f"cannot reach {constants.ENDPOINT} ({_brief(err)})", None, None
    except errors.HfHubHTTPError as err:  # a cached copy still serves, as hf_hub_download would allow
        return f"{constants.ENDPOINT} answered HTTP {err.response.status_code}", err, None
    if meta.commit_hash is None:
        return f"{constants.ENDPOINT} does not answer like a Hugging Face hub (no X-Repo-Commit)", None, None
    cached = hub.try_to_load_from_cache(REPO_ID, FILE_NAME, revision=meta.commit_hash, repo_type=REPO_TYPE)
    if meta.size is not None and not isinstance(cached, str):
        _check_space(Path(constants.HF_HUB_CACHE), meta.size, CACHE)
    return None, None, meta.size


def install(src: Path, dest: Path, force: bool) -> tuple[FileFacts, bool]:
    """Copy `src` (read once: a file, a pipe, `-`, gzipped or not) to `dest` atomically, hashing and counting
    rows on the way; False when `dest` already held the same bytes. Refuses what is not JSONL or JSON."""
    size = src.stat().st_size if src.is_file() else 0  # a lower bound: a pipe's size is unknown, gzip grows
    changed = True
    with open_input(src) as f:
        lines, seen = iter(f), []
        first = next(lines, b"")
        while first and not first.strip():
            seen.append(first)
            first = next(lines, b"")
        head = first.strip()[:60]
        if head[:1] not in (b"{", b"["):
            raise UserError(
                f"{src}: does not look like JSONL or JSON (it starts with {head.decode('utf-8', 'replace')!r}, "
                "not '{' or '['); "
                f"an HTML page means a login or error page was saved: download the raw {FILE_NAME} instead"
            )
        _check_space(dest.parent, size, "--out")
        digest, size, rows = hashlib.sha256(), 0, 0
        # A disk that fills during the copy is atomic_writer's one line (exit 3), the old file left in place.
        with atomic_writer(dest, binary=True) as out:
            for line in chain(seen, [first], lines):
                digest.update(line)
                size += len(line)
                rows += bool(line.strip())
                out.write(line)
            if dest.exists():
                if _sha256(dest) == digest.hexdigest():
                    changed = False
                    raise Discard
                if not force:
                    raise UserError(
                        f"{dest}: already exists with different content; move it away, or pass --force"
                    )
    return FileFacts(digest.hexdigest(), size, rows if head[:1] == b"{" else None), changed


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_provenance(dest: Path, facts: FileFacts, origin: dict[str, Any]) -> None:
    """Write `<dest>.source.json`: where the file came from and what it is."""
    record = {"file": dest.name, **origin, **asdict(facts)}
    record["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    path = dest.with_name(dest.name + PROVENANCE_SUFFIX)
    text = json.dumps(record, indent=2) + "\n"
    _atomic_write(path, lambda out: out.write(text.encode("utf-8")))


def _atomic_write(dest: Path, fill: Callable[[IO[bytes]], object]) -> None:
    """Write through a temp file in dest's folder, so readers see the old file or the whole new one."""
    with atomic_writer(dest, binary=True) as out:
        fill(out)


def _check_space(directory: Path, needed: int, what: str) -> None:
    """Fail before a copy or download that cannot fit."""
    if _free(directory) < needed:
        raise _no_space(directory, needed, what)


def _no_space(directory: Path, needed: int | None, what: str) -> EnvironmentProblem:
    need = f"needs {_human(needed)}" if needed is not None else "does not fit"
    return EnvironmentProblem(
        f"{directory} ({what}): not enough disk space: {FILE_NAME} {need}, {_human(_free(directory))} free; "
        "free some space or point it at a bigger disk"
    )


def _free(directory: Path) -> int:
    return shutil.disk_usage(next(p for p in (directory, *directory.parents) if p.exists())).free


def _explain(err: Exception, revision: str) -> UserError:
    """One line for a hub answer the user can act on."""
    from huggingface_hub import constants, errors

    endpoint = constants.ENDPOINT
    page = f"{endpoint}/datasets/{REPO_ID}"
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, errors.RevisionNotFoundError):
        return UserError(
            f"--revision {revision}: no such branch, tag or commit in {page}; see {page}/commits/main"
        )
    if isinstance(err, errors.RemoteEntryNotFoundError):
        return UserError(f"{FILE_NAME} is not in {page} at revision {revision}; see {page}/tree/{revision}")
    if isinstance(err, errors.GatedRepoError):
        return UserError(f"{page} is gated: accept its terms there, then set HF_TOKEN or run `hf auth login`")
    if isinstance(err, errors.RepositoryNotFoundError) or status in (401, 403):
        return UserError(
            f"{page} refused access or does not exist (HTTP {status}); check HF_ENDPOINT ({endpoint}); if the "
            "dataset is private or gated, set HF_TOKEN or run `hf auth login` with a token that can read it"
        )
    return UserError(
        f"{page} answered HTTP {status} ({_brief(err)}); try again later, or download {FILE_NAME} by hand and "
        f"run {MANUAL}"
    )


def _brief(err: Exception) -> str:
    return textwrap.shorten(str(err), 120, placeholder="...") or type(err).__name__


def _human(size: int) -> str:
    units = ("B", "KB", "MB", "GB", "TB")
    power = min(len(units) - 1, (len(str(size)) - 1) // 3)
    return f"{size} B" if power == 0 else f"{size / 1000**power:.1f} {units[power]}"
