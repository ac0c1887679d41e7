"""models.trained.load_trained, for every registered model: the model rebuilt from its checkpoint alone encodes
exactly as the runner's model does; a checkpoint without the data sizes its model is built with says so."""
import pytest
import torch

from common import schema
from dataset.tokenizers import text_inputs
from main import register_all
from models.trained import load_trained
from utils.checkpoint import save_atomic

REGISTRY = register_all()


@pytest.mark.parametrize("name", REGISTRY.list("model"))
def test_a_checkpoint_rebuilds_its_model(name, small_run, make_runner, tmp_path, one_thread):
    runner = make_runner(f"configs/{name}/synthetic.yaml", small_run(**{"dataset.num_samples": 150,
                                                                        "dataset.query_num": 30,
                                                                        "dataset.train_num": 60}), None)
    runner.model.before_training(runner.training_context())  # TwDH learns its short-code transforms here
    state = runner.state_dict()
    save_atomic(state, tmp_path / "best.pt")
    trained = load_trained(tmp_path / "best.pt", "cpu")
    runner.model.eval()
    query = runner.data.query
    batch = next(iter(runner._loader(query, train=False)))
    modalities = ("image", "text") if "text" in batch else ("image",)
    assert (trained.method, trained.bits, trained.modalities) == (name, runner.model.bits, modalities)
    rows = [int(row) for row in query.indices[:len(batch["index"])]]
    with torch.no_grad():  # images as files: the dataset's own evaluation transform is applied
        assert torch.equal(trained.encode_images([query.images[row] for row in rows]),
                           runner.model.binarize(runner.model.encode_image(batch["image"])))
        if "text" in modalities:
            assert torch.equal(trained.encode_texts([query.caption(row) for row in rows]),
                               runner.model.binarize(runner.model.encode_text(**text_inputs(batch))))
        else:
            with pytest.raises(ValueError, match="encodes images only"):
                trained.encode_texts(["a caption"])

    del state["model_context"]  # as in checkpoints written before it was recorded
    save_atomic(state, tmp_path / "old.pt")
    sizes = [key for key in ("num_classes", "num_train") if key in schema.fields(REGISTRY.get("model", name))]
    if sizes:
        with pytest.raises(ValueError, match=f"does not record {' and '.join(sizes)}, which {name} is built with"):
            load_trained(tmp_path / "old.pt", "cpu")
    else:
        assert load_trained(tmp_path / "old.pt", "cpu").method == name


def test_missing_checkpoint():
    with pytest.raises(FileNotFoundError, match="checkpoint 'nowhere/checkpoints/best.pt' not found"):
        load_trained("nowhere/checkpoints/best.pt")
