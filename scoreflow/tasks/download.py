"""Finding a task's data when no --data path is given: $SCOREFLOW_DATA, then the cache, then a
download into the cache (unless SCOREFLOW_OFFLINE=1).

Sources, in order (both are the AFlow authors' own split files, which ScoreFlow reads):
1. Each file from the AFlow authors' commit in geekan/MetaGPT,
   https://raw.githubusercontent.com/geekan/MetaGPT/2d1d7ca219aa77d41bc69c38931cc05577dcdea9/examples/aflow/data/<file>
   checked against its git blob hash in that commit's tree.
2. AFlow's archive `aflow_data.tar.gz` (FoundationAgents/AFlow `data/download_data.py`), from Google
   Drive id 1DNoegtZiUhWtvkd2xoIuElmIi4ah7k8e, else the copy committed in lysummer55/test at
   43a60b08017417676b74ca7a33c5bb87bd46fb58; checked against its sha256 before unpacking.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from scoreflow.errors import UserError
from scoreflow.model.source import cache_dir

METAGPT_RAW = ("https://raw.githubusercontent.com/geekan/MetaGPT/2d1d7ca219aa77d41bc69c38931cc05577dcdea9/"
               "examples/aflow/data/{file}")
ARCHIVE_URLS = (
    "https://drive.google.com/uc?export=download&id=1DNoegtZiUhWtvkd2xoIuElmIi4ah7k8e",
    "https://raw.githubusercontent.com/lysummer55/test/43a60b08017417676b74ca7a33c5bb87bd46fb58/aflow_data.tar.gz",
)
ARCHIVE_SHA256 = "7089a373c27184ae1b67e322f8276642dab246359052989b03a27f48251ae053"
BLOBS = {  # git blob hashes in MetaGPT 2d1d7ca's examples/aflow/data
    "gsm8k_validate.jsonl": "67a15cd59b7747588dbb5cb55a48d489518689e3",
    "gsm8k_test.jsonl": "0c86bf450a8d0d0272b91f28da9d6d4faec4b86f",
    "math_validate.jsonl": "4c740ef0b26911ce23224db2fd02b81a760d5448",
    "math_test.jsonl": "8b280a88df2220868f95f775d82e9182dc3e19c7",
    "humaneval_validate.jsonl": "f7cdd99ce56219c9b44ddebab6350df3acd5f4eb",
    "humaneval_test.jsonl": "919ac7c42d453749fe820074c83ed2c336e355d0",
    "humaneval_public_test.jsonl": "38a4287f9309ba91fd326926277d90073b65cd88",
    "mbpp_validate.jsonl": "e32f7f767c66c6f26a0d2455277e0989afcc7e72",
    "mbpp_test.jsonl": "40ecb0d86ea523ad195438cb05e8efb8d527fc3b",
    "mbpp_public_test.jsonl": "3ba5feee2ac8cbb3cf051414d8e3edcbe15b024c",
    "hotpotqa_validate.jsonl": "63909a6e49915561775e2b640f00f1e1356843d1",
    "hotpotqa_test.jsonl": "06f6d2f9e327b603da4e490a474be29132287827",
    "drop_validate.jsonl": "f4c43801cbb6a9dc4e2b6da6cdcade6273b7d9ca",
    "drop_test.jsonl": "60b9dcae6882aed46afe6272cedec00ce250f826",
}
TIMEOUT_S = 60


def data_roots() -> list[Path]:
    roots = [Path(p) for p in os.environ.get("SCOREFLOW_DATA", "").split(os.pathsep) if p]
    return roots + [cache_dir() / "data"]


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:  # noqa: S310 (fixed https URLs)
        return r.read()


def _save(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


def _from_archive(target: Path) -> str | None:
    """Unpack every known file of AFlow's archive into `target`; the last error, or None."""
    error = None
    for url in ARCHIVE_URLS:
        try:
            blob = _get(url)
        except (urllib.error.URLError, OSError, ValueError) as e:
            error = f"{url}: {getattr(e, 'reason', e)}"
            continue
        if hashlib.sha256(blob).hexdigest() != ARCHIVE_SHA256:
            error = f"{url}: not the expected archive (sha256 differs)"
            continue
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for member in tar.getmembers():
                name = os.path.basename(member.name)
                if member.isfile() and name in BLOBS:
                    f = tar.extractfile(member)
                    if f is not None:
                        data = f.read()
                        if git_blob(data) == BLOBS[name]:
                            _save(target / name.split("_")[0] / name, data)
        return None
    return error


def download(name: str, filename: str) -> Path:
    """Fetch `filename` of task `name` into the cache and return its path."""
    if filename not in BLOBS:
        raise UserError(f"no download source for {filename}: pass --data PATH")
    target = cache_dir() / "data"
    dest = target / name / filename
    error = None
    try:
        data = _get(METAGPT_RAW.format(file=filename))
        if git_blob(data) == BLOBS[filename]:
            _save(dest, data)
            return dest
        error = f"{filename} from MetaGPT differs from the AFlow file"
    except (urllib.error.URLError, OSError, ValueError) as e:
        error = str(getattr(e, "reason", e))
    archive_error = _from_archive(target)
    error = f"{error}; {archive_error or 'not in the archive'}"
    if dest.is_file():
        return dest
    reason = " ".join(str(error).split())[:300]
    raise UserError(f"could not download {filename} ({reason}); pass --data PATH to a folder holding it "
                    f"or set SCOREFLOW_DATA")


def fetch(name: str, filename: str) -> Path:
    for root in data_roots():
        for cand in (root / filename, root / name / filename):
            if cand.is_file():
                return cand
    if os.environ.get("SCOREFLOW_OFFLINE", "") not in ("", "0"):
        raise UserError(f"no data for {name}: pass --data PATH (a folder holding {filename}) or set SCOREFLOW_DATA")
    return download(name, filename)
