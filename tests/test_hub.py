"""`push_to_hub` without a network: the REAL `model.push_to_hub(repo_id)` and `tokenizer.push_to_hub(repo_id)` run
(transformers' `PushToHubMixin`: save to a temporary folder, build the model card, make the commit operations), with
only the calls that would reach the Hub replaced by a recorder:

* `HfApi.create_repo` (answers with the repo's URL, as the Hub does for `exist_ok=True`);
* `HfApi.create_commit` (reads every `CommitOperationAdd` payload while its temporary file still exists, checks it
  against the operation's own sha256, and answers with a commit id);
* `hf_hub_download` as `ModelCard.load` uses it (README.md: the pushed one, else "not found", as for a new repo);
* `HfApi.create_branch`, `HfApi.preupload_lfs_files`, `HfApi.upload_file`, `HfApi.upload_folder`: fail the test if
  called (transformers 5.23 does not call them for a push to main).

Every other HTTP request is refused: `huggingface_hub.constants.HF_HUB_OFFLINE` is set, so its HTTP client raises
`OfflineModeIsEnabled` for any request. The recorded files are then laid out as a Hub cache snapshot
(`HF_HUB_CACHE/models--{org}--{name}/{blobs,snapshots/<commit>,refs/main}`) and a clean process that cannot import
this repository loads them by repo id with `HF_HUB_OFFLINE=1`: `AutoModelForCausalLM.from_pretrained(repo_id,
trust_remote_code=True)` and `AutoTokenizer.from_pretrained(repo_id)`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, RepoUrl
from huggingface_hub.errors import EntryNotFoundError
from model_fixtures import CODE_FILES, COMPUTER, LIBRARY, NOT_IMPORTABLE_PRELUDE, REPO, tiny_llama
from safetensors.torch import save_file

from library.install import from_llama, save_model_with_tokenizer
from modeling_llama_dcomp import LlamaDCompForCausalLM

pytest.importorskip("llama_models", reason="pip install --no-deps llama-models==0.3.0")

REPO_ID = "llama-dcomp-test/tiny-llama-dcomp"
ENDPOINT = "https://huggingface.co"
ADD_3_AND_4 = [2261, 220, 18, 323, 220, 19]


class HubRecorder:
    """Stands in for the Hub's HTTP API: records repos and commits; holds each repo's files (path → bytes)."""

    def __init__(self):
        self.created: list[dict] = []
        self.commits: list[dict] = []
        self.files: dict[str, dict[str, bytes]] = {}
        self.heads: dict[str, str] = {}

    def install(self, monkeypatch: pytest.MonkeyPatch, download_dir: Path) -> None:
        recorder = self

        def create_repo(api, repo_id, *, token=None, private=None, repo_type=None, exist_ok=False, **kwargs):
            assert repo_type in (None, "model") and exist_ok, (repo_type, exist_ok)
            recorder.created.append({"repo_id": repo_id, "private": private, **kwargs})
            recorder.files.setdefault(repo_id, {})
            return RepoUrl(f"{ENDPOINT}/{repo_id}", endpoint=ENDPOINT)

        def create_commit(
            api,
            repo_id,
            operations,
            *,
            commit_message,
            commit_description=None,
            token=None,
            repo_type=None,
            revision=None,
            create_pr=None,
            parent_commit=None,
            **kwargs,
        ):
            assert repo_id in recorder.files, "commit to a repo that was never created"
            assert repo_type in (None, "model") and revision is None and not create_pr
            added = {}
            for operation in operations:
                assert isinstance(operation, CommitOperationAdd), operation
                with operation.as_file() as handle:  # the push's temporary folder still exists here
                    data = handle.read()
                assert hashlib.sha256(data).digest() == operation.upload_info.sha256, operation.path_in_repo
                assert len(data) == operation.upload_info.size
                added[operation.path_in_repo] = data
            repo = recorder.files[repo_id]
            repo.update(added)
            oid = hashlib.sha1(
                json.dumps(
                    [
                        recorder.heads.get(repo_id, ""),
                        commit_message,
                        *sorted((path, hashlib.sha256(data).hexdigest()) for path, data in repo.items()),
                    ]
                ).encode()
            ).hexdigest()
            recorder.heads[repo_id] = oid
            recorder.commits.append({"repo_id": repo_id, "message": commit_message, "files": added, "oid": oid})
            return CommitInfo(
                commit_url=f"{ENDPOINT}/{repo_id}/commit/{oid}",
                commit_message=commit_message,
                commit_description=commit_description or "",
                oid=oid,
            )

        def download(repo_id, filename, *, repo_type=None, **kwargs):
            """`ModelCard.load`'s README.md lookup: the pushed file, else what a new repo answers."""
            data = recorder.files.get(repo_id, {}).get(filename)
            if data is None:
                raise EntryNotFoundError(f"{filename} is not in {repo_id} (recorded Hub)")
            path = download_dir / repo_id / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return str(path)

        def unexpected(name):
            def fail(*args, **kwargs):
                raise AssertionError(f"push_to_hub called HfApi.{name}: teach the recorder about it")

            return fail

        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # any other request raises
        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)
        monkeypatch.setattr(huggingface_hub.repocard, "hf_hub_download", download)
        for name in ("create_branch", "preupload_lfs_files", "upload_file", "upload_folder"):
            monkeypatch.setattr(HfApi, name, unexpected(name))

    def write_cache(self, cache: Path, repo_id: str) -> Path:
        """The repo's files at its last commit as a Hub cache entry (blobs by sha256, snapshot symlinks,
        refs/main); returns the snapshot folder."""
        root = cache / ("models--" + repo_id.replace("/", "--"))
        snapshot = root / "snapshots" / self.heads[repo_id]
        for path, data in self.files[repo_id].items():
            blob = root / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = snapshot / path
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / "main").write_text(self.heads[repo_id])
        return snapshot


@pytest.fixture(scope="module")
def tokenizer():
    from library.tokenizer import llama3_tokenizer

    return llama3_tokenizer()  # shared, cached instance: not mutated here


@pytest.fixture(scope="module")
def model(tokenizer):
    """A tiny LlamaDComp with LLaMA-3's vocabulary, the computer after layer 1 with gate 0.5 (it changes the
    logits), W_out from the LLaMA-3 number tokens."""
    llama = tiny_llama(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return from_llama(
        llama, computer_layer=1, library=LIBRARY, tokenizer=tokenizer, **{**COMPUTER, "computer_gate_init": 0.5}
    ).eval()


@pytest.fixture(scope="module")
def pushed(model, tokenizer, tmp_path_factory):
    """The recorder after the real `model.push_to_hub(REPO_ID)` and `tokenizer.push_to_hub(REPO_ID)`."""
    recorder = HubRecorder()
    with pytest.MonkeyPatch.context() as monkeypatch:
        recorder.install(monkeypatch, tmp_path_factory.mktemp("downloads"))
        model_commit = model.push_to_hub(REPO_ID)
        tokenizer_commit = tokenizer.push_to_hub(REPO_ID)
    assert [commit.oid for commit in (model_commit, tokenizer_commit)] == [c["oid"] for c in recorder.commits]
    return recorder


def test_push_creates_the_repo_and_commits_model_code_card_and_tokenizer(pushed, model, tokenizer, tmp_path):
    assert [created["repo_id"] for created in pushed.created] == [REPO_ID, REPO_ID]
    model_commit, tokenizer_commit = pushed.commits
    assert model_commit["message"].startswith("Upload") and tokenizer_commit["message"].startswith("Upload")
    assert {"config.json", "model.safetensors", "generation_config.json", "README.md", *CODE_FILES} == set(
        model_commit["files"]
    )
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(tokenizer_commit["files"])

    files = pushed.files[REPO_ID]
    for name in CODE_FILES:  # the run-time code travels, byte for byte
        assert files[name] == (REPO / name).read_bytes(), name
    config = json.loads(files["config.json"])
    assert config["auto_map"] == {
        "AutoConfig": "configuration_llama_dcomp.LlamaDCompConfig",
        "AutoModel": "modeling_llama_dcomp.LlamaDCompModel",
        "AutoModelForCausalLM": "modeling_llama_dcomp.LlamaDCompForCausalLM",
    }
    assert config["model_type"] == "llama_dcomp" and config["library_programs"] == LIBRARY
    assert config["library_fingerprint"] == model.config.library_fingerprint
    card = files["README.md"].decode()
    assert card.startswith("---\n") and "library_name: transformers" in card

    # What was pushed is exactly what `save_model_with_tokenizer` writes locally.
    local = save_model_with_tokenizer(model, tokenizer, tmp_path / "local")
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json"):
        assert files[name] == (local / name).read_bytes(), name


_LOAD_SCRIPT = NOT_IMPORTABLE_PRELUDE + textwrap.dedent(
    """
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    from huggingface_hub import constants

    repo_id, expected_path = sys.argv[2], sys.argv[3]
    torch.set_num_threads(int(sys.argv[4]))  # the parent's: a different split of a matmul can change a last bit
    assert constants.HF_HUB_OFFLINE
    expected = load_file(expected_path)
    config = AutoConfig.from_pretrained(repo_id, trust_remote_code=True)
    assert type(config).__name__ == "LlamaDCompConfig", type(config)
    model = AutoModelForCausalLM.from_pretrained(repo_id, trust_remote_code=True).eval()
    assert type(model).__name__ == "LlamaDCompForCausalLM", type(model)
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    base = AutoModel.from_pretrained(repo_id, trust_remote_code=True).eval()
    assert type(base).__name__ == "LlamaDCompModel", type(base)

    state = model.state_dict()
    for name, tensor in expected.items():
        if name.startswith("state."):
            key = name[len("state."):]
            assert state[key].dtype == tensor.dtype and torch.equal(state[key], tensor), key
    assert set(state) == {name[len("state."):] for name in expected if name.startswith("state.")}
    for name, buffer in model.named_buffers():
        if name.startswith("model.rotary_emb"):
            continue
        assert torch.equal(buffer, expected["state." + name]), name
    model.verify_library()

    tokenizer = AutoTokenizer.from_pretrained(repo_id)
    assert tokenizer("Add 3 and 4", add_special_tokens=False).input_ids == ADD_3_AND_4
    ids = tokenizer(["Add 3 and 4 ", "Multiply 12 by 5 "], return_tensors="pt").input_ids
    assert torch.equal(ids, expected["input_ids"])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, expected["logits"])
        assert torch.equal(model(ids, computer_mask=expected["computer_mask"]).logits, expected["masked_logits"])
        assert torch.equal(base(ids).last_hidden_state, expected["last_hidden_state"])
    print("hub load OK")
    """
).replace("ADD_3_AND_4", repr(ADD_3_AND_4))


def test_the_pushed_repo_loads_by_id_offline_in_a_clean_process(pushed, model, tokenizer, tmp_path):
    cache = tmp_path / "hub"
    snapshot = pushed.write_cache(cache, REPO_ID)
    assert (snapshot / "modeling_llama_dcomp.py").is_file()

    # Expected logits from the same bytes loaded locally: `from_pretrained` computes on a copy-on-write mmap of
    # model.safetensors (at file offsets whose alignment can change the last bit of CPU matmuls), so bit-exact
    # logits are defined against a load of the identical file; the weights themselves are compared with the
    # in-memory model's, bit for bit.
    local = LlamaDCompForCausalLM.from_pretrained(snapshot).eval()
    ids = tokenizer(["Add 3 and 4 ", "Multiply 12 by 5 "], return_tensors="pt").input_ids
    computer_mask = torch.zeros_like(ids, dtype=torch.bool)
    computer_mask[:, -1] = True
    with torch.no_grad():
        expected = {
            "input_ids": ids,
            "computer_mask": computer_mask,
            "logits": local(ids).logits,
            "masked_logits": local(ids, computer_mask=computer_mask).logits,
            "last_hidden_state": local.model(ids).last_hidden_state,
            **{f"state.{name}": tensor for name, tensor in model.state_dict().items()},
        }
        torch.testing.assert_close(expected["logits"], model(ids).logits, rtol=1e-6, atol=1e-6)
    expected_path = tmp_path / "expected.safetensors"
    # Tied embeddings share memory: save one copy per key.
    save_file({name: tensor.detach().clone().contiguous() for name, tensor in expected.items()}, expected_path)

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": "",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    env.pop("HF_HOME", None)
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, str(REPO), REPO_ID, str(expected_path), str(torch.get_num_threads())],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hub load OK" in result.stdout
    modules = list((tmp_path / "modules").rglob("modeling_llama_dcomp.py"))
    assert modules and all(path.read_bytes() == (REPO / "modeling_llama_dcomp.py").read_bytes() for path in modules)
