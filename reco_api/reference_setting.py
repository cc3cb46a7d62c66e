"""What reference embeddings depend on: one setting record, its short hash, and the check on load.

Every cached artefact carries the record of the setting it was made with:
* the benchmark reference pickle, in the sidecar `{pickle}.meta.json` with the pickle's content hash;
* each per-category reference cache file, embedded in the file;
* the run directory, in `config.json` (key "setting").

File and directory names: the paper's setting keeps the original names (so the authors' published
pickle drops in and run directories are where the original put them); any other setting appends a short
hash of its record, so different settings never share a file.

A weights file is identified by its name, size and content hash (utils.file_identity: SHA-256, computed
once and remembered by the file's stat in {dir_ckpt}/.file_hashes.json), so a file replaced by another
of the same name, size and modification time is another setting; an open_clip release folder by its name;
else a library tag, 'random', or 'unset'. Names (experiment names, cache directories) hash the file name
only, never its size or content: the paper's names stay the authors' whatever the bytes, and other
weights of the same file name are recomputed under the same name (the record tells them apart). The weights
a model was released with (the OpenAI file of a CLIP arch or the 'openai' tag; deit_s_sin_dist.pth for
DeiT-S/16-SIN) count as that arch's canonical weights, so their file may live anywhere. An unset value
or an absent file matches any recorded weights of that name: the model is then not needed by the run
(e.g. the retrieval CLIP when the reference pickle exists), and a recomputation would fail on it clearly.
"""
from __future__ import annotations

import hashlib
import json
import logging
import pickle
from pathlib import Path
from typing import Any, Optional

from networks.clip import openai_checkpoint_name
from networks.encoder_registry import encoder_names, get_encoder
from networks.weights import weights_source
from reco_api.settings import ModelSpec, ReferenceSettings, paper_references
from utils.file_identity import content_hash
from utils.io import atomic_write, save_json

logger = logging.getLogger("reco")

SIDECAR_SUFFIX = ".meta.json"
CLIP_RELEASE_TAG = "openai"  # open_clip's tag of the OpenAI releases

Record = dict[str, Any]


def weights_identity(value: Optional[str], memo: Optional[Path] = None) -> Record:
    """{'kind': 'file', 'name': basename, 'bytes': size, 'sha256': content hash} (bytes and sha256 None if
    absent) | {'kind': 'folder', 'name'} | {'kind': 'tag', 'name'} | {'kind': 'random'} | {'kind': 'unset'}.

    `memo`: the JSON file remembering content hashes by stat (None: remembered for this process only).
    """
    kind, resolved = weights_source(value)
    if kind == "file":
        path = Path(resolved)
        return {"kind": "file", "name": path.name, "bytes": path.stat().st_size, "sha256": content_hash(path, memo)}
    if kind == "missing_file":
        return {"kind": "file", "name": Path(resolved).name, "bytes": None, "sha256": None}
    if kind == "folder":  # an open_clip release folder: identified by its name
        return {"kind": "folder", "name": Path(resolved).name}
    if kind == "tag":
        return {"kind": "tag", "name": str(resolved)}
    return {"kind": kind}


def category_setting(settings: ReferenceSettings) -> Record:
    """What one category's reference embedding depends on, besides the contexts it eliminated."""
    models, memo = settings.models, settings.hash_memo
    return {
        "encoder": _model(models.encoder, memo),
        "retrieval_clip": _model(models.clip, memo),
        "retrieved_from": settings.collection.retrieval_tag,  # in_{split} (ImageNet) or col_{name} (a folder)
        "n_imgs": settings.n_imgs,
        "text_attention": _model(models.dense_clip, memo) if models.text_attention else None,
        "reproduce_seed_slice_bug": settings.reproduce_seed_slice_bug,
    }


def reference_setting(settings: ReferenceSettings) -> Record:
    """What the reference embeddings of a category list depend on (the sidecar of the reference pickle).

    Aliases are kept only where they take effect (their target is an eliminated context).
    """
    contexts = settings.contexts
    aliases = {name: target for name, target in sorted(settings.aliases.items()) if target in contexts}
    return {**category_setting(settings), "context_categories": contexts, "reference_aliases": aliases}


def run_setting(settings: ReferenceSettings) -> Record:
    """What a benchmark run's predictions depend on: the references, and DenseCLIP at inference."""
    models = settings.models
    dense = _model(models.dense_clip, settings.hash_memo) if models.dense_clip_inference else None
    return {**reference_setting(settings), "dense_clip_inference": dense}


def setting_hash(record: Record) -> str:
    """8 hex digits naming a setting; canonical weights hash alike wherever their file lives."""
    text = json.dumps(_naming_form(record), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def is_paper_setting(settings: ReferenceSettings, strict: bool = False) -> bool:
    """True if the reference setting is the paper's in everything the experiment name does not spell out.

    The experiment name already holds the ImageNet split (or the collection), context elimination on/off
    and text attention on/off, and the pickle name holds k; `strict` also requires the paper's values of those (the setting
    the authors published their pickles for).
    """
    paper = paper_references(settings, strict)
    return _naming_form(reference_setting(settings)) == _naming_form(reference_setting(paper))


def reference_experiment_name(settings: ReferenceSettings) -> str:
    """The experiment name of the reference pickle: the original name, plus a setting hash unless paper."""
    if is_paper_setting(settings):
        return settings.experiment_name
    return f"{settings.experiment_name}_{setting_hash(reference_setting(settings))}"


def run_experiment_name(settings: ReferenceSettings) -> str:
    """The run directory's experiment name: reference_experiment_name + '_dc' with DenseCLIP inference.

    With text attention the DenseCLIP is already in the reference setting; without it, a non-paper
    DenseCLIP adds its own hash.
    """
    name = reference_experiment_name(settings)
    if not settings.models.dense_clip_inference:
        return name
    name += "_dc"
    dense = run_setting(settings)["dense_clip_inference"]
    paper_dense = run_setting(paper_references(settings))["dense_clip_inference"]
    if settings.models.text_attention or _naming_form(dense) == _naming_form(paper_dense):
        return name
    return f"{name}_{setting_hash(dense)}"


def setting_differences(recorded: Any, current: Any, prefix: str = "") -> list[str]:
    """Keys where a recorded setting differs from the current one ([] when they match).

    Weights match when their identities are equal, when both are the arch's canonical weights, or when
    the current ones are unset or an absent file of the recorded name (the run does not load that model).
    """
    if _is_model(recorded) and _is_model(current):
        differences = setting_differences(recorded["arch"], current["arch"], prefix + "arch.")
        if not differences and _weights_differ(recorded["weights"], current["weights"], current["arch"]):
            differences.append(f"{prefix}weights: {json.dumps(recorded['weights'])} -> {json.dumps(current['weights'])}")
        return differences
    if isinstance(current, dict) and isinstance(recorded, dict):
        keys = sorted(set(current) | set(recorded))
        return [d for k in keys for d in setting_differences(recorded.get(k), current.get(k), f"{prefix}{k}.")]
    if recorded != current:
        return [f"{prefix.rstrip('.')}: {json.dumps(recorded)} -> {json.dumps(current)}"]
    return []


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_with_sidecar(obj: Any, path: Path, setting: Record) -> None:
    """Pickle `obj` to `path` with its settings record in the sidecar, which names the pickle's content hash.

    The sidecar is renamed into place first, then the pickle: a kill between the two leaves a sidecar
    whose hash does not match the pickle beside it, which reads as "recompute", never as a match, and
    never as a sidecar-less (published) pickle.
    """
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    save_json(sidecar_path(path), {"setting": setting, "pickle_sha256": _sha256(data)}, sort_keys=True)
    with atomic_write(path, "wb") as f:
        f.write(data)


def sidecar_differences(path: Path, current: Record) -> Optional[list[str]]:
    """How the setting recorded beside the pickle `path` differs from `current`: None when there is no
    sidecar, [] when it holds `current` and names this pickle's bytes; an unreadable sidecar or one
    naming other bytes (a run killed between its two renames) is a difference."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None
    try:
        record = json.loads(sidecar.read_text())
        setting, digest = record["setting"], record["pickle_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [f"its settings record {sidecar.name} is unreadable or from an older version ({e})"]
    if not isinstance(setting, dict) or digest != _sha256(path.read_bytes()):
        return [f"its settings record {sidecar.name} names another pickle (a run stopped between writing them)"]
    return setting_differences(setting, current)


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _model(spec: ModelSpec, memo: Optional[Path]) -> Record:
    return {"arch": spec.arch, "weights": weights_identity(spec.weights, memo)}


def _is_model(node: Any) -> bool:
    return isinstance(node, dict) and set(node) == {"arch", "weights"} and isinstance(node["weights"], dict)


def _is_canonical(weights: Record, arch: str) -> bool:
    """The weights `arch` was released with (or unset: the run does not load the model)."""
    if weights.get("kind") == "unset":
        return True
    if weights.get("kind") == "file":
        return weights.get("name") == _release_file(arch)
    return weights.get("kind") == "tag" and weights.get("name") == CLIP_RELEASE_TAG and arch not in encoder_names()


def _release_file(arch: str) -> Optional[str]:
    """The file the weights of `arch` were released as: the encoder registry's release_file, or the
    CLIP registry's OpenAI file (None: no such release, e.g. the test archs)."""
    if arch in encoder_names():
        return get_encoder(arch).release_file
    try:
        return openai_checkpoint_name(arch)
    except ValueError:  # not a CLIP, or a CLIP without an OpenAI release
        return None


def _weights_differ(recorded: Any, current: Record, arch: str) -> bool:
    if not isinstance(recorded, dict) or current.get("kind") == "unset":
        return not isinstance(recorded, dict)
    if recorded.get("kind") == "file" and current.get("kind") == "file" and recorded.get("name") == current.get("name"):
        if current.get("bytes") is None or recorded.get("bytes") is None:  # absent then or now: not loaded
            return False
        # a record without a content hash (older versions) cannot vouch for the bytes
        return (recorded.get("bytes"), recorded.get("sha256")) != (current["bytes"], current.get("sha256"))
    if _is_canonical(recorded, arch) and _is_canonical(current, arch):
        return False
    return recorded != current


def _naming_form(record: Any) -> Any:
    """The record without file sizes and content hashes, with an arch's release weights (or unset weights)
    as 'canonical'."""
    def visit(node: Any) -> Any:
        if _is_model(node):
            weights = node["weights"]
            return {"arch": node["arch"], "weights": "canonical" if _is_canonical(weights, node["arch"]) else
                    {k: v for k, v in weights.items() if k not in ("bytes", "sha256")}}
        if isinstance(node, dict):
            return {k: visit(v) for k, v in node.items()}
        return node

    return visit(record)

