"""Drives the real huggingface_hub client against a clreg server for tests/tests/integration/hf.rs.

Reads {"tasks": [...]} as JSON on stdin and prints one JSON result per task (a list): each task
is {"op": "snapshot" | "file" | "info" | "files", "repo", "revision", "token", "cache",
"filename"}; a result is {"ok": ...} or {"error": <exception class>, "message": ...}.
HF_ENDPOINT must be set by the caller (the client reads it when imported); CLREG_HF_CHUNK, if
set, is the client's download piece size.
"""
import hashlib
import json
import os
import sys

import huggingface_hub as hub
from huggingface_hub import constants

# The client writes what it received in pieces of this size; a download cut before the first
# piece is written restarts from zero instead of resuming. Tests of resuming make it small.
if os.environ.get("CLREG_HF_CHUNK"):
    constants.DOWNLOAD_CHUNK_SIZE = int(os.environ["CLREG_HF_CHUNK"])


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(task):
    op = task["op"]
    common = {"repo_id": task["repo"], "revision": task.get("revision"), "token": task["token"]}
    if op == "snapshot":
        root = hub.snapshot_download(cache_dir=task["cache"], **common)
        out = {}
        for dirpath, _, names in os.walk(root):
            for name in names:
                full = os.path.join(dirpath, name)
                out[os.path.relpath(full, root)] = sha256(full)
        return {"dir": root, "files": out}
    if op == "file":
        path = hub.hf_hub_download(filename=task["filename"], cache_dir=task["cache"], **common)
        return {"path": path, "sha256": sha256(path), "size": os.path.getsize(path)}
    if op == "info":
        info = hub.model_info(**common)
        return {"id": info.id, "sha": info.sha, "siblings": sorted(s.rfilename for s in info.siblings)}
    if op == "files":
        return sorted(hub.list_repo_files(**common))
    raise ValueError(f"unknown op {op}")


def main():
    results = []
    for task in json.load(sys.stdin)["tasks"]:
        try:
            results.append({"ok": run(task)})
        except Exception as e:  # the test asserts on the client's own exception classes
            results.append({"error": type(e).__name__, "message": str(e)[:500]})
    json.dump({"version": hub.__version__, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
