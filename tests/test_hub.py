"""`push_to_hub` without a network, through public APIs only: in a child process with `HF_HUB_OFFLINE=1`, the REAL
`model.push_to_hub(repo_id)` and `tokenizer.push_to_hub(repo_id)` run (transformers' `PushToHubMixin`: save to a
temporary folder, build the model card, make the commit operations) with only the two calls that would reach the
Hub replaced by a recorder:

* `HfApi.create_repo` (answers with the repo's URL, as the Hub does for `exist_ok=True`);
* `HfApi.create_commit` (reads every `CommitOperationAdd` payload while its temporary file still exists, checks it
  against the operation's own sha256, writes it out, and answers with a commit id).

Any other request fails in offline mode (the model card lookup finds no README.md, as for a new repo, and starts
from the template). The recorded files are then laid out as a Hub cache snapshot
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

import pytest
import torch
from model_fixtures import CODE_FILES, LIBRARY, NOT_IMPORTABLE_PRELUDE, REPO
from safetensors.torch import load_file, save_file

from modeling_llama_dcomp import LlamaDCompForCausalLM

pytest.importorskip("llama_models", reason="pip install --no-deps llama-models==0.3.0")
pytestmark = pytest.mark.slow  # child processes

REPO_ID = "llama-dcomp-test/tiny-llama-dcomp"
ADD_3_AND_4 = [2261, 220, 18, 323, 220, 19]

# argv: [output folder, repo id]. Builds the tiny model (LLaMA-3 vocabulary, computer after layer 1, gate 0.5, W_out
# from the number tokens), pushes model and tokenizer, and writes what the recorder saw, the local save and the
# model's state to the output folder.
_PUSH_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    from pathlib import Path

    from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, RepoUrl, constants

    from library.install import from_llama, save_model_with_tokenizer
    from library.tokenizer import llama3_tokenizer
    from model_fixtures import COMPUTER, LIBRARY, tiny_llama
    from safetensors.torch import save_file

    out, repo_id = Path(sys.argv[1]), sys.argv[2]
    assert constants.HF_HUB_OFFLINE
    ENDPOINT = "https://huggingface.co"
    record = {"created": [], "commits": []}

    def create_repo(api, repo_id, *, repo_type=None, exist_ok=False, private=None, **kwargs):
        assert repo_type in (None, "model") and exist_ok, (repo_type, exist_ok)
        record["created"].append(repo_id)
        return RepoUrl(f"{ENDPOINT}/{repo_id}", endpoint=ENDPOINT)

    def create_commit(api, repo_id, operations, *, commit_message, repo_type=None, revision=None, **kwargs):
        assert repo_id in record["created"], "commit to a repo that was never created"
        assert repo_type in (None, "model") and revision is None and not kwargs.get("create_pr")
        index = len(record["commits"])
        files = {}
        for operation in operations:
            assert isinstance(operation, CommitOperationAdd), operation
            with operation.as_file() as handle:  # the push's temporary folder still exists here
                data = handle.read()
            assert hashlib.sha256(data).digest() == operation.upload_info.sha256, operation.path_in_repo
            path = out / "commits" / str(index) / operation.path_in_repo
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            files[operation.path_in_repo] = hashlib.sha256(data).hexdigest()
        oid = hashlib.sha1(json.dumps([index, commit_message, sorted(files.items())]).encode()).hexdigest()
        record["commits"].append({"repo_id": repo_id, "message": commit_message, "files": files, "oid": oid})
        return CommitInfo(commit_url=f"{ENDPOINT}/{repo_id}/commit/{oid}", commit_message=commit_message,
                          commit_description="", oid=oid)

    HfApi.create_repo, HfApi.create_commit = create_repo, create_commit
    tokenizer = llama3_tokenizer()
    llama = tiny_llama(vocab_size=len(tokenizer), tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = from_llama(llama, computer_layer=1, library=LIBRARY, tokenizer=tokenizer,
                       **{**COMPUTER, "computer_gate_init": 0.5}).eval()
    returned = [model.push_to_hub(repo_id).oid, tokenizer.push_to_hub(repo_id).oid]
    assert returned == [commit["oid"] for commit in record["commits"]]
    save_model_with_tokenizer(model, tokenizer, out / "local")
    state = {name: tensor.detach().clone().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, out / "state.safetensors")  # tied embeddings: one copy per key
    (out / "record.json").write_text(json.dumps(record))
    print("push OK")
    """
)


class Pushed:
    """What the child's recorder saw: created repos, commits (message, files), and each file's bytes."""

    def __init__(self, folder: Path):
        self.folder = folder
        record = json.loads((folder / "record.json").read_text())
        self.created, self.commits = record["created"], record["commits"]

    def commit_files(self, index: int) -> dict[str, bytes]:
        return {
            path: (self.folder / "commits" / str(index) / path).read_bytes() for path in self.commits[index]["files"]
        }

    def files(self) -> dict[str, bytes]:
        """The repo's files at its last commit (later commits replace earlier files)."""
        files: dict[str, bytes] = {}
        for index in range(len(self.commits)):
            files.update(self.commit_files(index))
        return files

    def write_cache(self, cache: Path, repo_id: str) -> Path:
        """The repo's files at its last commit as a Hub cache entry (blobs by sha256, snapshot symlinks,
        refs/main); returns the snapshot folder."""
        root = cache / ("models--" + repo_id.replace("/", "--"))
        head = self.commits[-1]["oid"]
        snapshot = root / "snapshots" / head
        for path, data in self.files().items():
            blob = root / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = snapshot / path
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / "main").write_text(head)
        return snapshot


@pytest.fixture(scope="module")
def pushed(tmp_path_factory) -> Pushed:
    """The real pushes, run offline in a child process with only `create_repo` / `create_commit` recorded."""
    folder = tmp_path_factory.mktemp("pushed")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path_factory.mktemp("empty_hub")),
    }
    result = subprocess.run(
        [sys.executable, "-c", _PUSH_SCRIPT, str(folder), REPO_ID],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0 and "push OK" in result.stdout, result.stdout + result.stderr
    return Pushed(folder)


def test_push_creates_the_repo_and_commits_model_code_card_and_tokenizer(pushed):
    assert pushed.created == [REPO_ID, REPO_ID]
    model_commit, tokenizer_commit = pushed.commits
    assert model_commit["message"].startswith("Upload") and tokenizer_commit["message"].startswith("Upload")
    assert {"config.json", "model.safetensors", "generation_config.json", "README.md", *CODE_FILES} == set(
        model_commit["files"]
    )
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(tokenizer_commit["files"])

    files = pushed.files()
    for name in CODE_FILES:  # the run-time code travels, byte for byte
        assert files[name] == (REPO / name).read_bytes(), name
    config = json.loads(files["config.json"])
    assert config["auto_map"] == {
        "AutoConfig": "configuration_llama_dcomp.LlamaDCompConfig",
        "AutoModel": "modeling_llama_dcomp.LlamaDCompModel",
        "AutoModelForCausalLM": "modeling_llama_dcomp.LlamaDCompForCausalLM",
    }
    assert config["model_type"] == "llama_dcomp" and config["library_programs"] == LIBRARY
    local = pushed.folder / "local"
    assert config["library_fingerprint"] == json.loads((local / "config.json").read_text())["library_fingerprint"]
    card = files["README.md"].decode()
    assert card.startswith("---\n") and "library_name: transformers" in card

    # What was pushed is exactly what `save_model_with_tokenizer` writes locally.
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


def test_the_pushed_repo_loads_by_id_offline_in_a_clean_process(pushed, tmp_path):
    from library.tokenizer import llama3_tokenizer

    cache = tmp_path / "hub"
    snapshot = pushed.write_cache(cache, REPO_ID)
    assert (snapshot / "modeling_llama_dcomp.py").is_file()

    # Expected logits from the same bytes loaded locally: `from_pretrained` computes on a copy-on-write mmap of
    # model.safetensors (at file offsets whose alignment can change the last bit of CPU matmuls), so bit-exact
    # logits are defined against a load of the identical file; the weights are compared with the pushing model's
    # state, bit for bit.
    local = LlamaDCompForCausalLM.from_pretrained(snapshot).eval()
    ids = llama3_tokenizer()(["Add 3 and 4 ", "Multiply 12 by 5 "], return_tensors="pt").input_ids
    computer_mask = torch.zeros_like(ids, dtype=torch.bool)
    computer_mask[:, -1] = True
    with torch.no_grad():
        expected = {
            "input_ids": ids,
            "computer_mask": computer_mask,
            "logits": local(ids).logits,
            "masked_logits": local(ids, computer_mask=computer_mask).logits,
            "last_hidden_state": local.model(ids).last_hidden_state,
            **{f"state.{name}": tensor for name, tensor in load_file(pushed.folder / "state.safetensors").items()},
        }
    expected_path = tmp_path / "expected.safetensors"
    save_file(expected, expected_path)

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


def test_every_run_time_file_is_installed_and_type_checked():
    """A run-time sibling missing from pyproject's `py-modules` is absent from a wheel install (the model would
    not import), one missing from mypy's `files` goes unchecked."""
    import tomllib

    settings = tomllib.loads((REPO / "pyproject.toml").read_text())
    run_time = {path.stem for path in REPO.glob("*.py") if path.name != "train.py"}
    assert set(settings["tool"]["setuptools"]["py-modules"]) == run_time
    assert {Path(name).stem for name in settings["tool"]["mypy"]["files"]} == run_time
    assert {Path(name).stem for name in CODE_FILES} == run_time
