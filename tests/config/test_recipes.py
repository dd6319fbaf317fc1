"""Recipes: every shipped one loads; every mistake is one UserError line naming the file and key; round trips."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from audiovae.config.data import DataConfig, MelConfig
from audiovae.config.recipe import (
    Recipe,
    dump_recipe,
    load_recipe,
    recipe_from_dict,
    recipe_from_saved,
)
from audiovae.errors import UserError
from audiovae.models.conv import ConvModelConfig
from audiovae.models.dense import DenseModelConfig

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
RECIPES = sorted(RECIPES_DIR.glob("*.yaml"))
QUICKSTART = RECIPES_DIR / "quickstart.yaml"
MEL = RECIPES_DIR / "mel.yaml"


def raw_recipe(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def write_raw(tmp_path: Path, raw, name: str = "edited.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def load_error(path: Path, overrides: tuple[str, ...] = ()) -> str:
    """The message of the UserError load_recipe raises; checks it is a single line starting with the file."""
    with pytest.raises(UserError) as info:
        load_recipe(path, overrides=overrides)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


def test_recipes_folder_is_not_empty():
    assert len(RECIPES) >= 5, RECIPES


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_loads(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert recipe.name == path.stem
    assert recipe.model.family in ("conv", "mel", "dense")
    # the file's values arrive unchanged (lists become tuples)
    raw = raw_recipe(path)
    for section in ("data", "model", "loss", "train"):
        for key, value in raw[section].items():
            if isinstance(value, dict):
                continue
            expected = tuple(value) if isinstance(value, list) else value
            assert getattr(getattr(recipe, section), key) == expected, f"{section}.{key}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_frame_recipe_states_how_it_sounds(path):
    """A frame recipe writes its synthesis section out (method, iterations, momentum, noise_level), so its sound is in the
    recipe and not in a default; a waveform recipe has none to write."""
    raw, recipe = raw_recipe(path), load_recipe(path)
    if recipe.data.representation.is_waveform:
        assert "synthesis" not in raw and recipe.synthesis is None
    else:
        assert set(raw["synthesis"]) == {"method", "iterations", "momentum", "noise_level"}
        assert dataclasses.asdict(recipe.synthesis) == raw["synthesis"]


# (edit of the quickstart recipe, exact text after "<file>: ")
def _set(path: str, value):
    def edit(raw: dict) -> None:
        *parents, last = path.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return edit


def _uncropped_segment(samples: int):
    def edit(raw: dict) -> None:
        del raw["train"]["crop_samples"]
        raw["data"]["segment_samples"] = samples

    return edit


QUICKSTART_ERRORS = [
    ("misspelt model key", _set("model.stridez", [4, 4]), "model.stridez: unknown key (did you mean 'strides'?)"),
    ("misspelt nested key", _set("data.mel.n_melz", 40), "data.mel.n_melz: unknown key (did you mean 'n_mels'?)"),
    ("misspelt section", _set("trian", {"max_steps": 5}), "trian: unknown key (did you mean 'train'?)"),
    ("unknown section", _set("optimizer", {"lr": 1}),
     "optimizer: unknown key (valid sections: data, model, loss, train, adversarial, prior, synthesis)"),
    ("string for int", _set("train.batch_size", "eight"), "train.batch_size: must be an integer (got 'eight')"),
    ("bool for int", _set("train.batch_size", True), "train.batch_size: must be an integer (got True)"),
    ("float for int", _set("model.channels", 4.5), "model.channels: must be an integer (got 4.5)"),
    ("list for float", _set("train.learning_rate", [0.001]), "train.learning_rate: must be a number (got [0.001])"),
    ("list for optional float", _set("train.max_minutes", [1]), "train.max_minutes: must be a number or null (got [1])"),
    ("string for list", _set("model.strides", "4,4"), "model.strides: must be a list of an integer (got '4,4')"),
    ("bad list item", _set("model.strides", [4, "x"]), "model.strides[1]: must be an integer (got 'x')"),
    ("scalar section", _set("train", 5), "train: must be a mapping of keys to values (got 5)"),
    ("zero channels", _set("model.channels", 0), "model.channels: must be positive"),
    ("negative latent", _set("model.latent_size", -3), "model.latent_size: must be positive"),
    ("negative segment", _set("data.segment_samples", -16384), "data.segment_samples: must be at least 64"),
    ("zero batch", _set("train.batch_size", 0), "train.batch_size: must be positive"),
    ("negative steps", _set("train.max_steps", -1), "train.max_steps: must be positive"),
    ("zero mel bands", _set("data.mel.n_mels", 0), "data.mel.n_mels: must be positive"),
    ("even kernel", _set("model.kernel_size", 4), "model.kernel_size: must be odd and positive"),
    ("bands not power of two", _set("model.bands", 3), "model.bands: must be a power of two"),
    ("unknown choice", _set("train.optimizer", "sgd"), "train.optimizer: must be one of adamw, adam (got 'sgd')"),
    ("unknown family", _set("model.family", "transformer"),
     "model.family: must be one of conv, mel, dense (got 'transformer')"),
    # quickstart: 16 bands x 4 x 4 = 256; a stride of 3 makes 192, which does not divide the 8192-sample crop
    ("stride product vs crop", _set("model.strides", [4, 3]),
     "model.strides: total stride 192 (strides x bands) must divide the training length 8192"),
    ("stride product vs segment", _uncropped_segment(10000),
     "model.strides: total stride 256 (strides x bands) must divide the training length 10000"),
    ("crop longer than segment", _set("train.crop_samples", 32768),
     "train.crop_samples: must not exceed data.segment_samples"),
    ("conv with mel features", _set("data.features", "mel"),
     "data.features: the 'conv' model family needs features: wave"),
]


@pytest.mark.parametrize(("edit", "expected"), [case[1:] for case in QUICKSTART_ERRORS],
                         ids=[case[0] for case in QUICKSTART_ERRORS])
def test_quickstart_mistakes_name_file_and_key(tmp_path, edit, expected):
    raw = raw_recipe(QUICKSTART)
    edit(raw)
    path = write_raw(tmp_path, raw)
    assert load_error(path) == f"{path}: {expected}"


def test_dense_family_rejects_mel_features(tmp_path):
    raw = raw_recipe(RECIPES_DIR / "documents-example.yaml")
    raw["data"]["features"] = "mel"
    raw["data"]["segment_samples"] = 10240  # a multiple of mel.hop_length, so only the family check fails
    path = write_raw(tmp_path, raw)
    assert load_error(path) == f"{path}: data.features: the 'dense' model family needs features: wave"


def test_dense_family_rejects_crop(tmp_path):
    raw = raw_recipe(RECIPES_DIR / "documents-example.yaml")
    raw["train"]["crop_samples"] = 5000
    path = write_raw(tmp_path, raw)
    assert load_error(path) == f"{path}: train.crop_samples: the dense model needs whole segments"


def test_mel_family_rejects_wave_features(tmp_path):
    raw = raw_recipe(MEL)
    raw["data"]["features"] = "wave"
    path = write_raw(tmp_path, raw)
    assert load_error(path) == f"{path}: data.features: the 'mel' model family needs features: mel or spectrogram"


def test_mel_stride_product_must_divide_frames(tmp_path):
    raw = raw_recipe(MEL)
    raw["model"]["strides"] = [3]  # 16384 / 256 = 64 frames, not a multiple of 3
    path = write_raw(tmp_path, raw)
    assert load_error(path) == f"{path}: model.strides: product 3 must divide the frames per segment (64)"


def test_mel_segment_must_be_whole_frames(tmp_path):
    raw = raw_recipe(MEL)
    raw["data"]["segment_samples"] = 16000
    path = write_raw(tmp_path, raw)
    assert load_error(path) == (f"{path}: data.segment_samples: must be a multiple of mel.hop_length (256) "
                                "for mel features")


def test_mel_crop_must_be_whole_frames():
    message = load_error(MEL, ("train.crop_samples=2148",))  # 8 whole frames + 100 samples
    assert message == f"{MEL}: train.crop_samples: must be a multiple of data.mel.hop_length"


def test_mel_crop_longer_than_segment_is_rejected():
    message = load_error(MEL, ("train.crop_samples=32768",))  # segment is 16384
    assert "train.crop_samples" in message


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("data:\n  sample_rate: 16000\nmodel:\n  channels: 4: 5\ntrain:\n  max_steps: 5\n", encoding="utf-8")
    message = load_error(path)
    assert message.startswith(f"{path}: not valid YAML at line 4: ")


def test_unclosed_list_names_a_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  strides: [4, 4\ntrain:\n  max_steps: 5\n", encoding="utf-8")
    assert " not valid YAML at line " in load_error(path)


def test_missing_recipe_file(tmp_path):
    path = tmp_path / "nope.yaml"
    assert load_error(path) == f"{path}: recipe not found (the shipped ones are in recipes/)"


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n", encoding="utf-8")
    assert load_error(path) == (f"{path}: (top level): a recipe must be a mapping with data, model, loss "
                                "and train sections")


def test_top_level_list_with_override_is_a_user_error(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n", encoding="utf-8")
    load_error(path, ("train.max_steps=5",))


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    recipe = load_recipe(path)
    assert recipe == recipe_from_dict({}, "empty")
    assert recipe.model == ConvModelConfig()
    assert recipe.name == "empty"


# ---- overrides --------------------------------------------------------------------------------------------


def test_overrides_are_applied():
    recipe = load_recipe(QUICKSTART, overrides=("train.max_steps=5", "model.strides=[2, 8]",
                                                "data.folder=elsewhere", "train.max_minutes=null",
                                                "loss.beta=0.5", "data.mel.n_mels=40"))
    assert recipe.train.max_steps == 5
    assert recipe.model.strides == (2, 8)
    assert recipe.data.folder == "elsewhere"
    assert recipe.train.max_minutes is None
    assert recipe.loss.beta == 0.5 and isinstance(recipe.loss.beta, float)
    assert recipe.data.mel.n_mels == 40
    # untouched values stay as in the file
    assert recipe.model.channels == 32 and recipe.train.learning_rate == 0.002


def test_overrides_do_not_touch_the_file():
    before = QUICKSTART.read_bytes()
    assert load_recipe(QUICKSTART, overrides=("train.max_steps=5",)).train.max_steps == 5
    assert QUICKSTART.read_bytes() == before
    assert load_recipe(QUICKSTART).train.max_steps != 5


def test_override_can_add_a_key_missing_from_the_file():
    recipe = load_recipe(QUICKSTART, overrides=("data.hop_samples=4096",))
    assert recipe.data.hop_samples == 4096
    assert recipe.data.segment_hop == 4096


BAD_OVERRIDES = [
    ("train.max_stepz=5", "train.max_stepz: unknown key (did you mean 'max_steps'?)"),
    ("train.max_steps=five", "train.max_steps: must be an integer (got 'five')"),
    ("train.max_steps=0", "train.max_steps: must be positive"),
    ("model.channels=[4]", "model.channels: must be an integer (got [4])"),
    ("train.crop_samples=100000", "train.crop_samples: must not exceed data.segment_samples"),
    ("model.strides=[3]", "model.strides: total stride 48 (strides x bands) must divide the training length 8192"),
    ("trainn.max_steps=5", "trainn: unknown key (did you mean 'train'?)"),
    ("data.sample_rate.x=1", "data.sample_rate.x: 'sample_rate' is a value, not a section"),
    ("train.max_steps", "train.max_steps: an override must look like key.path=value (e.g. train.max_steps=200)"),
]


@pytest.mark.parametrize(("override", "expected"), BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_bad_override_names_the_key(override, expected):
    assert load_error(QUICKSTART, (override,)) == f"{QUICKSTART}: {expected}"


def test_override_into_empty_section(tmp_path):
    path = tmp_path / "empty-section.yaml"
    path.write_text("data:\n  sample_rate: 16000\ntrain:\n", encoding="utf-8")
    assert load_recipe(path).train.max_steps == 10000  # valid without overrides
    assert load_recipe(path, overrides=("train.max_steps=5",)).train.max_steps == 5


# ---- round trips ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_dump_and_reload_gives_an_equal_recipe(tmp_path, path):
    recipe = load_recipe(path)
    text = dump_recipe(recipe)
    assert recipe_from_dict(yaml.safe_load(text), recipe.name) == recipe
    copy_path = tmp_path / path.name
    copy_path.write_text(text, encoding="utf-8")
    assert load_recipe(copy_path) == recipe


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_saved_plain_data_rebuilds_the_recipe(path):
    recipe = load_recipe(path, overrides=("train.max_steps=7",))
    plain = recipe.to_dict()
    # plain data only: survives JSON unchanged
    assert json.loads(json.dumps(plain)) == plain
    saved = copy.deepcopy(plain)
    assert recipe_from_saved(plain) == recipe
    assert plain == saved  # recipe_from_saved does not consume its argument
    assert recipe_from_saved(plain).name == path.stem


# ---- derived properties -----------------------------------------------------------------------------------


def test_derived_properties_of_shipped_recipes():
    quickstart = load_recipe(QUICKSTART)
    assert quickstart.model.total_stride == 16 * 4 * 4
    assert quickstart.data.item_shape == (16384,)
    assert quickstart.data.segment_hop == 16384  # no hop_samples: segments do not overlap
    assert quickstart.training_samples == 8192  # the crop

    speech = load_recipe(RECIPES_DIR / "speech.yaml")
    assert speech.model.total_stride == 16 * 4 * 4 * 2
    assert speech.data.segment_hop == 16384

    music = load_recipe(RECIPES_DIR / "music.yaml")
    assert music.model.total_stride == 1024

    mel = load_recipe(MEL)
    assert mel.model.total_stride == 4
    assert mel.data.mel_frames == 16384 // 256 == 64
    assert mel.data.item_shape == (80, 64)
    assert mel.training_samples == 16384

    dense = load_recipe(RECIPES_DIR / "documents-example.yaml")
    assert isinstance(dense.model, DenseModelConfig)
    assert dense.data.item_shape == (10000,)


def test_derived_properties_follow_their_inputs():
    assert ConvModelConfig(strides=(3, 5), bands=1).total_stride == 15
    assert ConvModelConfig(strides=(2,), bands=8).total_stride == 16
    data = DataConfig(features="mel", segment_samples=3 * 128, mel=MelConfig(n_fft=512, hop_length=128, n_mels=10))
    assert data.mel_frames == 3
    assert data.item_shape == (10, 3)
    assert DataConfig(segment_samples=1000, hop_samples=250).segment_hop == 250
    assert DataConfig(segment_samples=1000).segment_hop == 1000


def test_exponent_floats_without_a_dot_are_numbers():
    # YAML 1.1 reads 1e-4 as a string; a learning rate written that way must still load
    assert load_recipe(QUICKSTART, overrides=("train.learning_rate=1e-4",)).train.learning_rate == 1e-4
    with pytest.raises(UserError, match="train.learning_rate: must be a number"):
        load_recipe(QUICKSTART, overrides=("train.learning_rate=fast",))


def test_spectral_windows_longer_than_the_training_crop_are_refused():
    with pytest.raises(UserError, match=r"loss.stft_windows: needs a window no longer than the training length \(256"):
        load_recipe(QUICKSTART, overrides=("train.crop_samples=256", "loss.stft_windows=[2048]"))
    with pytest.raises(UserError, match=r"loss.mel_windows: needs a window no longer than the training length \(256"):
        load_recipe(QUICKSTART, overrides=("train.crop_samples=256",))


def test_the_normalization_level_defaults_to_the_method():
    assert DataConfig(normalization="peak").level_db == -1.0
    assert DataConfig(normalization="rms").level_db == -20.0
    assert DataConfig(normalization="rms", target_db=-14.0).level_db == -14.0


def test_adversarial_section_is_checked_like_the_rest():
    recipe = load_recipe(QUICKSTART, overrides=("adversarial.enabled=true", "adversarial.windows=[1024, 512]"))
    assert recipe.adversarial.enabled and recipe.adversarial.windows == (1024, 512)
    assert not load_recipe(QUICKSTART).adversarial.enabled
    with pytest.raises(UserError, match=r"adversarial.windows: must not exceed the training length \(8192"):
        load_recipe(QUICKSTART, overrides=("adversarial.enabled=true", "adversarial.windows=[16384]"))
    with pytest.raises(UserError, match="adversarial.enabled: the adversarial stage is for waveform models"):
        load_recipe(RECIPES_DIR / "mel.yaml", overrides=("adversarial.enabled=true",))
    with pytest.raises(UserError, match="adversarial.wieght: unknown key \\(did you mean 'weight'\\?\\)"):
        load_recipe(QUICKSTART, overrides=("adversarial.wieght=1",))


# ---- loss terms and the 0.1 keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "terms"), [
    ({"reconstruction": "spectral"}, {"stft": 1.0, "log_mel": 1.0}),
    ({"reconstruction": "spectral", "stft_weight": 2.0, "mel_weight": 0.5}, {"stft": 2.0, "log_mel": 0.5}),
    ({"stft_weight": 0.0}, {"stft": 0.0, "log_mel": 1.0}),
    ({"reconstruction": "mse"}, {"mse": 1.0}),
    ({"reconstruction": "l1"}, {"l1": 1.0}),
    ({}, {"stft": 1.0, "log_mel": 1.0}),
])
def test_0_1_loss_keys_are_aliases_of_terms(old, terms):
    recipe = recipe_from_dict({"loss": old}, "r")
    assert recipe.loss.terms == terms
    assert recipe == recipe_from_dict({"loss": {"terms": terms}}, "r")
    assert "reconstruction" not in recipe.to_dict()["loss"]  # saved in the new form only


@pytest.mark.parametrize(("override", "expected"), [
    ("loss.mel_weight=-1", "loss.mel_weight: must be >= 0"),  # 0.1 blamed stft_weight
    ("loss.stft_weight=-1", "loss.stft_weight: must be >= 0"),
    ("loss.terms.log_mel=-1", "loss.terms.log_mel: weights must be >= 0"),
    ("loss.terms.msse=1", "loss.terms.msse: unknown loss term (known: stft, log_mel, complex_stft, mse, l1, frame_convergence, mel_weighted_l1)"),
    ("loss.reconstruction=mse", "loss.terms: give either terms or the 0.1 keys"),
])
def test_loss_term_mistakes_name_their_key(tmp_path, override, expected):
    raw = raw_recipe(QUICKSTART)
    if "weight" in override:  # a recipe written for 0.1
        del raw["loss"]["terms"]
        raw["loss"].update(reconstruction="spectral", stft_weight=1.0, mel_weight=1.0)
    path = write_raw(tmp_path, raw)
    assert load_error(path, (override,)).startswith(f"{path}: {expected}")


def test_spectral_terms_need_a_waveform_representation():
    message = load_error(MEL, ("loss.terms={stft: 1.0}",))
    assert message == f"{MEL}: loss.terms.stft: needs waveform features (data.features: wave)"
