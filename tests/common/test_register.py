import pytest

from common.register import Registry, RegistryError, closest


def test_register_get_list():
    reg = Registry()

    @reg.register_model("Alpha")
    class Alpha:
        pass

    assert reg.get("model", "Alpha") is Alpha
    assert reg.list("model") == ["Alpha"]


def test_duplicate_name_names_both_definitions():
    reg = Registry()

    @reg.register_model("Alpha")
    class First:
        pass

    with pytest.raises(RegistryError, match=r"registered twice: by .*First and by .*Second"):
        @reg.register_model("Alpha")
        class Second:
            pass


def test_unknown_name_lists_known_and_closest():
    reg = Registry()
    reg.register_model("DCMHT")(type("DCMHT", (), {}))
    reg.register_model("MITH")(type("MITH", (), {}))
    with pytest.raises(RegistryError, match=r"unknown model 'DCHMT'; did you mean 'DCMHT'\? \(registered models: DCMHT, MITH\)"):
        reg.get("model", "DCHMT")


def test_closest_name_ignores_case():
    assert closest("Adamw", ["Adam", "AdamW", "BertAdam"]) == "; did you mean 'AdamW'?"
    assert closest("vit", ["CLIP", "ViT"]) == "; did you mean 'ViT'?"
    assert closest("xyz", ["CLIP", "ViT"]) == ""


def test_unknown_kind_and_base_class_check():
    reg = Registry()
    with pytest.raises(RegistryError, match="unknown registry kind 'modle'; did you mean 'model'"):
        reg.get("modle", "x")

    class Base:
        pass

    reg.set_base("model", Base)
    with pytest.raises(RegistryError, match="must subclass Base"):
        reg.register_model("Bad")(type("Bad", (), {}))


def test_global_registry_lists_every_kind_and_builtin_methods():
    from main import register_all
    registry = register_all()
    assert {"DCMHT", "CLIPBaseline"} <= set(registry.list("model"))
    assert "CLIP" in registry.list("backbone")
    assert {"synthetic", "mat_triple"} <= set(registry.list("dataset"))
    assert {"BertAdam", "AdamW"} <= set(registry.list("optimizer"))
    assert registry.list("runner") == ["BaseRunner"] and registry.list("evaluator") == [
        "caption_recall", "cross_modal", "image_retrieval"]
    from dataset.single_modal import evaluation_transform as single_modal_view
    from dataset.transforms import evaluation_transform
    assert registry.meta("dataset", "caption_pairs") == {"evaluator": "caption_recall",
                                                          "evaluation_transform": evaluation_transform}
    assert registry.meta("dataset", "cifar10") == {"evaluator": "image_retrieval",
                                                    "evaluation_transform": single_modal_view}
    assert registry.kind_of(__import__("torch").nn.Module) == "backbone"


def test_repr_prints_one_line_per_kind_with_its_sorted_names():
    reg = Registry(kinds=("model", "runner"))
    reg.register_model("b")(type("B", (), {}))
    reg.register_model("a")(type("A", (), {}))
    assert repr(reg) == "model: a, b\nrunner: (none)"


def test_every_method_folder_registers_a_model():
    from pathlib import Path

    from main import register_all
    registry = register_all()
    root = Path(__file__).resolve().parents[2] / "models"
    folders = [p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()
               and p.name not in ("backbones", "__pycache__")]
    for folder in folders:
        modules = {registry.get("model", n).__module__.split(".")[1] for n in registry.list("model")}
        assert folder in modules, f"models/{folder} registers no model"
