"""The local Hub test server against the real huggingface_hub client, and the offline cache helper.

The client side always runs in a fresh subprocess (huggingface_hub reads HF_ENDPOINT, HF_TOKEN and
HF_HUB_DISABLE_XET at import time).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hub_server import HubServer, git_blob_sha1, hub_server  # noqa: F401  (fixture)

REPO = "test-org/demo"


def _write_safetensors(path: Path, n: int = 600) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file({"weight": rng.standard_normal((n, 4)).astype("float32")}, str(path))


def _make_folder(root: Path) -> dict[str, bytes]:
    """A small text file, a small .safetensors (LFS by pattern) and a 10.5 MiB text (LFS by size)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "notes.txt").write_text("hello hub\n")
    _write_safetensors(root / "model.safetensors")
    (root / "data").mkdir(exist_ok=True)
    line = b"0123456789abcdef" * 4 + b"\n"
    (root / "data" / "big.txt").write_bytes(line * (int(10.5 * 1024 * 1024) // len(line)))
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_push_pull_round_trip(hub_server, tmp_path):
    files = _make_folder(tmp_path / "folder")
    (tmp_path / "notes_v2.txt").write_text("hello hub, second version\n")
    out = hub_server.run_python_json(
        f"""
        import hashlib, json, os
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download

        def sha(p):
            return hashlib.sha256(open(p, "rb").read()).hexdigest()

        api = HfApi()
        url = api.create_repo({REPO!r})
        again = api.create_repo({REPO!r}, exist_ok=True)  # 409 handled by the client
        c1 = api.upload_folder(repo_id={REPO!r}, folder_path="folder", commit_message="first")
        info = api.model_info({REPO!r})
        listed = sorted(api.list_repo_files({REPO!r}))
        single = {{f: sha(hf_hub_download({REPO!r}, f)) for f in {sorted(files)!r}}}
        snap = snapshot_download({REPO!r})
        snap_files = {{
            os.path.relpath(os.path.join(d, f), snap).replace(os.sep, "/"): sha(os.path.join(d, f))
            for d, _, fs in os.walk(snap) for f in fs
        }}
        blobs = sorted(os.listdir(os.path.join(os.environ["HF_HOME"], "hub", "models--test-org--demo", "blobs")))
        c2 = api.upload_file(path_or_fileobj="notes_v2.txt", path_in_repo="notes.txt", repo_id={REPO!r})
        old = open(hf_hub_download({REPO!r}, "notes.txt", revision=c1.oid), "rb").read().decode()
        new = open(hf_hub_download({REPO!r}, "notes.txt"), "rb").read().decode()
        print(json.dumps(dict(
            url=url, repo_id=url.repo_id, again=again, c1=c1.oid, c2=c2.oid, info_sha=info.sha,
            siblings=sorted(s.rfilename for s in info.siblings), listed=listed, single=single,
            snap_files=snap_files, snap=snap, blobs=blobs, old=old, new=new,
            sha_after=api.model_info({REPO!r}).sha,
            sha_old_rev=api.model_info({REPO!r}, revision=c1.oid).sha,
        )))
        """,
        cwd=tmp_path,
    )
    expected = {path: _sha(data) for path, data in files.items()}
    assert out["url"] == f"{hub_server.url}/{REPO}" and out["repo_id"] == REPO and out["again"] == out["url"]
    assert out["info_sha"] == out["c1"] and len(out["c1"]) == 40
    assert out["listed"] == out["siblings"] == sorted([".gitattributes", *files])
    assert out["single"] == expected
    snap_files = {k: v for k, v in out["snap_files"].items() if k != ".gitattributes"}
    assert snap_files == expected
    assert out["snap"].endswith(out["c1"])
    # second commit: a new revision; the old sha still serves the old bytes
    assert out["c2"] != out["c1"] and out["sha_after"] == out["c2"] and out["sha_old_rev"] == out["c1"]
    assert out["old"] == "hello hub\n" and out["new"] == "hello hub, second version\n"

    # The LFS path was used for the .safetensors (pattern) and the 10.5 MiB text (size) only.
    repo = hub_server.repo(REPO)
    entries = repo.entries(out["c1"])
    assert entries["model.safetensors"].lfs and entries["data/big.txt"].lfs
    assert not entries["notes.txt"].lfs and not entries[".gitattributes"].lfs
    assert len(hub_server.calls("lfs_batch")) == 1
    uploaded = {c["path"].rsplit("/", 1)[-1] for c in hub_server.calls("lfs_upload", "PUT")}
    assert uploaded == {_sha(files["model.safetensors"]), _sha(files["data/big.txt"])}
    assert len(hub_server.calls("lfs_verify")) == 2
    assert [c.title for c in repo.history()] == ["Upload notes.txt with huggingface_hub", "first", "initial commit"]

    # Cache blob names: sha256 for LFS files, git blob sha1 otherwise (what lay_out_hub_cache writes).
    from hub_cache import git_blob_sha1 as lib_git_blob_sha1
    from hub_cache import is_lfs_file

    want_blobs = {_sha(d) if is_lfs_file(p, d) else lib_git_blob_sha1(d) for p, d in files.items()}
    want_blobs.add(git_blob_sha1(entries[".gitattributes"].content))
    assert set(out["blobs"]) == want_blobs
    assert not hub_server.unhandled


def test_multipart_lfs_upload(hub_server, tmp_path):
    hub_server.lfs_multipart_chunk_size = 1024 * 1024
    (tmp_path / "up").mkdir()
    _write_safetensors(tmp_path / "up" / "weights.safetensors", n=160_000)  # ~2.4 MiB -> 3 parts
    data = (tmp_path / "up" / "weights.safetensors").read_bytes()
    out = hub_server.run_python_json(
        f"""
        import hashlib, json
        from huggingface_hub import HfApi, hf_hub_download
        api = HfApi()
        api.create_repo({REPO!r})
        api.upload_folder(repo_id={REPO!r}, folder_path="up")
        path = hf_hub_download({REPO!r}, "weights.safetensors")
        print(json.dumps(hashlib.sha256(open(path, "rb").read()).hexdigest()))
        """,
        cwd=tmp_path,
    )
    assert out == _sha(data)
    assert len(hub_server.calls("lfs_upload", "PUT")) == 3  # parts
    assert len(hub_server.calls("lfs_upload", "POST")) == 1  # completion
    assert hub_server.repo(REPO).entries()["weights.safetensors"].lfs


def test_missing_repo_revision_file_raise_the_client_errors(hub_server, tmp_path):
    hub_server.commit(REPO, {"config.json": '{"a": 1}'})
    out = hub_server.run_python_json(
        f"""
        import json
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

        api = HfApi()
        calls = {{
            "info_missing_repo": lambda: api.model_info("test-org/nope"),
            "download_missing_repo": lambda: hf_hub_download("test-org/nope", "config.json"),
            "snapshot_missing_repo": lambda: snapshot_download("test-org/nope"),
            "files_missing_repo": lambda: api.list_repo_files("test-org/nope"),
            "info_missing_revision": lambda: api.model_info({REPO!r}, revision="no-such-branch"),
            "download_missing_revision": lambda: hf_hub_download({REPO!r}, "config.json", revision="no-such-branch"),
            "snapshot_missing_revision": lambda: snapshot_download({REPO!r}, revision="f" * 40),
            "download_missing_file": lambda: hf_hub_download({REPO!r}, "nope.json"),
            "tree_missing_path": lambda: list(api.list_repo_tree({REPO!r}, path_in_repo="no/dir")),
            "whoami_bad_token": lambda: api.whoami(token="hf_wrong"),
        }}
        result = {{}}
        for name, fn in calls.items():
            try:
                fn()
                result[name] = None
            except Exception as e:
                status = getattr(getattr(e, "response", None), "status_code", None)
                result[name] = [type(e).__name__, [c.__name__ for c in type(e).__mro__], status, str(e)]
        result["exists"] = [api.file_exists({REPO!r}, "config.json"), api.file_exists({REPO!r}, "nope.json"),
                            api.repo_exists({REPO!r}), api.repo_exists("test-org/nope")]
        print(json.dumps(result))
        """,
        cwd=tmp_path,
    )
    for name in ("info_missing_repo", "download_missing_repo", "snapshot_missing_repo", "files_missing_repo"):
        assert out[name][0] == "RepositoryNotFoundError", (name, out[name])
        assert out[name][2] == 404
    for name in ("info_missing_revision", "download_missing_revision", "snapshot_missing_revision"):
        assert out[name][0] == "RevisionNotFoundError", (name, out[name])
    for name in ("download_missing_file", "tree_missing_path"):
        assert out[name][0] == "RemoteEntryNotFoundError", (name, out[name])
        assert "EntryNotFoundError" in out[name][1]
    assert out["whoami_bad_token"][0] == "HfHubHTTPError" and out["whoami_bad_token"][2] == 401
    assert out["exists"] == [True, False, True, False]


def test_push_without_token_is_refused(hub_server, tmp_path):
    hub_server.commit(REPO, {"notes.txt": "v1\n"})
    head = hub_server.repo(REPO).head()
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "notes.txt").write_text("v2\n")
    code = f"""
        import json
        from huggingface_hub import HfApi
        api = HfApi()
        out = {{}}
        for name, fn in {{
            "create": lambda: api.create_repo("test-org/other"),
            "upload": lambda: api.upload_folder(repo_id={REPO!r}, folder_path="up"),
        }}.items():
            try:
                fn()
                out[name] = None
            except Exception as e:
                out[name] = [type(e).__name__, e.response.status_code, str(e)]
        print(json.dumps(out))
        """
    no_token = hub_server.run_python_json(code, env=hub_server.env(token=None), cwd=tmp_path)
    wrong_token = hub_server.run_python_json(code, env=hub_server.env(token="hf_not_the_token"), cwd=tmp_path)
    for name in ("create", "upload"):
        kind, status, message = no_token[name]
        assert (kind, status) == ("HfHubHTTPError", 401), no_token
        assert "needs a token" in message and "HF_TOKEN" in message
        kind, status, message = wrong_token[name]
        assert (kind, status) == ("HfHubHTTPError", 401), wrong_token
        assert "Invalid credentials" in message
    assert hub_server.repo(REPO).head() == head
    assert ("model", "test-org/other") not in hub_server.repos


def test_failed_upload_or_commit_leaves_remote_unchanged_and_retry_works(hub_server, tmp_path):
    hub_server.commit(REPO, {"notes.txt": "v1\n"})
    head = hub_server.repo(REPO).head()
    folder = tmp_path / "up"
    folder.mkdir()
    (folder / "notes.txt").write_text("v2\n")
    _write_safetensors(folder / "model.safetensors")
    # 1st try: the LFS PUT fails for good (507 is not retried by the client) -> nothing committed
    # 2nd try: LFS upload works, the commit fails with 500 -> nothing committed
    # 3rd try: works (the LFS object is already there, so it is not uploaded again)
    hub_server.fail_next("lfs_upload", 1, status=507)
    hub_server.fail_next("commit", 1)
    out = hub_server.run_python_json(
        f"""
        import json
        from huggingface_hub import HfApi
        api = HfApi()
        tries = []
        for attempt in range(3):
            try:
                info = api.upload_folder(repo_id={REPO!r}, folder_path="up", commit_message="retry me")
                tries.append(["ok", info.oid])
                break
            except Exception as e:
                cause = e.__cause__ if e.__cause__ is not None else e
                status = getattr(getattr(cause, "response", None), "status_code", None)
                tries.append([type(e).__name__, status, api.model_info({REPO!r}).sha])
        print(json.dumps(tries))
        """,
        cwd=tmp_path,
    )
    assert out[0] == ["RuntimeError", 507, head]  # "Error while uploading 'model.safetensors' to the Hub."
    assert out[1] == ["HfHubHTTPError", 500, head]
    assert out[2][0] == "ok"
    repo = hub_server.repo(REPO)
    assert repo.head() == out[2][1] != head
    assert [c.title for c in repo.history()] == ["retry me", "Server-side commit", "initial commit"]
    assert repo.files()["notes.txt"] == b"v2\n"
    assert repo.files()["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert [c["status"] for c in hub_server.calls("commit")] == [500, 200]
    assert [c["status"] for c in hub_server.calls("lfs_upload")] == [507, 200]
    assert hub_server.pending_failures() == {}


def test_transient_lfs_failure_is_retried_by_the_client(hub_server, tmp_path):
    hub_server.fail_next("lfs_upload", 1)  # one 500: the client's backoff retries after ~1 s
    (tmp_path / "up").mkdir()
    _write_safetensors(tmp_path / "up" / "model.safetensors")
    hub_server.run_python(
        f"""
        from huggingface_hub import HfApi
        api = HfApi()
        api.create_repo({REPO!r})
        api.upload_folder(repo_id={REPO!r}, folder_path="up")
        """,
        cwd=tmp_path,
    )
    assert [c["status"] for c in hub_server.calls("lfs_upload")] == [500, 200]
    assert "model.safetensors" in hub_server.repo(REPO).files()


def test_branches_pull_requests_and_datasets(hub_server, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.csv").write_text("x,y\n1,2\n")
    out = hub_server.run_python_json(
        f"""
        import json
        from huggingface_hub import CommitOperationCopy, HfApi, hf_hub_download, snapshot_download
        api = HfApi()
        api.create_repo({REPO!r})
        api.create_branch({REPO!r}, branch="dev")
        api.create_branch({REPO!r}, branch="dev", exist_ok=True)
        api.upload_file(path_or_fileobj=b"dev only", path_in_repo="dev.txt", repo_id={REPO!r}, revision="dev")
        pr = api.upload_file(path_or_fileobj=b"proposal", path_in_repo="pr.txt", repo_id={REPO!r}, create_pr=True)
        api.create_tag({REPO!r}, tag="v1", revision="dev")
        api.update_repo_settings({REPO!r}, private=True)
        refs = api.list_repo_refs({REPO!r}, include_pull_requests=True)
        api.upload_file(path_or_fileobj=b"z" * 10, path_in_repo="sub/dir/z.bin", repo_id={REPO!r})
        api.create_commit({REPO!r}, commit_message="copy", operations=[
            CommitOperationCopy(src_path_in_repo="sub/dir/z.bin", path_in_repo="z-copy.bin")])
        infos = api.get_paths_info({REPO!r}, ["sub", "z-copy.bin", "x"])
        paths_info = sorted((type(p).__name__, p.path) for p in infos)
        api.delete_file("z-copy.bin", {REPO!r})
        api.delete_folder("sub", {REPO!r})
        ds = "test-org/data"
        api.create_repo(ds, repo_type="dataset")
        api.upload_folder(repo_id=ds, repo_type="dataset", folder_path="d")
        api.create_repo("test-org/tmp")
        api.delete_repo("test-org/tmp")
        api.create_branch({REPO!r}, branch="tmp")
        api.delete_branch({REPO!r}, branch="tmp")
        api.create_tag({REPO!r}, tag="tmp-tag")
        api.delete_tag({REPO!r}, tag="tmp-tag")
        print(json.dumps(dict(
            paths_info=paths_info,
            branches=sorted(b.name for b in refs.branches),
            prs=[p.ref for p in refs.pull_requests],
            tags=[t.name for t in refs.tags],
            tag_file=open(hf_hub_download({REPO!r}, "dev.txt", revision="v1")).read(),
            private=api.model_info({REPO!r}).private,
            listed=[m.id for m in api.list_models(author="test-org")],
            commits=[c.title for c in api.list_repo_commits({REPO!r}, revision="dev")],
            pr_num=pr.pr_num, pr_revision=pr.pr_revision,
            main_files=sorted(api.list_repo_files({REPO!r})),
            dev_files=sorted(api.list_repo_files({REPO!r}, revision="dev")),
            pr_file=open(hf_hub_download({REPO!r}, "pr.txt", revision=pr.pr_revision)).read(),
            csv=open(hf_hub_download(ds, "train.csv", repo_type="dataset")).read(),
            ds_info=api.dataset_info(ds).sha,
            ds_snapshot=snapshot_download(ds, repo_type="dataset"),
        )))
        """,
        cwd=tmp_path,
    )
    assert out["paths_info"] == [["RepoFile", "z-copy.bin"], ["RepoFolder", "sub"]]
    repo = hub_server.repo(REPO)
    assert [c.title for c in repo.history()][:4] == [
        "Delete folder sub with huggingface_hub", "Delete z-copy.bin with huggingface_hub", "copy",
        "Upload sub/dir/z.bin with huggingface_hub"]
    assert ("model", "test-org/tmp") not in hub_server.repos
    assert set(repo.branches) == {"main", "dev", "refs/pr/1"} and set(repo.tags) == {"v1"}
    assert out["branches"] == ["dev", "main"]
    assert out["prs"] == ["refs/pr/1"] and out["pr_num"] == 1 and out["pr_revision"] == "refs/pr/1"
    assert out["tags"] == ["v1"] and out["tag_file"] == "dev only" and out["private"] is True
    assert out["listed"] == [REPO]
    assert out["commits"] == ["Upload dev.txt with huggingface_hub", "initial commit"]
    assert out["main_files"] == [".gitattributes"]  # z.bin and its copy were deleted again
    assert out["dev_files"] == [".gitattributes", "dev.txt"]
    assert out["pr_file"] == "proposal" and out["csv"] == "x,y\n1,2\n"
    assert out["ds_info"] == hub_server.repo("test-org/data", "dataset").head()
    assert "datasets--test-org--data" in out["ds_snapshot"]


def test_raw_http_behaviour():
    """Status codes and headers straight from the server (no client), and clean shutdown."""
    with HubServer() as server:
        sha = server.commit(REPO, {"a.txt": "abcdef", "w.safetensors": b"\x00" * 64})

        def req(method, path, headers=None):
            r = urllib.request.Request(server.url + path, method=method, headers=headers or {})
            try:
                with urllib.request.urlopen(r, timeout=10) as resp:
                    return resp.status, dict(resp.headers), resp.read()
            except urllib.error.HTTPError as e:
                return e.code, dict(e.headers), e.read()

        status, headers, body = req("GET", f"/{REPO}/resolve/main/a.txt", {"Range": "bytes=2-"})
        assert (status, body, headers["Content-Range"]) == (206, b"cdef", "bytes 2-5/6")
        status, headers, _ = req("HEAD", f"/{REPO}/resolve/{sha}/w.safetensors")
        assert status == 200 and headers["X-Repo-Commit"] == sha and headers["X-Linked-Size"] == "64"
        assert headers["ETag"] == headers["X-Linked-Etag"] == f'"{hashlib.sha256(bytes(64)).hexdigest()}"'
        status, headers, _ = req("HEAD", f"/{REPO}/resolve/main/a.txt")
        assert headers["ETag"] == f'"{git_blob_sha1(b"abcdef")}"' and "X-Linked-Etag" not in headers
        for path, code in [(f"/{REPO}/resolve/main/missing", "EntryNotFound"),
                           (f"/{REPO}/resolve/nope/a.txt", "RevisionNotFound"),
                           ("/test-org/missing/resolve/main/a.txt", "RepoNotFound")]:
            status, headers, _ = req("GET", path)
            assert (status, headers["X-Error-Code"]) == (404, code)
        status, headers, _ = req("GET", f"/{REPO}/resolve/main/missing")
        assert headers["X-Repo-Commit"] == sha
        assert req("GET", "/api/whoami-v2")[0] == 401
        assert req("GET", "/api/whoami-v2", {"Authorization": "Bearer wrong"})[0] == 401
        status, _, body = req("GET", "/api/whoami-v2", {"Authorization": f"Bearer {server.token}"})
        assert status == 200 and json.loads(body)["name"] == server.user
        status, _, body = req("GET", f"/api/models/{REPO}/tree/main/no%2Fsuch")
        assert status == 404
        assert req("GET", "/api/not-an-endpoint")[0] == 404 and server.unhandled == ["GET /api/not-an-endpoint"]
        assert server.errors == []
        url = server.url
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/api/whoami-v2", timeout=2)


def test_transformers_push_to_hub_and_from_pretrained(hub_server, tmp_path):
    out = hub_server.run_python_json(
        """
        import json, torch
        from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification
        torch.manual_seed(0)
        config = ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=32, num_labels=3)
        model = ViTForImageClassification(config).eval()
        info = model.push_to_hub("test-org/pushed-vit", commit_message="push tiny vit")
        loaded = AutoModelForImageClassification.from_pretrained("test-org/pushed-vit").eval()
        x = torch.randn(1, 3, 16, 16)
        with torch.no_grad():
            same = torch.equal(model(pixel_values=x).logits, loaded(pixel_values=x).logits)
        print(json.dumps({"oid": info.oid, "same": same}))
        """,
        cwd=tmp_path,
    )
    assert out["same"]
    repo = hub_server.repo("test-org/pushed-vit")
    assert repo.head() == out["oid"] and repo.history()[0].title == "push tiny vit"
    entries = repo.entries()
    assert {"config.json", "model.safetensors", "README.md"} <= set(entries) and entries["model.safetensors"].lfs


def _offline_env(hf_home: Path) -> dict[str, str]:
    drop = {"HF_ENDPOINT", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_TOKEN"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    repo_root = str(Path(__file__).resolve().parent.parent)
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1",
               PYTHONPATH=os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH", "")) if p))
    return env


def test_lay_out_hub_cache_loads_offline_with_transformers(tmp_path):
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from hub_cache import lay_out_hub_cache

    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32, num_labels=3)
    model = ViTForImageClassification(config).eval()
    model.save_pretrained(tmp_path / "tiny-vit")
    pixels = torch.linspace(-1, 1, 3 * 16 * 16).reshape(1, 3, 16, 16)
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits

    hf_home = tmp_path / "hf_home"
    snapshot = lay_out_hub_cache(hf_home, "test-org/tiny-vit", tmp_path / "tiny-vit")
    storage = hf_home / "hub" / "models--test-org--tiny-vit"
    sha = (storage / "refs" / "main").read_text()
    assert snapshot == storage / "snapshots" / sha and len(sha) == 40
    weights = snapshot / "model.safetensors"
    assert weights.is_symlink() and not os.path.isabs(os.readlink(weights))
    assert weights.resolve().name == hashlib.sha256(weights.read_bytes()).hexdigest()  # LFS blob: sha256
    config_json = snapshot / "config.json"
    assert config_json.resolve().name == git_blob_sha1(config_json.read_bytes())  # regular blob: git sha1

    code = textwrap.dedent(
        """
        import json, torch
        from huggingface_hub import snapshot_download, hf_hub_download
        from transformers import AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained("test-org/tiny-vit").eval()
        pixels = torch.linspace(-1, 1, 3 * 16 * 16).reshape(1, 3, 16, 16)
        with torch.no_grad():
            logits = model(pixel_values=pixels).logits
        print(json.dumps(dict(
            logits=logits.tolist(), cls=type(model).__name__,
            snapshot=snapshot_download("test-org/tiny-vit"),
            config=hf_hub_download("test-org/tiny-vit", "config.json"),
        )))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_offline_env(hf_home), cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["cls"] == "ViTForImageClassification"
    assert out["snapshot"] == str(snapshot)
    assert out["config"] == str(snapshot / "config.json")
    assert torch.allclose(torch.tensor(out["logits"]), expected, atol=1e-6)

    # laying out again is idempotent and gives the same content-derived sha
    assert lay_out_hub_cache(hf_home, "test-org/tiny-vit", tmp_path / "tiny-vit") == snapshot
