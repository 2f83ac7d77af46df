"""Where and in what precision a calibration pass runs: a model placed by Accelerate's big-model inference
(`--calib-device-map`: every GPU, then CPU memory, then disk) gives the figures of the model in one place, and a
bfloat16 pass (`--calib-dtype bfloat16`) gives the same figures whole or block by block."""
from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
import torch
from conftest import cli, one_line_error

import gardener
from gardener.scoring import CalibOptions
from gardener.scoring.calibration import CalibrationPass

CRITERIA = ["block_influence", "angular_distance", "skip_loss"]


def _scores(path, data, criteria=CRITERIA, **options):
    calib = CalibOptions(calib_data=data, calib_clips=10, calib_batch=4, **options)
    return gardener.score(path, criteria, primary=None, calib=calib)


def _offload_folders(monkeypatch, tmp_path) -> list[int]:
    """Temporary folders go under tmp_path; returns how many offload folders there were as each pass closed."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    held, close = [], CalibrationPass.close

    def watched(self):
        held.append(len(list(tmp_path.glob("gardener-offload-*"))))
        close(self)

    monkeypatch.setattr(CalibrationPass, "close", watched)
    return held


def _blocks_on_disk(where: dict, prefix: str) -> bool:
    """Whether some of the blocks wait on disk (how many CPU memory holds differs between Accelerate versions)."""
    return any(name.startswith(prefix) and device == "disk" for name, device in where.items())


def test_a_llama_offloaded_to_disk_gives_the_figures_of_the_model_in_memory(llama_and_tokens, tmp_path, monkeypatch):
    """60 KB of CPU memory: the embeddings stay there, blocks beyond it wait on disk and are read as they run."""
    path, data = llama_and_tokens
    held = _offload_folders(monkeypatch, tmp_path)
    plain = _scores(path, data)
    placed = _scores(path, data, device_map="auto", max_memory="cpu=60KB")
    for name in CRITERIA:
        np.testing.assert_allclose(placed.scores[name], plain.scores[name], rtol=1e-6, atol=1e-9)
    where = placed.meta["calibration"]["device_map"]
    assert _blocks_on_disk(where, "model.layers") and where["model.embed_tokens"] == "cpu"
    assert plain.meta["calibration"]["device_map"] is None
    assert held == [0, 1] and not list(tmp_path.glob("gardener-offload-*"))  # one while it ran, none after


def _text_model(family: str):
    import transformers as T

    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, vocab_size=50)
    if family == "gpt2":  # its head shares the embeddings' weights
        return T.GPT2LMHeadModel(T.GPT2Config(n_embd=32, n_layer=4, n_head=2, vocab_size=50, n_positions=32,
                                              bos_token_id=1, eos_token_id=1))
    if family == "qwen2":
        return T.Qwen2ForCausalLM(T.Qwen2Config(num_key_value_heads=1, **small))
    return T.BertModel(T.BertConfig(**small))


@pytest.mark.parametrize("family, memory, blocks", [("gpt2", "cpu=70KB", "transformer.h"),
                                                    ("qwen2", "cpu=70KB", "model.layers"),
                                                    ("bert", "cpu=120KB", "encoder")])
def test_text_models_offloaded_to_disk_or_block_by_block_give_the_same_figures(family, memory, blocks,
                                                                              llama_and_tokens, tmp_path):
    _, data = llama_and_tokens
    _text_model(family).eval().save_pretrained(tmp_path / family)
    plain = _scores(tmp_path / family, data, CRITERIA[:2])
    placed = _scores(tmp_path / family, data, CRITERIA[:2], device_map="auto", max_memory=memory)
    sequential = _scores(tmp_path / family, data, CRITERIA[:2], sequential=True)
    for name in CRITERIA[:2]:
        np.testing.assert_allclose(placed.scores[name], plain.scores[name], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(sequential.scores[name], plain.scores[name], rtol=1e-6, atol=1e-9)
    where = placed.meta["calibration"]["device_map"]
    assert _blocks_on_disk(where, blocks)
    if family == "gpt2":
        assert where["lm_head"] == where["transformer.wte"]  # a tied head is where its weights are


def test_an_offloaded_block_loads_all_its_weights_as_it_begins(classifier, video_root):
    """One hook per offloaded block, none on its modules: a block that reads a child's weight without calling the
    child (VideoMAE's attention under transformers 4) gets it too."""
    calib = CalibrationPass(classifier, CalibOptions(video_root, calib_clips=2, device_map="auto",
                                                     max_memory="cpu=100KB"))
    try:
        offloaded = [b for b in calib.blocks if getattr(b, "_hf_hook", None) is not None and b._hf_hook.offload]
        assert len(offloaded) == len(calib.blocks)  # here every block waits on disk
        for block in offloaded:
            assert block._hf_hook.place_submodules
            assert not any(hasattr(m, "_hf_hook") for m in block.modules() if m is not block)
            assert all(p.device.type == "meta" for p in block.parameters())  # until it runs
    finally:
        calib.close()


def test_a_bfloat16_checkpoint_offloaded_to_disk_runs_in_float32(llama_and_tokens, tmp_path):
    import transformers as T

    path, data = llama_and_tokens
    T.LlamaForCausalLM.from_pretrained(path).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    plain = _scores(tmp_path / "bf16", data, CRITERIA[:2])
    placed = _scores(tmp_path / "bf16", data, CRITERIA[:2], device_map="auto", max_memory="cpu=60KB")
    for name in CRITERIA[:2]:
        np.testing.assert_allclose(placed.scores[name], plain.scores[name], rtol=1e-6)
    stored_in_float32 = _scores(path, data, CRITERIA[:2], device_map="auto", max_memory="cpu=60KB")
    assert placed.meta["calibration"]["device_map"] == stored_in_float32.meta["calibration"]["device_map"]  # sized
    assert _blocks_on_disk(placed.meta["calibration"]["device_map"], "model.layers")  # as the pass holds it


def test_a_video_classifier_offloaded_to_disk_gives_the_same_figures(classifier, video_root):
    options = dict(calib_data=video_root, calib_clips=4, calib_batch=2)
    plain = gardener.score(classifier, CRITERIA, primary=None, calib=CalibOptions(**options))
    placed = gardener.score(classifier, CRITERIA, primary=None,
                            calib=CalibOptions(**options, device_map="auto", max_memory="cpu=100KB"))
    for name in CRITERIA:
        np.testing.assert_allclose(placed.scores[name], plain.scores[name], rtol=1e-6, atol=1e-9)
    assert _blocks_on_disk(placed.meta["calibration"]["device_map"], "videomae.encoder")


def test_bfloat16_block_by_block_equals_the_whole_model_in_bfloat16(llama_and_tokens):
    """The sequential pass feeds each block what the whole bfloat16 model would; both stay near float32."""
    path, data = llama_and_tokens
    whole = _scores(path, data, CRITERIA[:2], calib_dtype="bfloat16")
    sequential = _scores(path, data, CRITERIA[:2], calib_dtype="bfloat16", sequential=True)
    full = _scores(path, data, CRITERIA[:2])
    for name in CRITERIA[:2]:
        np.testing.assert_allclose(sequential.scores[name], whole.scores[name], rtol=1e-6)
        np.testing.assert_allclose(whole.scores[name], full.scores[name], rtol=1e-2)
        assert not np.allclose(whole.scores[name], full.scores[name], rtol=1e-6, atol=0)  # it did run in bfloat16
    assert whole.meta["calibration"]["dtype"] == "bfloat16"


def test_a_video_model_runs_in_bfloat16_whole_and_block_by_block(classifier, video_root):
    """Pixels are cast to the pass's dtype (token ids stay integers)."""
    options = dict(calib_data=video_root, calib_clips=4, calib_batch=2)
    whole, sequential, full = (gardener.score(classifier, CRITERIA[:2], primary=None, calib=CalibOptions(**options, **o))
                               for o in ({"calib_dtype": "bfloat16"}, {"calib_dtype": "bfloat16", "sequential": True},
                                         {}))
    for name in CRITERIA[:2]:
        np.testing.assert_allclose(sequential.scores[name], whole.scores[name], rtol=1e-6)
        np.testing.assert_allclose(whole.scores[name], full.scores[name], rtol=0.1)  # 1 - cos near 1e-4 here
        assert not np.allclose(whole.scores[name], full.scores[name], rtol=1e-6, atol=0)


def test_bfloat16_skip_loss_block_by_block_equals_the_whole_model_in_bfloat16(llama_and_tokens):
    path, data = llama_and_tokens
    whole = _scores(path, data, ["skip_loss"], calib_dtype="bfloat16")
    sequential = _scores(path, data, ["skip_loss"], calib_dtype="bfloat16", sequential=True)
    np.testing.assert_allclose(sequential.scores["skip_loss"], whole.scores["skip_loss"], rtol=1e-4, atol=1e-6)


def test_the_command_line_places_the_model_and_the_json_says_where(llama_and_tokens, tmp_path, capsys):
    path, data = llama_and_tokens
    code, _, err = cli(["score", path, "--criteria", "block_influence", "--criterion", "block_influence",
                        "--calib-data", data, "--calib-clips", 10, "--calib-device-map", "auto",
                        "--calib-max-memory", "cpu=60KB", "--calib-dtype", "float32", "--json", tmp_path / "s.json"],
                       capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "s.json").read_text())["meta"]["calibration"]
    assert _blocks_on_disk(record["device_map"], "model.layers") and record["dtype"] == "float32"


@pytest.mark.parametrize("options, message", [
    (["--calib-max-memory", "cpu=1GiB"], "--calib-max-memory limits what --calib-device-map places"),
    (["--calib-device-map", "auto", "--calib-sequential"], "--calib-device-map and --calib-sequential: choose one"),
    (["--calib-device-map", "everywhere"], "--calib-device-map 'everywhere': expected one of auto, balanced"),
    (["--calib-device-map", "auto", "--calib-max-memory", "gpu0:1GB"], "--calib-max-memory 'gpu0:1GB': expected "
                                                                        "DEVICE=SIZE pairs"),
    (["--calib-device-map", "auto", "--calib-max-memory", "0=lots"], "--calib-max-memory '0=lots'"),
    (["--calib-dtype", "float16"], "--calib-dtype 'float16': expected one of float32, bfloat16"),
    (["--calib-device-map", "auto", "--calib-max-memory", "cpu=1KB"], "--calib-max-memory 'cpu=1KB': no device may "
                                                                       "hold even the model's first part"),
    (["--calib-device-map", "auto", "--calib-max-memory", "cpu=1GiB,cpu=2GiB"], "names cpu twice"),
    (["--calib-device-map", "auto", "--calib-max-memory", "\u00b2=1GiB"], "expected DEVICE=SIZE pairs"),
    (["--calib-device-map", "auto", "--calib-max-memory", "7=1GiB"], "this machine has no GPU 7"),
], ids=["memory-without-map", "map-and-sequential", "unknown-map", "malformed-memory", "unknown-size", "dtype",
        "nothing-fits", "twice", "not-a-number", "no-such-gpu"])
def test_a_placement_no_pass_can_use_is_one_line_before_any_model_loads(llama_and_tokens, capsys, monkeypatch,
                                                                        options, message):
    from gardener.scoring import calibration

    path, data = llama_and_tokens
    monkeypatch.setattr(calibration, "load_model", lambda *a: pytest.fail("a model was loaded"))
    code, _, err = cli(["score", path, "--criteria", "block_influence", "--criterion", "block_influence",
                        "--calib-data", data, *options], capsys)
    assert code == 2 and message in one_line_error(err)


def test_a_placement_mistake_is_said_even_where_no_calibration_criterion_runs(llama_and_tokens, capsys):
    path, data = llama_and_tokens
    code, _, err = cli(["score", path, "--criteria", "entropy", "--calib-data", data, "--calib-dtype", "float16"],
                       capsys)
    assert code == 2 and "--calib-dtype 'float16'" in one_line_error(err)


def test_a_pass_that_cannot_begin_leaves_no_offload_folder(llama_and_tokens, tmp_path, monkeypatch, capsys):
    """Removed by the pass itself, not by the garbage collector (the folders made are kept referenced here)."""
    path, _ = llama_and_tokens
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    made, real = [], tempfile.TemporaryDirectory
    monkeypatch.setattr(tempfile, "TemporaryDirectory", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    bad = tmp_path / "ids.jsonl"
    bad.write_text(json.dumps({"input_ids": [1, 2, 99999]}) + "\n")  # an id beyond the vocabulary
    code, _, err = cli(["score", path, "--criteria", "block_influence", "--criterion", "block_influence",
                        "--calib-data", bad, "--calib-device-map", "auto"], capsys)
    assert code == 2 and "vocabulary" in one_line_error(err)
    assert len(made) == 1 and not list(tmp_path.glob("gardener-offload-*"))


def test_the_main_device_is_the_first_accelerator_the_map_uses():
    from gardener.scoring.placement import main_device

    assert main_device({"embed": 1, "blocks": 0}) == torch.device("cuda:1")
    assert main_device({"embed": "cpu", "blocks": "cuda:1", "head": "disk"}) == torch.device("cuda:1")
    assert main_device({"embed": torch.device("cpu"), "blocks": "mps"}) == torch.device("mps")
    assert main_device({"embed": "cpu", "blocks": "disk"}) == torch.device("cpu")


def test_sdpa_where_the_model_class_has_it_else_eager(tmp_path):
    """Swin V2 has no SDPA attention: its calibration pass runs eager attention, as its finetuning does."""
    import transformers as T

    from gardener.data.synthetic_images import write_images
    from gardener.scoring.placement import attention_of

    assert attention_of(T.LlamaForCausalLM) == "sdpa" and attention_of(T.Swinv2ForImageClassification) == "eager"
    torch.manual_seed(0)
    config = T.Swinv2Config(image_size=32, patch_size=4, embed_dim=16, depths=[2, 3], num_heads=[2, 2], window_size=4,
                            num_labels=2)
    T.Swinv2ForImageClassification(config).eval().save_pretrained(tmp_path / "swinv2")
    write_images(tmp_path / "images", classes=("horizontal", "vertical"), per_class=2, test_per_class=1)
    result = gardener.score(tmp_path / "swinv2", ["block_influence"], primary=None,
                            calib=CalibOptions(tmp_path / "images", calib_clips=2))
    assert len(result.scores["block_influence"]) == 3 and np.isfinite(result.scores["block_influence"]).all()


@pytest.mark.gpu
def test_a_model_larger_than_the_gpu_memory_it_is_given_runs_across_gpu_cpu_and_disk(llama_and_tokens):
    """On a GPU: 100 KB of it, then 40 KB of CPU memory, then disk; the figures of the whole model on the GPU."""
    path, data = llama_and_tokens
    placed = _scores(path, data, device_map="auto", max_memory="0=100KB,cpu=40KB")
    where = set(placed.meta["calibration"]["device_map"].values())
    assert "0" in where and "disk" in where
    plain = _scores(path, data)
    for name in CRITERIA:
        np.testing.assert_allclose(placed.scores[name], plain.scores[name], rtol=1e-3, atol=1e-5)
