"""The pre-receive hook of an app's bare repository: builds the pushed commit through dynod's
API, streaming the build output back (git shows it as `remote:` lines); a failed build, or a push
to a branch other than main or master, rejects the push.

Runs inside `git push`, so it only uses the standard library and the API, never the daemon's state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

DEPLOY_BRANCHES = ("refs/heads/main", "refs/heads/master")
ZERO = "0" * 40


def _api(data_dir: Path) -> tuple[str, str]:
    url = os.environ.get("DYNOD_API_URL") or (data_dir / "api-url").read_text().strip()
    token = os.environ.get("DYNOD_API_TOKEN") or (data_dir / "api-token").read_text().strip()
    return url.rstrip("/"), token


def _request(url: str, token: str, method: str = "GET", body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/vnd.heroku+json; version=3",
        },
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"null")


def deploy(app: str, commit: str, data_dir: Path) -> int:
    base, token = _api(data_dir)
    blob = _request(f"{base}/apps/{app}/sources", token, "POST")["source_blob"]
    # The tarball goes up through the API from a directory no other user can read (mkdtemp's
    # 0700), gone before the build starts: another app's dyno never sees the source.
    with tempfile.TemporaryDirectory(prefix="dynod-push-") as scratch:
        tarball = Path(scratch) / f"{commit}.tar.gz"
        subprocess.run(
            ["git", "archive", "--format=tar.gz", "-o", str(tarball), commit], check=True
        )
        with tarball.open("rb") as body:
            upload = urllib.request.Request(
                blob["put_url"],
                data=body,
                method="PUT",
                headers={"Content-Length": str(tarball.stat().st_size)},
            )
            urllib.request.urlopen(upload, timeout=600).close()
    build = _request(
        f"{base}/apps/{app}/builds",
        token,
        "POST",
        {"source_blob": {"url": blob["get_url"], "version": commit}},
    )
    follow = urllib.request.Request(
        build["output_stream_url"], headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(follow, timeout=3600) as stream:
        for raw in stream:
            print(raw.decode("utf-8", "replace").rstrip("\n"), flush=True)
    final = _request(f"{base}/apps/{app}/builds/{build['id']}", token)
    if final["status"] != "succeeded":
        print(" !     Push rejected: the build failed (see the output above).", flush=True)
        return 1
    return 0


def main() -> int:
    data_dir = Path(os.environ["DYNOD_DATA"])
    app = Path.cwd().name.removesuffix(".git")
    status = 0
    for line in sys.stdin:
        old, new, ref = line.split()
        if ref not in DEPLOY_BRANCHES:
            print(f" !     Push to main or master to deploy; {ref} was refused.", flush=True)
            status = 1
        elif new == ZERO:
            print(f" !     {ref} cannot be deleted on dynod.", flush=True)
            status = 1
        else:
            try:
                status |= deploy(app, new, data_dir)
            except (OSError, urllib.error.URLError, KeyError, ValueError) as err:
                print(
                    f" !     Could not deploy through dynod ({err}): is `dynod serve` running?",
                    flush=True,
                )
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
